//! The media worker: leases jobs from the media service and makes their renditions with
//! ffmpeg, at a lower CPU priority and a bounded number of jobs at once, so it can be
//! scaled on its own and never takes the CPU checkout needs. It keeps nothing of its own:
//! it reads masters from and writes renditions to media's blob store (by digest), checks
//! every file with ffprobe, and reports to media, which records the job.

pub mod ffmpeg;
pub mod recipes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use comb_contracts::media::v1 as proto;
use comb_contracts::media::v1::media_client::MediaClient;
use comb_kit::ServiceConfig;
use comb_kit::client::Upstream;
use comb_kit::service::Service;
use comb_media::blobs::Blobs;
use tokio::sync::watch;

use crate::ffmpeg::{Scratch, ToolError, Tools};
use crate::recipes::Plan;

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs run at once.
    pub jobs: usize,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// The wait before asking again when no job is due.
    pub idle_poll: Duration,
    pub scratch: PathBuf,
    pub tools: Tools,
}

/// A worker instance, for `comb_kit::service::run`: no API of its own (only the kit's
/// probes and metrics), and its job slots as background tasks.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let mut settings = WorkerSettings {
        jobs: config.number("media_worker_jobs", 1..=16, "a number of jobs", 1)?,
        lease: config.millis("media_lease_ms", Duration::from_secs(20))?,
        idle_poll: config.millis("media_idle_poll_ms", Duration::from_millis(500))?,
        scratch: config.data_dir.join("work"),
        tools: Tools {
            ffmpeg: config.setting("ffmpeg").unwrap_or("ffmpeg").to_owned(),
            ffprobe: config.setting("ffprobe").unwrap_or("ffprobe").to_owned(),
            niceness: config.number("media_worker_niceness", 0..=19, "a niceness", 19)?,
            idle_class: config.flag("media_worker_idle_class", true)?,
            // 0: ffmpeg decides (x264 uses every core). On 2 cores one such worker already
            // takes both, and checkout's p99 suffered less than with one thread a worker
            // (scripts/media-bench); set 1 on a big machine to scale by workers.
            threads: config.number("media_worker_threads", 0..=64, "a number of threads", 0)?,
        },
    };
    let media = Arc::new(Upstream::from_config(&config, "media")?);
    let blobs = comb_media::blob_store(&config)?;
    let name = config.instance.clone();
    // The tools are checked once the instance serves, not before it is ready: starting
    // ffmpeg and ffprobe takes a tenth of a second or more, and nothing waits on them but
    // the job slots. Without ffmpeg the instance still runs (healthy, taking no job), so
    // the rest of the system does too, and jobs wait for a worker that has it.
    let slots = async move {
        if let Err(error) = settings.tools.check().await {
            tracing::error!(%error, "media jobs cannot run here; they wait for a worker that has ffmpeg");
            return;
        }
        let jobs = settings.jobs;
        let worker = Arc::new(Worker {
            name,
            media,
            blobs,
            settings,
        });
        // Dropped with this task when the instance stops, which stops every slot.
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..jobs {
            running.spawn(Arc::clone(&worker).work());
        }
        while running.join_next().await.is_some() {}
    };
    Ok(Service::new(Router::new()).task("job slots", slots))
}

/// What every job slot of an instance shares.
pub struct Worker {
    name: String,
    media: Arc<Upstream>,
    blobs: Blobs,
    settings: WorkerSettings,
}

/// How an attempt ended, when not with every file made.
enum Outcome {
    Failed {
        reason: String,
        retryable: bool,
    },
    /// The lease was lost (cancelled, or taken after it ran out): nothing to report.
    Abandoned,
}

impl From<ToolError> for Outcome {
    fn from(error: ToolError) -> Self {
        match error {
            ToolError::Stopped => Self::Abandoned,
            ToolError::Undecodable(reason) => Self::Failed {
                reason,
                retryable: false,
            },
            other => Self::Failed {
                reason: other.to_string(),
                retryable: true,
            },
        }
    }
}

impl Worker {
    /// One job slot: lease, work, report, for as long as the instance runs.
    async fn work(self: Arc<Self>) {
        loop {
            let leased = MediaClient::new(self.media.untraced_channel())
                .lease_job(proto::LeaseJobRequest {
                    worker: self.name.clone(),
                    lease_ms: self.settings.lease.as_millis() as u64,
                })
                .await;
            match leased.map(|answer| answer.into_inner().job) {
                Ok(Some(job)) => self.run(job).await,
                Ok(None) => tokio::time::sleep(self.settings.idle_poll).await,
                Err(status) => {
                    tracing::debug!(%status, "no job leased; media is unavailable");
                    tokio::time::sleep(self.settings.idle_poll * 4).await;
                }
            }
        }
    }

    async fn run(&self, job: proto::LeasedJob) {
        let started = std::time::Instant::now();
        let kind = job
            .kind()
            .as_str_name()
            .trim_start_matches("MEDIA_KIND_")
            .to_lowercase();
        tracing::info!(job = %job.id, asset = %job.asset_id, %kind, attempt = job.attempt, "job leased");
        let progress = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = watch::channel(false);
        let heartbeat = self.heartbeat(&job, &progress, stop);
        let attempt = self.attempt(&job, &progress, &stopped);
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = heartbeat => Err(Outcome::Abandoned),
        };
        let mut media = MediaClient::new(self.media.channel());
        let reported = match outcome {
            Ok(renditions) => media
                .complete_job(proto::CompleteJobRequest {
                    job_id: job.id.clone(),
                    lease: job.lease.clone(),
                    renditions,
                })
                .await
                .map(|_| "done"),
            Err(Outcome::Failed { reason, retryable }) => {
                tracing::warn!(job = %job.id, %reason, retryable, "job attempt failed");
                metrics::counter!("comb_media_worker_failures_total", "kind" => kind.clone(), "retryable" => retryable.to_string()).increment(1);
                media
                    .fail_job(proto::FailJobRequest {
                        job_id: job.id.clone(),
                        lease: job.lease.clone(),
                        reason,
                        retryable,
                    })
                    .await
                    .map(|_| "failed")
            }
            Err(Outcome::Abandoned) => Ok("abandoned"),
        };
        match reported {
            Ok(how) => {
                metrics::histogram!("comb_media_worker_job_seconds", "kind" => kind, "outcome" => how)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(job = %job.id, outcome = how, elapsed_ms = started.elapsed().as_millis() as u64, "job ended");
            }
            Err(status) => {
                tracing::warn!(job = %job.id, %status, "the job's end could not be reported; its lease runs out and it is done again")
            }
        }
    }

    /// Renews the lease until the lease is lost (then says stop, and ends).
    async fn heartbeat(
        &self,
        job: &proto::LeasedJob,
        progress: &AtomicU32,
        stop: watch::Sender<bool>,
    ) {
        let every = self.settings.lease / 3;
        let mut failures = 0;
        loop {
            tokio::time::sleep(every).await;
            let answer = MediaClient::new(self.media.untraced_channel())
                .heartbeat(proto::HeartbeatRequest {
                    job_id: job.id.clone(),
                    lease: job.lease.clone(),
                    percent: progress.load(Ordering::Relaxed) / 10,
                    lease_ms: self.settings.lease.as_millis() as u64,
                })
                .await;
            match answer {
                Ok(answer) if answer.get_ref().keep_going => failures = 0,
                Ok(_) => {
                    tracing::info!(job = %job.id, "the job's lease is lost (cancelled or taken); stopping it");
                    stop.send_replace(true);
                    return;
                }
                Err(status) => {
                    failures += 1;
                    // Keep working while the lease may still hold; give up once it cannot.
                    if every * failures >= self.settings.lease {
                        tracing::warn!(job = %job.id, %status, "media did not answer heartbeats for a whole lease; stopping the job");
                        stop.send_replace(true);
                        return;
                    }
                }
            }
        }
    }

    /// Makes and checks every file of a job and stores them.
    async fn attempt(
        &self,
        job: &proto::LeasedJob,
        progress: &Arc<AtomicU32>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<proto::Rendition>, Outcome> {
        let retry = |what: &str, error: &dyn std::fmt::Display| Outcome::Failed {
            reason: format!("{what}: {error}"),
            retryable: true,
        };
        let scratch = Scratch::create(
            &self.settings.scratch,
            &format!("{}-{}", job.id, job.attempt),
        )
        .await
        .map_err(|error| retry("no scratch directory", &error))?;
        let directory = scratch.0.clone();
        let master = directory.join("master");
        self.blobs
            .copy_to_file(&job.master_sha256, &master)
            .await
            .map_err(|error| retry("the master could not be read", &error))?;
        let tools = &self.settings.tools;
        let probe = tools.probe(&master).await?;
        let plan = match job.kind() {
            proto::MediaKind::Image => recipes::image("master", &probe),
            proto::MediaKind::Audio => recipes::audio("master", &probe),
            proto::MediaKind::Video => recipes::video("master", &probe),
            proto::MediaKind::Unspecified => Err("the job names no kind of media".to_owned()),
        }
        .map_err(|reason| Outcome::Failed {
            reason: format!("the file cannot be processed: {reason}"),
            retryable: false,
        })?;
        self.make(&plan, &directory, progress, stop).await?;
        self.keep(&plan, &directory).await
    }

    /// Runs a plan's steps, the job's progress spread over them by the media they write.
    async fn make(
        &self,
        plan: &Plan,
        directory: &Path,
        progress: &Arc<AtomicU32>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Outcome> {
        let total: f64 = plan
            .steps
            .iter()
            .map(|step| step.seconds)
            .sum::<f64>()
            .max(0.001);
        let mut before = 0.0;
        for step in &plan.steps {
            let this_step = Arc::new(AtomicU32::new(0));
            let run =
                self.settings
                    .tools
                    .ffmpeg(directory, &step.args, step.seconds, &this_step, stop);
            let share = step.seconds / total;
            let report = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let done = before + share * f64::from(this_step.load(Ordering::Relaxed));
                    progress.store(done as u32, Ordering::Relaxed);
                }
            };
            tokio::select! {
                ran = run => ran?,
                () = report => {}
            }
            before += share * 1000.0;
            progress.store(before as u32, Ordering::Relaxed);
        }
        for (name, text) in &plan.written {
            tokio::fs::write(directory.join(name), text)
                .await
                .map_err(|error| Outcome::Failed {
                    reason: format!("{name} could not be written: {error}"),
                    retryable: true,
                })?;
        }
        Ok(())
    }

    /// Checks each output with ffprobe and stores it (and the HLS segments) by digest.
    async fn keep(&self, plan: &Plan, directory: &Path) -> Result<Vec<proto::Rendition>, Outcome> {
        let store = |name: &str, error: &dyn std::fmt::Display| Outcome::Failed {
            reason: format!("{name} could not be stored: {error}"),
            retryable: true,
        };
        let mut renditions = Vec::new();
        for output in &plan.outputs {
            let path = directory.join(&output.name);
            let probe =
                self.settings
                    .tools
                    .probe(&path)
                    .await
                    .map_err(|error| Outcome::Failed {
                        reason: format!("the check of {} failed: {error}", output.name),
                        retryable: true,
                    })?;
            recipes::check(&output.name, &output.expect, &probe).map_err(|reason| {
                Outcome::Failed {
                    reason,
                    retryable: true,
                }
            })?;
            let stored = self
                .blobs
                .put_file(&path)
                .await
                .map_err(|error| store(&output.name, &error))?;
            let picture = probe.video();
            renditions.push(proto::Rendition {
                asset_id: String::new(),
                name: output.name.clone(),
                content_type: output.content_type.to_owned(),
                bytes: stored.bytes,
                sha256: stored.sha256,
                width: picture.and_then(|stream| stream.width).unwrap_or(0),
                height: picture.and_then(|stream| stream.height).unwrap_or(0),
                duration_ms: probe
                    .seconds()
                    .map_or(0, |seconds| (seconds * 1000.0).round() as u64),
                summary: probe.summary(),
                public: output.public,
            });
        }
        let mut extra = Vec::new();
        let mut entries = tokio::fs::read_dir(directory)
            .await
            .map_err(|error| store("the scratch directory", &error))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let segment = plan
                .segments_of
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()));
            let written = plan.written.iter().any(|(written, _)| *written == name);
            if segment || written {
                extra.push(name);
            }
        }
        extra.sort();
        for name in extra {
            let (content_type, public) = if name.ends_with(".ts") {
                ("video/mp2t", true)
            } else {
                ("application/vnd.apple.mpegurl", true)
            };
            let stored = self
                .blobs
                .put_file(&directory.join(&name))
                .await
                .map_err(|error| store(&name, &error))?;
            renditions.push(proto::Rendition {
                asset_id: String::new(),
                name,
                content_type: content_type.to_owned(),
                bytes: stored.bytes,
                sha256: stored.sha256,
                width: 0,
                height: 0,
                duration_ms: 0,
                summary: String::new(),
                public,
            });
        }
        Ok(renditions)
    }
}
