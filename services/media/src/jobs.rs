//! Assets, renditions and jobs in media's database. A job is a durable row leased to one
//! worker at a time: a lease that is not renewed (its worker died) runs out and the next
//! worker to ask takes the job again; each rendition is recorded once; a failure is
//! retried with growing waits until the attempts run out, and an input that cannot be
//! processed fails at once with its reason.

use comb_contracts::events::{
    MEDIA_FAILED, MEDIA_READY, MEDIA_UPLOADED, MediaFailed, MediaReady, MediaRendition,
    MediaUploaded,
};
use comb_contracts::media::v1 as proto;
use comb_kit::events::{self as kit_events, Event};
use comb_kit::storage::sql::{self, DbError, Row};
use comb_kit::storage::{Backend, Database};

/// Attempts a job gets before it fails for good.
pub const MAX_ATTEMPTS: u32 = 3;

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Result<Self, JobError> {
        Ok(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(JobError::Corrupt(format!("unknown job state {other:?}"))),
        })
    }

    pub fn to_proto(self) -> proto::JobState {
        match self {
            Self::Queued => proto::JobState::Queued,
            Self::Running => proto::JobState::Running,
            Self::Done => proto::JobState::Done,
            Self::Failed => proto::JobState::Failed,
            Self::Cancelled => proto::JobState::Cancelled,
        }
    }

    pub fn from_proto(state: proto::JobState) -> Option<Self> {
        match state {
            proto::JobState::Unspecified => None,
            proto::JobState::Queued => Some(Self::Queued),
            proto::JobState::Running => Some(Self::Running),
            proto::JobState::Done => Some(Self::Done),
            proto::JobState::Failed => Some(Self::Failed),
            proto::JobState::Cancelled => Some(Self::Cancelled),
        }
    }
}

/// The kind of a master, and so of the job that processes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "image" => Some(Self::Image),
            "audio" => Some(Self::Audio),
            "video" => Some(Self::Video),
            _ => None,
        }
    }

    pub fn to_proto(self) -> proto::MediaKind {
        match self {
            Self::Image => proto::MediaKind::Image,
            Self::Audio => proto::MediaKind::Audio,
            Self::Video => proto::MediaKind::Video,
        }
    }
}

/// A master about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAsset {
    pub product_id: String,
    pub kind: MediaKind,
    pub origin: &'static str,
    pub file_name: String,
    pub master_sha256: String,
    pub master_type: String,
    pub master_bytes: u64,
}

/// Why a worker's report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("there is no job {0}")]
    NoSuchJob(String),
    #[error("the lease on job {0} is lost (it ran out, or the job was cancelled)")]
    LeaseLost(String),
    #[error("job {id} is {state} and cannot be {action}")]
    WrongState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("media's database holds {0}")]
    Corrupt(String),
    #[error("an event could not be written: {0}")]
    Event(String),
}

/// Media's database.
#[derive(Debug, Clone)]
pub struct MediaStore {
    db: Database,
}

const JOB_COLUMNS: &str = "j.id, j.asset_id, a.product_id, a.kind, j.state, j.percent, j.attempts, j.failure, \
     j.created_at_ms, j.updated_at_ms, j.started_at_ms, j.finished_at_ms";

fn event(
    kind: &'static str,
    subject: &str,
    data: &impl serde::Serialize,
) -> Result<Event, JobError> {
    Event::new("media", kind, subject, data).map_err(|error| JobError::Event(error.to_string()))
}

impl MediaStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Records an uploaded master and queues its job, announcing MediaUploaded.
    pub async fn add_upload(&self, asset: &NewAsset, now: i64) -> Result<proto::Job, JobError> {
        let mut tx = self.db.begin_write().await?;
        let asset_id = uuid::Uuid::now_v7().to_string();
        insert_asset(&mut tx, &asset_id, asset, now).await?;
        let job_id = uuid::Uuid::now_v7().to_string();
        sql::query(
            "INSERT INTO jobs (id, asset_id, state, run_after_ms, created_at_ms, updated_at_ms)
             VALUES ($1, $2, 'queued', $3, $3, $3)",
        )
        .bind(job_id.as_str())
        .bind(asset_id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let uploaded = event(
            MEDIA_UPLOADED,
            &asset_id,
            &MediaUploaded {
                asset_id: asset_id.clone(),
                product_id: asset.product_id.as_str().into(),
                kind: asset.kind.as_str().to_owned(),
                content_type: asset.master_type.clone(),
                bytes: asset.master_bytes,
                job_id: job_id.clone(),
            },
        )?;
        kit_events::publish(&self.db, &mut tx, &uploaded).await?;
        kit_events::commit(&self.db, tx).await?;
        self.job(&job_id).await
    }

    /// Records a master that needs no processing (a drawn cover, already in its final
    /// form) with its one rendition, and announces it ready. Returns the asset's id.
    pub async fn add_ready(
        &self,
        tx: &mut sql::Transaction,
        asset: &NewAsset,
        rendition: &proto::Rendition,
        now: i64,
    ) -> Result<String, JobError> {
        let asset_id = uuid::Uuid::now_v7().to_string();
        insert_asset(tx, &asset_id, asset, now).await?;
        let rendition = proto::Rendition {
            asset_id: asset_id.clone(),
            ..rendition.clone()
        };
        insert_rendition(tx, &rendition).await?;
        let ready = ready_event(&asset_id, &asset.product_id, asset.kind, &[rendition])?;
        kit_events::publish(&self.db, tx, &ready).await?;
        Ok(asset_id)
    }

    pub async fn job(&self, id: &str) -> Result<proto::Job, JobError> {
        let row = sql::query(format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN assets a ON a.id = j.asset_id WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| JobError::NoSuchJob(id.to_owned()))?;
        job_from(&row)
    }

    /// The newest jobs first, of one state or of every state.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<proto::Job>, JobError> {
        let limit = i64::from(limit.clamp(1, 500));
        let rows = match state {
            Some(state) => {
                sql::query(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs j JOIN assets a ON a.id = j.asset_id
                     WHERE j.state = $1 ORDER BY j.created_at_ms DESC, j.id DESC LIMIT $2"
                ))
                .bind(state.as_str())
                .bind(limit)
                .fetch_all(&self.db)
                .await?
            }
            None => {
                sql::query(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs j JOIN assets a ON a.id = j.asset_id
                     ORDER BY j.created_at_ms DESC, j.id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.db)
                .await?
            }
        };
        rows.iter().map(job_from).collect()
    }

    /// Jobs by state, and the bytes of every rendition kept.
    pub async fn stats(&self) -> Result<proto::QueueStatsResponse, JobError> {
        let rows = sql::query("SELECT state, COUNT(*) AS jobs FROM jobs GROUP BY state")
            .fetch_all(&self.db)
            .await?;
        let mut stats = proto::QueueStatsResponse::default();
        for row in rows {
            let count: u64 = row.try_get("jobs")?;
            match JobState::parse(&row.try_get::<String, _>("state")?)? {
                JobState::Queued => stats.queued = count,
                JobState::Running => stats.running = count,
                JobState::Done => stats.done = count,
                JobState::Failed => stats.failed = count,
                JobState::Cancelled => stats.cancelled = count,
            }
        }
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        let sum = |table: &str, column: &str| {
            format!("SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM {table}")
        };
        let renditions: i64 = sql::query_scalar(sum("renditions", "bytes"))
            .fetch_one(&self.db)
            .await?;
        let masters: i64 = sql::query_scalar(sum("assets", "master_bytes"))
            .fetch_one(&self.db)
            .await?;
        stats.bytes_stored = u64::try_from(renditions + masters).unwrap_or(0);
        Ok(stats)
    }

    /// Leases the next due job to `worker` until `now + lease_ms`: a queued job whose wait
    /// is over, or a running one whose lease ran out (its worker is gone). A job whose
    /// workers keep disappearing fails for good after its attempts.
    pub async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<proto::LeasedJob>, JobError> {
        let skip_locked = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.db.begin_write().await?;
        loop {
            let Some(row) = sql::query(format!(
                "SELECT j.id, j.asset_id, j.attempts, j.state, a.product_id, a.kind, a.master_sha256, a.master_type
                 FROM jobs j JOIN assets a ON a.id = j.asset_id
                 WHERE (j.state = 'queued' AND j.run_after_ms <= $1)
                    OR (j.state = 'running' AND j.lease_until_ms < $1)
                 ORDER BY j.run_after_ms, j.id LIMIT 1{skip_locked}"
            ))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            else {
                tx.commit().await?;
                return Ok(None);
            };
            let id: String = row.try_get("id")?;
            let attempts: u32 = row.try_get("attempts")?;
            let abandoned = row.try_get::<String, _>("state")? == "running";
            if abandoned && attempts >= MAX_ATTEMPTS {
                let reason = format!("its worker stopped answering {attempts} times");
                self.fail_for_good(&mut tx, &id, &reason, now).await?;
                continue;
            }
            if abandoned {
                tracing::warn!(job = %id, attempts, "a job's lease ran out; another worker takes it");
                metrics::counter!("comb_media_leases_lost_total").increment(1);
            }
            let lease = uuid::Uuid::new_v4().to_string();
            sql::query(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease = $2, worker = $3,
                 lease_until_ms = $4, percent = 0, updated_at_ms = $5,
                 started_at_ms = COALESCE(started_at_ms, $5) WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(lease.as_str())
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            kit_events::commit(&self.db, tx).await?;
            let kind = MediaKind::parse(&row.try_get::<String, _>("kind")?)
                .ok_or_else(|| JobError::Corrupt("unknown media kind".into()))?;
            return Ok(Some(proto::LeasedJob {
                id,
                asset_id: row.try_get("asset_id")?,
                product_id: row.try_get("product_id")?,
                kind: kind.to_proto().into(),
                master_sha256: row.try_get("master_sha256")?,
                master_type: row.try_get("master_type")?,
                attempt: attempts + 1,
                lease,
            }));
        }
    }

    /// Renews a lease and records progress; false once the lease is lost.
    pub async fn heartbeat(
        &self,
        job: &str,
        lease: &str,
        percent: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<bool, JobError> {
        let renewed = sql::query(
            "UPDATE jobs SET lease_until_ms = $3, percent = $4, updated_at_ms = $5
             WHERE id = $1 AND lease = $2 AND state = 'running'",
        )
        .bind(job)
        .bind(lease)
        .bind(now + lease_ms)
        .bind(percent.min(99))
        .bind(now)
        .execute(&self.db)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Records a job's renditions and marks it done, announcing MediaReady. A rendition
    /// already recorded (by an earlier attempt) is kept as it was.
    pub async fn complete(
        &self,
        job: &str,
        lease: &str,
        renditions: &[proto::Rendition],
        now: i64,
    ) -> Result<proto::Job, JobError> {
        let mut tx = self.db.begin_write().await?;
        let (asset_id, product_id, kind) = self.held(&mut tx, job, lease).await?;
        for rendition in renditions {
            let rendition = proto::Rendition {
                asset_id: asset_id.clone(),
                ..rendition.clone()
            };
            insert_rendition(&mut tx, &rendition).await?;
        }
        sql::query(
            "UPDATE jobs SET state = 'done', percent = 100, lease = NULL, lease_until_ms = NULL,
             failure = '', updated_at_ms = $2, finished_at_ms = $2 WHERE id = $1",
        )
        .bind(job)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let recorded = self.renditions_in(&mut tx, &asset_id).await?;
        let ready = ready_event(&asset_id, &product_id, kind, &recorded)?;
        kit_events::publish(&self.db, &mut tx, &ready).await?;
        kit_events::commit(&self.db, tx).await?;
        self.job(job).await
    }

    /// Records why a job's attempt failed: queued again after a growing wait while it has
    /// attempts left and the failure may pass, failed for good otherwise.
    pub async fn fail(
        &self,
        job: &str,
        lease: &str,
        reason: &str,
        retryable: bool,
        backoff_ms: i64,
        now: i64,
    ) -> Result<proto::Job, JobError> {
        let mut tx = self.db.begin_write().await?;
        self.held(&mut tx, job, lease).await?;
        let attempts: u32 = sql::query_scalar("SELECT attempts FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&mut *tx)
            .await?;
        let reason = reason.chars().take(2_000).collect::<String>();
        if retryable && attempts < MAX_ATTEMPTS {
            let wait = backoff_ms.saturating_mul(1 << attempts.min(10));
            sql::query(
                "UPDATE jobs SET state = 'queued', lease = NULL, lease_until_ms = NULL, failure = $2,
                 run_after_ms = $3, updated_at_ms = $4 WHERE id = $1",
            )
            .bind(job)
            .bind(reason.as_str())
            .bind(now + wait)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        } else {
            self.fail_for_good(&mut tx, job, &reason, now).await?;
        }
        kit_events::commit(&self.db, tx).await?;
        self.job(job).await
    }

    /// Queues a failed or cancelled job again with its attempts reset.
    pub async fn retry(&self, job: &str, now: i64) -> Result<proto::Job, JobError> {
        let current = self.job(job).await?;
        let state = state_of(&current);
        if !matches!(state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::WrongState {
                id: job.to_owned(),
                state: state.as_str(),
                action: "retried (only a failed or cancelled job can be)",
            });
        }
        sql::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, percent = 0, run_after_ms = $2,
             updated_at_ms = $2, finished_at_ms = NULL WHERE id = $1 AND state IN ('failed', 'cancelled')",
        )
        .bind(job)
        .bind(now)
        .execute(&self.db)
        .await?;
        self.db.changed();
        self.job(job).await
    }

    /// Cancels a queued or running job (its worker's next heartbeat learns it).
    pub async fn cancel(&self, job: &str, now: i64) -> Result<proto::Job, JobError> {
        let current = self.job(job).await?;
        let state = state_of(&current);
        if state == JobState::Cancelled {
            return Ok(current);
        }
        if !matches!(state, JobState::Queued | JobState::Running) {
            return Err(JobError::WrongState {
                id: job.to_owned(),
                state: state.as_str(),
                action: "cancelled (only a queued or running job can be)",
            });
        }
        sql::query(
            "UPDATE jobs SET state = 'cancelled', lease = NULL, lease_until_ms = NULL,
             updated_at_ms = $2, finished_at_ms = $2 WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(job)
        .bind(now)
        .execute(&self.db)
        .await?;
        self.db.changed();
        self.job(job).await
    }

    /// One rendition of an asset.
    pub async fn rendition(
        &self,
        asset: &str,
        name: &str,
    ) -> Result<Option<proto::Rendition>, JobError> {
        let row = sql::query(format!(
            "SELECT {RENDITION_COLUMNS} FROM renditions WHERE asset_id = $1 AND name = $2"
        ))
        .bind(asset)
        .bind(name)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.as_ref().map(rendition_from).transpose()?)
    }

    /// The product an asset belongs to.
    pub async fn product_of(&self, asset: &str) -> Result<String, JobError> {
        sql::query_scalar("SELECT product_id FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_optional(&self.db)
            .await?
            .ok_or_else(|| {
                JobError::Corrupt(format!(
                    "a rendition of asset {asset}, which is not recorded"
                ))
            })
    }

    /// Whether a product has a cover someone uploaded (then no cover is drawn for it).
    pub async fn has_uploaded_image(
        &self,
        tx: &mut sql::Transaction,
        product_id: &str,
    ) -> Result<bool, JobError> {
        let found: Option<String> = sql::query_scalar(
            "SELECT id FROM assets WHERE product_id = $1 AND kind = 'image' AND origin = 'upload' LIMIT 1",
        )
        .bind(product_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(found.is_some())
    }

    async fn renditions_in(
        &self,
        tx: &mut sql::Transaction,
        asset: &str,
    ) -> Result<Vec<proto::Rendition>, JobError> {
        let rows = sql::query(format!(
            "SELECT {RENDITION_COLUMNS} FROM renditions WHERE asset_id = $1 ORDER BY name"
        ))
        .bind(asset)
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.iter().map(rendition_from).collect::<Result<_, _>>()?)
    }

    /// The asset, product and kind of a job `lease` still holds.
    async fn held(
        &self,
        tx: &mut sql::Transaction,
        job: &str,
        lease: &str,
    ) -> Result<(String, String, MediaKind), JobError> {
        let row = sql::query(format!(
            "SELECT j.asset_id, j.lease, j.state, a.product_id, a.kind
             FROM jobs j JOIN assets a ON a.id = j.asset_id WHERE j.id = $1{}",
            self.db.lock_rows().replace("FOR UPDATE", "FOR UPDATE OF j")
        ))
        .bind(job)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| JobError::NoSuchJob(job.to_owned()))?;
        let held_by: Option<String> = row.try_get("lease")?;
        if row.try_get::<String, _>("state")? != "running" || held_by.as_deref() != Some(lease) {
            return Err(JobError::LeaseLost(job.to_owned()));
        }
        let kind = MediaKind::parse(&row.try_get::<String, _>("kind")?)
            .ok_or_else(|| JobError::Corrupt("unknown media kind".into()))?;
        Ok((row.try_get("asset_id")?, row.try_get("product_id")?, kind))
    }

    async fn fail_for_good(
        &self,
        tx: &mut sql::Transaction,
        job: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), JobError> {
        let row = sql::query(
            "SELECT j.asset_id, a.product_id, a.kind FROM jobs j JOIN assets a ON a.id = j.asset_id WHERE j.id = $1",
        )
        .bind(job)
        .fetch_one(&mut **tx)
        .await?;
        sql::query(
            "UPDATE jobs SET state = 'failed', lease = NULL, lease_until_ms = NULL, failure = $2,
             updated_at_ms = $3, finished_at_ms = $3 WHERE id = $1",
        )
        .bind(job)
        .bind(reason)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let asset_id: String = row.try_get("asset_id")?;
        let failed = event(
            MEDIA_FAILED,
            &asset_id,
            &MediaFailed {
                asset_id: asset_id.clone(),
                product_id: row.try_get::<String, _>("product_id")?.as_str().into(),
                kind: row.try_get("kind")?,
                job_id: job.to_owned(),
                reason: reason.to_owned(),
            },
        )?;
        kit_events::publish(&self.db, tx, &failed).await?;
        metrics::counter!("comb_media_failures_total", "reason" => failure_class(reason))
            .increment(1);
        tracing::warn!(job, reason, "a media job failed for good");
        Ok(())
    }
}

/// A coarse class of a failure reason, for a metric label of few values.
pub fn failure_class(reason: &str) -> &'static str {
    if reason.contains("cannot be decoded") || reason.contains("Invalid data") {
        "undecodable"
    } else if reason.contains("stopped answering") {
        "worker_lost"
    } else if reason.contains("check") {
        "check_failed"
    } else {
        "other"
    }
}

fn state_of(job: &proto::Job) -> JobState {
    JobState::from_proto(job.state()).unwrap_or(JobState::Queued)
}

async fn insert_asset(
    tx: &mut sql::Transaction,
    id: &str,
    asset: &NewAsset,
    now: i64,
) -> Result<(), DbError> {
    sql::query(
        "INSERT INTO assets (id, product_id, kind, origin, file_name, master_sha256, master_type, master_bytes, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(asset.product_id.as_str())
    .bind(asset.kind.as_str())
    .bind(asset.origin)
    .bind(asset.file_name.as_str())
    .bind(asset.master_sha256.as_str())
    .bind(asset.master_type.as_str())
    .bind(i64::try_from(asset.master_bytes).unwrap_or(i64::MAX))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_rendition(
    tx: &mut sql::Transaction,
    rendition: &proto::Rendition,
) -> Result<(), DbError> {
    sql::query(
        "INSERT INTO renditions (asset_id, name, sha256, bytes, content_type, width, height, duration_ms, public, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (asset_id, name) DO NOTHING",
    )
    .bind(rendition.asset_id.as_str())
    .bind(rendition.name.as_str())
    .bind(rendition.sha256.as_str())
    .bind(i64::try_from(rendition.bytes).unwrap_or(i64::MAX))
    .bind(rendition.content_type.as_str())
    .bind(rendition.width)
    .bind(rendition.height)
    .bind(i64::try_from(rendition.duration_ms).unwrap_or(i64::MAX))
    .bind(rendition.public)
    .bind(rendition.summary.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const RENDITION_COLUMNS: &str =
    "asset_id, name, sha256, bytes, content_type, width, height, duration_ms, public, summary";

fn rendition_from(row: &Row) -> Result<proto::Rendition, DbError> {
    Ok(proto::Rendition {
        asset_id: row.try_get("asset_id")?,
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        duration_ms: row.try_get("duration_ms")?,
        summary: row.try_get("summary")?,
        public: row.try_get("public")?,
    })
}

fn ready_event(
    asset_id: &str,
    product_id: &str,
    kind: MediaKind,
    renditions: &[proto::Rendition],
) -> Result<Event, JobError> {
    event(
        MEDIA_READY,
        asset_id,
        &MediaReady {
            asset_id: asset_id.to_owned(),
            product_id: product_id.into(),
            kind: kind.as_str().to_owned(),
            renditions: renditions
                .iter()
                .map(|rendition| MediaRendition {
                    name: rendition.name.clone(),
                    content_type: rendition.content_type.clone(),
                    bytes: rendition.bytes,
                    width: rendition.width,
                    height: rendition.height,
                    duration_ms: rendition.duration_ms,
                    public: rendition.public,
                })
                .collect(),
        },
    )
}

fn job_from(row: &Row) -> Result<proto::Job, JobError> {
    let state = JobState::parse(&row.try_get::<String, _>("state")?)?;
    let kind = MediaKind::parse(&row.try_get::<String, _>("kind")?)
        .ok_or_else(|| JobError::Corrupt("unknown media kind".into()))?;
    let started: Option<i64> = row.try_get("started_at_ms")?;
    let finished: Option<i64> = row.try_get("finished_at_ms")?;
    let duration_ms = match (state, started, finished) {
        (JobState::Done, Some(started), Some(finished)) => {
            u64::try_from(finished - started).unwrap_or(0)
        }
        _ => 0,
    };
    Ok(proto::Job {
        id: row.try_get("id")?,
        asset_id: row.try_get("asset_id")?,
        product_id: row.try_get("product_id")?,
        kind: kind.to_proto().into(),
        state: state.to_proto().into(),
        percent: row.try_get("percent")?,
        attempts: row.try_get("attempts")?,
        failure: row.try_get("failure")?,
        created_at: comb_kit::clock::rfc3339_from_ms(row.try_get("created_at_ms")?),
        updated_at: comb_kit::clock::rfc3339_from_ms(row.try_get("updated_at_ms")?),
        duration_ms,
    })
}
