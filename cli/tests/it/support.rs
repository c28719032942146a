//! What the system suites share: a system started by the real `comb` binary, and polling.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The backends a suite runs the system on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite files and each producer's own event feed: what `comb up` uses by default.
    Embedded,
    /// A database and role per service on PostgreSQL, and events through NATS JetStream.
    ScaleOut,
}

/// The PostgreSQL account the scale-out suite provisions databases with.
pub fn postgres_admin_url() -> String {
    std::env::var("COMB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("COMB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Whether PostgreSQL and NATS answer; under CI=true they must, elsewhere a test may skip.
pub fn scale_out_backends_reachable() -> bool {
    let reachable = |url: &str, default_port: u16| {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let host = rest.split(['/', '?']).next().unwrap_or(rest);
        let address = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:{default_port}")
        };
        std::net::ToSocketAddrs::to_socket_addrs(&address)
            .ok()
            .and_then(|mut addresses| addresses.next())
            .is_some_and(|address| {
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
            })
    };
    let (postgres, nats) = (postgres_admin_url(), nats_url());
    if reachable(&postgres, 5432) && reachable(&nats, 4222) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "PostgreSQL ({postgres}) and NATS ({nats}) are required on CI"
    );
    eprintln!(
        "skipping a scale-out system test: PostgreSQL ({postgres}) or NATS ({nats}) is not reachable; set COMB_TEST_POSTGRES_URL / COMB_TEST_NATS_URL"
    );
    false
}

/// The repository's topology, the one the README's run command uses.
pub fn repo_topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../comb.toml")
}

/// A system started with `comb up --detach`, stopped with `comb down` when dropped.
pub struct Comb {
    pub dir: TempDir,
    pub http: reqwest::Client,
    /// With PostgreSQL and NATS: what this system's database, role and stream names begin
    /// with, unique to it so systems never share data.
    pub prefix: Option<String>,
    /// Held while a scale-out system runs.
    pub slot: Option<ScaleOutSlot>,
}

/// The right to run a scale-out system in this test process; given back when dropped.
#[derive(Debug)]
pub struct ScaleOutSlot(());

static SCALE_OUT_BUSY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static SCALE_OUT_FREED: std::sync::Condvar = std::sync::Condvar::new();

impl ScaleOutSlot {
    /// Waits until no other scale-out system of this process runs.
    pub fn take() -> Self {
        let mut busy = SCALE_OUT_BUSY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *busy {
            busy = SCALE_OUT_FREED
                .wait(busy)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *busy = true;
        Self(())
    }
}

impl Drop for ScaleOutSlot {
    fn drop(&mut self) {
        *SCALE_OUT_BUSY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        SCALE_OUT_FREED.notify_one();
    }
}

impl Comb {
    /// Starts the system described by `topology` on a free gateway port.
    pub fn up(topology: &Path) -> Self {
        Self::up_with_env(topology, &[])
    }

    /// Starts the system on the suite's backends ([`crate::BACKENDS`]); `None` when they
    /// are not there to use (never under CI=true).
    pub fn system(topology: &Path) -> Option<Self> {
        Self::system_with_env(topology, &[])
    }

    /// The same, with these variables in the launcher's environment.
    pub fn system_with_env(topology: &Path, env: &[(&str, &str)]) -> Option<Self> {
        match crate::BACKENDS {
            Backends::Embedded => Some(Self::up_with_env(topology, env)),
            Backends::ScaleOut => {
                scale_out_backends_reachable().then(|| Self::scale_out(topology, env))
            }
        }
    }

    /// Starts the system on PostgreSQL and NATS JetStream under a fresh name prefix.
    pub fn scale_out(topology: &Path, env: &[(&str, &str)]) -> Self {
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (postgres, nats) = (postgres_admin_url(), nats_url());
        let args = [
            "--postgres",
            &postgres,
            "--nats",
            &nats,
            "--prefix",
            &prefix,
        ];
        // One scale-out system at a time: each holds up to a few connections per instance,
        // and PostgreSQL allows 100 in all.
        let slot = ScaleOutSlot::take();
        let mut comb = Self::start(topology, &args, env, Some(prefix.clone()));
        comb.slot = Some(slot);
        comb
    }

    /// Starts the system with these variables in the launcher's environment.
    pub fn up_with_env(topology: &Path, env: &[(&str, &str)]) -> Self {
        Self::start(topology, &[], env, None)
    }

    /// The same, with these arguments to `comb up` as well.
    pub fn up_with(topology: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start(topology, args, env, None)
    }

    /// The launcher's state file, as JSON.
    pub fn launcher_state(&self) -> Value {
        let state = std::fs::read_to_string(self.dir.path().join("data/launcher.json")).unwrap();
        serde_json::from_str(&state).unwrap()
    }

    /// `prefix` is known before `comb up` runs, so a failed start still drops what it made.
    fn start(
        topology: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        prefix: Option<String>,
    ) -> Self {
        let mut comb = Self::unstarted();
        comb.prefix = prefix;
        let output = comb.try_up(topology, extra_args, env);
        assert!(
            output.status.success(),
            "comb up failed:\n{}",
            text(&output)
        );
        comb
    }

    /// A data directory for `comb` runs, with no system started yet.
    pub fn unstarted() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            prefix: None,
            slot: None,
        }
    }

    /// Runs `comb up --detach` on free ports with these extra arguments, whatever comes of it.
    pub fn try_up(&self, topology: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Output {
        let config = topology.display().to_string();
        let mut args = vec![
            "up",
            "--detach",
            "--gateway-port",
            "0",
            "--dashboard-port",
            "0",
            "--config",
            &config,
        ];
        args.extend_from_slice(extra_args);
        self.run_with_env(&args, env)
    }

    pub fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs `comb ARGS --data-dir DIR`, with no COMB_* or OTEL_* variables from the
    /// test's environment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Runs `comb ARGS --data-dir DIR` with these variables and none of the test's own
    /// COMB_* or OTEL_* ones.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_comb"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .current_dir(self.dir.path());
        for (name, _) in std::env::vars() {
            if name.starts_with("COMB_") || name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        command.output().unwrap()
    }

    /// The dashboard's address, from the launcher's state file.
    pub fn dashboard(&self) -> String {
        let state = std::fs::read_to_string(self.dir.path().join("data/launcher.json")).unwrap();
        let state: Value = serde_json::from_str(&state).unwrap();
        state["control_url"].as_str().unwrap().to_owned()
    }

    pub fn status(&self) -> Value {
        let output = self.run(&["status", "--json"]);
        assert!(
            output.status.success(),
            "comb status failed:\n{}",
            text(&output)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub fn gateway(&self) -> String {
        self.status()["gateway_url"].as_str().unwrap().to_owned()
    }

    pub fn instance(&self, name: &str) -> Value {
        let status = self.status();
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|instance| instance["instance"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no instance {name} in {status}"))
    }

    pub async fn get(&self, path: &str) -> Option<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.gateway()))
            .send()
            .await
            .ok()
    }
}

/// The trace an answer belongs to, from its `traceresponse: 00-TRACE_ID-SPAN_ID-FLAGS`.
pub fn trace_id(response: &reqwest::Response) -> String {
    let trace_id = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();
    assert_eq!(trace_id.len(), 32, "a W3C trace id");
    trace_id
}

impl Comb {
    /// The spans of a trace the launcher's dashboard holds so far, or `None` while it
    /// cannot answer.
    pub async fn trace(&self, trace_id: &str) -> Option<Vec<Value>> {
        self.http
            .get(format!("{}/api/traces/{trace_id}", self.dashboard()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Each service's database URL, as the launcher gave it to the service (passwords
    /// included, for the operator).
    pub async fn databases(&self) -> std::collections::BTreeMap<String, String> {
        let token =
            std::fs::read_to_string(std::path::Path::new(&self.data_dir()).join("operator.token"))
                .unwrap();
        self.http
            .get(format!("{}/databases", self.dashboard()))
            .header("x-comb-operator-token", token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Comb {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        if let Some(prefix) = &self.prefix {
            drop_databases(prefix);
        }
    }
}

/// Removes the databases and roles a scale-out system was given (best effort: with no
/// `psql` on the machine they stay, named by their unique prefix).
fn drop_databases(prefix: &str) {
    let topology = comb::topology::Topology::load(&repo_topology()).unwrap();
    // One statement per --command: psql runs several in one transaction, which DROP
    // DATABASE refuses.
    let mut command = Command::new("psql");
    command
        .arg(postgres_admin_url())
        .args(["--quiet", "--no-psqlrc"]);
    for service in topology.services.keys() {
        let name = format!("{prefix}_{}", service.replace('-', "_"));
        command
            .arg("--command")
            .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .arg("--command")
            .arg(format!("DROP ROLE IF EXISTS \"{name}\""));
    }
    let _ = command.output();
}

pub fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "gave up after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.contains(") Z "))
}
