//! The supervisor: runs each instance as a child process, restarts it with exponential
//! backoff when it dies, probes its readiness, and on stop lets every instance drain.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use comb_kit::config::LauncherSettings;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::logs::LogSink;
use super::plan::{InstanceSpec, Plan};

/// How long a stopped instance may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// An instance that ran this long before crashing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// What the supervisor knows of an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Started, not yet ready.
    Starting,
    /// Answering `/readyz`.
    Ready,
    /// Running but not answering `/readyz` (overloaded, draining, stuck).
    Unready,
    /// Exited; waiting out the backoff before the next start.
    Restarting,
    /// Stopped by the launcher.
    Stopped,
}

/// One instance as `comb status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub service: String,
    pub instance: String,
    pub pid: Option<u32>,
    pub address: String,
    pub health: Health,
    pub restarts: u32,
    /// Seconds since the current process started.
    pub uptime_secs: Option<f64>,
    /// How the previous process ended, e.g. "killed by signal 9".
    pub last_exit: Option<String>,
}

#[derive(Debug)]
struct Runtime {
    pid: Option<u32>,
    health: Health,
    restarts: u32,
    started: Option<Instant>,
    last_exit: Option<String>,
}

#[derive(Debug)]
struct Entry {
    spec: InstanceSpec,
    runtime: Runtime,
}

/// Runs and watches the instances of a plan.
#[derive(Debug)]
pub struct Supervisor {
    exe: PathBuf,
    settings: LauncherSettings,
    entries: Mutex<BTreeMap<String, Entry>>,
    order: Vec<String>,
    stop: watch::Sender<bool>,
    logs: LogSink,
    http: reqwest::Client,
}

impl Supervisor {
    pub fn new(exe: PathBuf, plan: &Plan, settings: LauncherSettings, logs: LogSink) -> Arc<Self> {
        let entries = plan
            .instances
            .iter()
            .map(|spec| {
                let runtime = Runtime {
                    pid: None,
                    health: Health::Starting,
                    restarts: 0,
                    started: None,
                    last_exit: None,
                };
                (
                    spec.instance.clone(),
                    Entry {
                        spec: spec.clone(),
                        runtime,
                    },
                )
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Self {
            exe,
            settings,
            entries: Mutex::new(entries),
            order: plan
                .instances
                .iter()
                .map(|spec| spec.instance.clone())
                .collect(),
            stop: watch::channel(false).0,
            logs,
            http,
        })
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts every instance and the readiness prober; the returned set finishes when all
    /// instances have stopped after [`Supervisor::stop`].
    pub fn start(self: &Arc<Self>) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for name in &self.order {
            let supervisor = Arc::clone(self);
            let name = name.clone();
            tasks.spawn(async move { supervisor.supervise(&name).await });
        }
        let prober = Arc::clone(self);
        tokio::spawn(async move { prober.probe_readiness().await });
        tasks
    }

    /// Asks every instance to stop (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Every instance, in plan order.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let entries = self.entries();
        self.order
            .iter()
            .filter_map(|name| entries.get(name))
            .map(|entry| InstanceStatus {
                service: entry.spec.service.clone(),
                instance: entry.spec.instance.clone(),
                pid: entry.runtime.pid,
                address: entry.spec.addr.to_string(),
                health: entry.runtime.health,
                restarts: entry.runtime.restarts,
                uptime_secs: entry
                    .runtime
                    .started
                    .map(|started| started.elapsed().as_secs_f64()),
                last_exit: entry.runtime.last_exit.clone(),
            })
            .collect()
    }

    pub fn all_ready(&self) -> bool {
        self.entries()
            .values()
            .all(|entry| entry.runtime.health == Health::Ready)
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Runtime)) {
        if let Some(entry) = self.entries().get_mut(name) {
            change(&mut entry.runtime);
        }
    }

    async fn supervise(&self, name: &str) {
        let Some(spec) = self.entries().get(name).map(|entry| entry.spec.clone()) else {
            return;
        };
        let mut backoff = Backoff::new(
            Duration::from_millis(self.settings.restart_backoff_ms),
            Duration::from_millis(self.settings.restart_backoff_max_ms),
        );
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                break;
            }
            let started = Instant::now();
            let exit = match self.spawn(&spec) {
                Ok(mut child) => {
                    let pid = child.id();
                    self.update(name, |runtime| {
                        runtime.pid = pid;
                        runtime.health = Health::Starting;
                        runtime.started = Some(started);
                    });
                    tokio::select! {
                        status = child.wait() => describe_exit(status),
                        () = stopped(&mut stop) => {
                            self.terminate(name, &mut child).await;
                            self.update(name, |runtime| {
                                runtime.pid = None;
                                runtime.health = Health::Stopped;
                                runtime.started = None;
                            });
                            break;
                        }
                    }
                }
                Err(error) => format!("could not start: {error}"),
            };
            if *stop.borrow() {
                self.update(name, |runtime| {
                    runtime.pid = None;
                    runtime.health = Health::Stopped;
                    runtime.started = None;
                    runtime.last_exit = Some(exit);
                });
                break;
            }
            let wait = backoff.after_crash(started.elapsed());
            self.logs.launcher(format!(
                "{name} {exit}; restarting in {} ms",
                wait.as_millis()
            ));
            self.update(name, |runtime| {
                runtime.pid = None;
                runtime.health = Health::Restarting;
                runtime.started = None;
                runtime.restarts += 1;
                runtime.last_exit = Some(exit);
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut stop) => {
                    self.update(name, |runtime| runtime.health = Health::Stopped);
                    break;
                }
            }
        }
    }

    fn spawn(&self, spec: &InstanceSpec) -> std::io::Result<Child> {
        let mut command = Command::new(&self.exe);
        command
            .args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C reaches the launcher, which stops instances in order.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        if let Some(stdout) = child.stdout.take() {
            self.pump(&spec.instance, stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            self.pump(&spec.instance, stderr);
        }
        Ok(child)
    }

    fn pump(&self, instance: &str, stream: impl AsyncRead + Unpin + Send + 'static) {
        let logs = self.logs.clone();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        logs.instance(&instance, text).await;
                    }
                }
            }
        });
    }

    async fn terminate(&self, name: &str, child: &mut Child) {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                self.logs.launcher(format!(
                    "{name} did not stop within {} s; killing it",
                    STOP_GRACE.as_secs()
                ));
                let _ = child.kill().await;
            }
        }
    }

    /// Probes every running instance's `/readyz`: quickly until the system is ready, then
    /// once a second.
    async fn probe_readiness(&self) {
        let mut stop = self.stop.subscribe();
        loop {
            let targets: Vec<(String, String)> = self
                .entries()
                .values()
                .filter(|entry| entry.runtime.pid.is_some())
                .map(|entry| {
                    (
                        entry.spec.instance.clone(),
                        format!("{}/readyz", entry.spec.url()),
                    )
                })
                .collect();
            let probes = targets.into_iter().map(|(name, url)| {
                let http = self.http.clone();
                async move {
                    let ready = matches!(http.get(&url).send().await, Ok(response) if response.status().is_success());
                    (name, ready)
                }
            });
            for (name, ready) in futures_join_all(probes).await {
                self.update(&name, |runtime| {
                    if runtime.pid.is_none() {
                        return;
                    }
                    runtime.health = match (ready, runtime.health) {
                        (true, _) => Health::Ready,
                        (false, Health::Ready | Health::Unready) => Health::Unready,
                        (false, other) => other,
                    };
                });
            }
            let pause = if self.all_ready() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(25)
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }
}

/// The wait before each restart: doubling from `initial` up to `longest`, and back to
/// `initial` once an instance has run well for [`HEALTHY_RUN`].
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, longest: Duration) -> Self {
        Self {
            initial,
            longest: longest.max(initial),
            next: initial,
        }
    }

    /// The wait before restarting an instance that crashed after running for `ran`.
    fn after_crash(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_RUN {
            self.next = self.initial;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }
}

/// Resolves once a stop has been requested.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here, not held across the caller's awaits.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Runs futures concurrently and collects their outputs.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = JoinSet::new();
    for future in futures {
        set.spawn(future);
    }
    let mut outputs = Vec::new();
    while let Some(result) = set.join_next().await {
        if let Ok(output) = result {
            outputs.push(output);
        }
    }
    outputs
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "exited".to_owned(),
        },
        Err(error) => format!("could not be waited for: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let quick = Duration::from_millis(10);
        let waits: Vec<u128> = (0..6)
            .map(|_| backoff.after_crash(quick).as_millis())
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(backoff.after_crash(HEALTHY_RUN).as_millis(), 250);
        assert_eq!(backoff.after_crash(quick).as_millis(), 500);
    }

    #[test]
    fn a_cap_below_the_first_wait_is_raised_to_it() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.after_crash(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(backoff.after_crash(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn exits_are_described_for_people() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(Ok(ExitStatus::from_raw(9))),
            "was killed by signal 9"
        );
        assert_eq!(
            describe_exit(Ok(ExitStatus::from_raw(3 << 8))),
            "exited with code 3"
        );
    }
}
