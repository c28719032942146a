//! The supervisor: runs each instance as a child process, restarts it with exponential
//! backoff when it dies, probes its readiness, and on stop lets every instance drain.
//!
//! Longer than most files: starting, restarting, scaling, probing and publishing
//! discovery all change one table of instances under one lock, and reading them together
//! is how their interplay is checked.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::topology::LauncherSettings;
use comb_kit::discovery::Snapshot;
use comb_kit::server::BoundAddresses;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::logs::LogSink;
use super::plan::{self, GATEWAY, InstanceSpec, Layout, Plan};

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
    /// Being removed by a scale-down: no new calls, draining, then stopped.
    Draining,
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
    /// The admin listener (`/metrics`, fault control); empty from a launcher before it.
    #[serde(default)]
    pub admin_address: String,
    pub health: Health,
    pub restarts: u32,
    /// Seconds since the current process started.
    pub uptime_secs: Option<f64>,
    /// How the previous process ended, e.g. "killed by signal 9".
    pub last_exit: Option<String>,
    /// CPU time (user + system) the current process has used, in seconds.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug)]
struct Runtime {
    pid: Option<u32>,
    health: Health,
    restarts: u32,
    started: Option<Instant>,
    last_exit: Option<String>,
    /// The current process has reported the addresses it bound.
    reported: bool,
}

impl Runtime {
    fn new() -> Self {
        Self {
            pid: None,
            health: Health::Starting,
            restarts: 0,
            started: None,
            last_exit: None,
            reported: false,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// What the instance is started with; its addresses are the ones it last reported,
    /// given again on a restart so that it keeps them.
    spec: InstanceSpec,
    /// The addresses the plan gave (port 0: any), used again when a start fails before
    /// the instance reported, in case the port it had was taken meanwhile.
    planned: (std::net::SocketAddr, std::net::SocketAddr),
    runtime: Runtime,
    /// Set to stop this instance alone (a scale-down).
    retire: watch::Sender<bool>,
}

/// How long a removed instance stays out of discovery before it is asked to stop, so its
/// callers have moved on (they refresh twice a second).
const LEAVE_DISCOVERY: Duration = Duration::from_millis(1_500);

/// Runs and watches the instances of a plan.
#[derive(Debug)]
pub struct Supervisor {
    exe: PathBuf,
    layout: Layout,
    settings: LauncherSettings,
    entries: Mutex<BTreeMap<String, Entry>>,
    order: Mutex<Vec<String>>,
    /// Supervision of instances added by scaling up.
    added: Mutex<JoinSet<()>>,
    /// The first instance of each service: what new instances are made like, even after
    /// a service was scaled to nothing.
    templates: BTreeMap<String, InstanceSpec>,
    stop: watch::Sender<bool>,
    logs: LogSink,
    http: reqwest::Client,
    /// The ready instances of every service, republished whenever they change.
    discovery: watch::Sender<Arc<Snapshot>>,
}

impl Entry {
    fn new(spec: InstanceSpec) -> Self {
        Self {
            planned: (spec.addr, spec.admin_addr),
            spec,
            runtime: Runtime::new(),
            retire: watch::channel(false).0,
        }
    }
}

impl Supervisor {
    pub fn new(
        exe: PathBuf,
        layout: Layout,
        plan: &Plan,
        settings: LauncherSettings,
        logs: LogSink,
    ) -> Arc<Self> {
        let entries = plan
            .instances
            .iter()
            .map(|spec| (spec.instance.clone(), Entry::new(spec.clone())))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Self {
            exe,
            layout,
            settings,
            entries: Mutex::new(entries),
            order: Mutex::new(
                plan.instances
                    .iter()
                    .map(|spec| spec.instance.clone())
                    .collect(),
            ),
            added: Mutex::new(JoinSet::new()),
            templates: plan
                .instances
                .iter()
                .rev()
                .map(|spec| (spec.service.clone(), spec.clone()))
                .collect(),
            stop: watch::channel(false).0,
            discovery: watch::channel(Arc::new(Snapshot::default())).0,
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
        let names = lock(&self.order).clone();
        for name in &names {
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

    /// Becomes true when the system is told to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Every instance, in plan order.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let order = lock(&self.order).clone();
        let entries = self.entries();
        order
            .iter()
            .filter_map(|name| entries.get(name))
            .map(|entry| InstanceStatus {
                service: entry.spec.service.clone(),
                instance: entry.spec.instance.clone(),
                pid: entry.runtime.pid,
                address: entry.spec.addr.to_string(),
                admin_address: entry.spec.admin_addr.to_string(),
                health: entry.runtime.health,
                restarts: entry.runtime.restarts,
                uptime_secs: entry
                    .runtime
                    .started
                    .map(|started| started.elapsed().as_secs_f64()),
                last_exit: entry.runtime.last_exit.clone(),
                cpu_seconds: entry.runtime.pid.and_then(crate::cpu::process_cpu_seconds),
            })
            .collect()
    }

    /// The addresses of `service`'s ready instances, for its callers.
    pub fn discover(&self, service: &str) -> Vec<String> {
        self.entries()
            .values()
            .filter(|entry| entry.spec.service == service && entry.runtime.health == Health::Ready)
            .map(|entry| entry.spec.url())
            .collect()
    }

    /// The spec of every instance that is not on its way out, in plan order (for the
    /// discovery file).
    pub fn specs(&self) -> Vec<InstanceSpec> {
        let order = lock(&self.order).clone();
        let entries = self.entries();
        order
            .iter()
            .filter_map(|name| entries.get(name))
            .filter(|entry| entry.runtime.health != Health::Draining)
            .map(|entry| entry.spec.clone())
            .collect()
    }

    /// Runs `service` with `replicas` instances: new ones start (and get calls once
    /// ready, through discovery); removed ones, the newest first, leave discovery, drain
    /// and stop. Returns the names of the instances added and removed.
    pub fn scale(
        self: &Arc<Self>,
        service: &str,
        replicas: u32,
        make: impl Fn(&InstanceSpec, u32) -> InstanceSpec,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        if self.is_stopping() {
            anyhow::bail!("comb is stopping");
        }
        let mut order = lock(&self.order);
        let mut entries = self.entries();
        let mut current: Vec<(u32, String)> = entries
            .values()
            .filter(|entry| {
                entry.spec.service == service && entry.runtime.health != Health::Draining
            })
            .filter_map(|entry| {
                index_of(&entry.spec.instance).map(|index| (index, entry.spec.instance.clone()))
            })
            .collect();
        current.sort();
        let Some(template) = self.templates.get(service).cloned() else {
            anyhow::bail!("the topology has no service {service:?}");
        };
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let wanted = replicas as usize;
        if wanted > current.len() {
            let mut next = entries
                .values()
                .filter(|entry| entry.spec.service == service)
                .filter_map(|entry| index_of(&entry.spec.instance))
                .max()
                .unwrap_or(0);
            for _ in current.len()..wanted {
                next += 1;
                let spec = make(&template, next);
                let name = spec.instance.clone();
                entries.insert(name.clone(), Entry::new(spec));
                order.push(name.clone());
                let supervisor = Arc::clone(self);
                let supervised = name.clone();
                lock(&self.added).spawn(async move { supervisor.supervise(&supervised).await });
                added.push(name);
            }
        } else {
            for (_, name) in current.iter().rev().take(current.len() - wanted) {
                if let Some(entry) = entries.get_mut(name) {
                    entry.runtime.health = Health::Draining;
                    let retire = entry.retire.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(LEAVE_DISCOVERY).await;
                        retire.send_replace(true);
                    });
                    removed.push(name.clone());
                }
            }
        }
        drop(entries);
        drop(order);
        self.publish_discovery();
        Ok((added, removed))
    }

    /// Waits for the instances added by scaling to stop (after [`Supervisor::stop`]).
    pub async fn join_added(&self) {
        let mut added = std::mem::take(&mut *lock(&self.added));
        while added.join_next().await.is_some() {}
    }

    pub fn all_ready(&self) -> bool {
        self.entries()
            .values()
            .all(|entry| matches!(entry.runtime.health, Health::Ready | Health::Draining))
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Runtime)) {
        if let Some(entry) = self.entries().get_mut(name) {
            change(&mut entry.runtime);
        }
        self.publish_discovery();
    }

    /// The ready instances of every service, as callers discover them.
    pub fn discovery(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.discovery.subscribe()
    }

    /// Republishes what callers discover, with a new version, if it changed.
    fn publish_discovery(&self) {
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in self.entries().values() {
            if entry.runtime.health == Health::Ready {
                services
                    .entry(entry.spec.service.clone())
                    .or_default()
                    .push(entry.spec.url());
            }
        }
        self.discovery.send_if_modified(|current| {
            if current.services == services {
                return false;
            }
            *current = Arc::new(Snapshot {
                version: current.version + 1,
                services,
            });
            true
        });
    }

    async fn supervise(&self, name: &str) {
        let Some(retire) = self
            .entries()
            .get(name)
            .map(|entry| entry.retire.subscribe())
        else {
            return;
        };
        let mut retire = retire;
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
            let Some(spec) = self.entries().get(name).map(|entry| entry.spec.clone()) else {
                return;
            };
            let exit = match self.spawn(&spec) {
                Ok(mut child) => {
                    let pid = child.id();
                    self.update(name, |runtime| {
                        runtime.pid = pid;
                        runtime.health = Health::Starting;
                        runtime.started = Some(started);
                        runtime.reported = false;
                    });
                    tokio::select! {
                        status = child.wait() => describe_exit(status),
                        () = stopped_either(&mut stop, &mut retire) => {
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
            // An instance being scaled away that dies is not brought back.
            let draining = self
                .entries()
                .get(name)
                .is_some_and(|entry| entry.runtime.health == Health::Draining);
            if *stop.borrow() || *retire.borrow() || draining {
                if draining && let Some(entry) = self.entries().get(name) {
                    entry.retire.send_replace(true);
                }
                self.update(name, |runtime| {
                    runtime.pid = None;
                    runtime.health = Health::Stopped;
                    runtime.started = None;
                    runtime.last_exit = Some(exit);
                });
                break;
            }
            self.forget_unreported_addresses(name);
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
                () = stopped_either(&mut stop, &mut retire) => {
                    self.update(name, |runtime| runtime.health = Health::Stopped);
                    break;
                }
            }
        }
        if *retire.borrow() && !*stop.borrow() {
            self.entries().remove(name);
            lock(&self.order).retain(|kept| kept != name);
            self.publish_discovery();
            self.logs.launcher(format!("{name} removed"));
        }
    }

    /// After a process that ended before reporting its addresses (perhaps because the
    /// port it was given again had been taken), the next one is given the plan's.
    fn forget_unreported_addresses(&self, name: &str) {
        if let Some(entry) = self.entries().get_mut(name)
            && !entry.runtime.reported
        {
            let (addr, admin_addr) = entry.planned;
            entry.spec = plan::addressed(entry.spec.clone(), addr, admin_addr);
        }
    }

    /// Learns the addresses that starting instances bound, from the files they write.
    fn read_reported_addresses(&self) {
        let mut learnt = false;
        for entry in self.entries().values_mut() {
            if entry.runtime.pid.is_none() || entry.runtime.reported {
                continue;
            }
            if let Some(bound) = BoundAddresses::read(&entry.spec.address_file) {
                entry.spec = plan::addressed(entry.spec.clone(), bound.listen, bound.admin);
                entry.runtime.reported = true;
                learnt = true;
            }
        }
        if learnt && let Err(error) = super::write_prometheus_targets(&self.layout, &self.specs()) {
            self.logs.launcher(format!(
                "the Prometheus discovery file could not be rewritten: {error:#}"
            ));
        }
    }

    /// The public URL of the API, once the first gateway instance's address is known.
    pub fn gateway_url(&self) -> Option<String> {
        let order = lock(&self.order).clone();
        let entries = self.entries();
        order
            .iter()
            .filter_map(|name| entries.get(name))
            .find(|entry| entry.spec.service == GATEWAY && entry.spec.is_addressed())
            .map(|entry| entry.spec.url())
    }

    fn spawn(&self, spec: &InstanceSpec) -> std::io::Result<Child> {
        // A file left by an earlier process must not pass for this one's report.
        match std::fs::remove_file(&spec.address_file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        if let Some(dir) = spec.address_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut command = Command::new(&self.exe);
        command
            .args(&spec.args)
            // The shared dashboard's token is the launcher's alone.
            .env_remove("COMB_DASHBOARD_TOKEN")
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
            self.read_reported_addresses();
            let targets: Vec<(String, String)> = self
                .entries()
                .values()
                .filter(|entry| entry.runtime.pid.is_some() && entry.runtime.reported)
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
                        (_, Health::Draining) => Health::Draining,
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

/// Resolves once either stop has been requested: everything's, or this instance's.
async fn stopped_either(all: &mut watch::Receiver<bool>, this: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = stopped(all) => {}
        () = stopped(this) => {}
    }
}

/// N of an instance named `SERVICE-N`.
fn index_of(instance: &str) -> Option<u32> {
    instance
        .rsplit_once('-')
        .and_then(|(_, index)| index.parse().ok())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
mod tests;
