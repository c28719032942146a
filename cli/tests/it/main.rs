//! System tests: the real `comb` binary starts the whole system on random ports in a
//! temporary data directory, and the tests talk to it as a user would.

#![allow(clippy::unwrap_used)]

mod launcher;
mod observability;
mod resilience;
mod saga;
mod storefront;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The repository's topology, the one the README's run command uses.
pub fn repo_topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../comb.toml")
}

/// A system started with `comb up --detach`, stopped with `comb down` when dropped.
pub struct Comb {
    pub dir: TempDir,
    pub http: reqwest::Client,
}

impl Comb {
    /// Starts the system described by `topology` on a free gateway port.
    pub fn up(topology: &Path) -> Self {
        Self::up_with_env(topology, &[])
    }

    /// Starts the system with these variables in the launcher's environment.
    pub fn up_with_env(topology: &Path, env: &[(&str, &str)]) -> Self {
        let comb = Self {
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        let config = topology.display().to_string();
        let output = comb.run_with_env(
            &[
                "up",
                "--detach",
                "--gateway-port",
                "0",
                "--dashboard-port",
                "0",
                "--config",
                &config,
            ],
            env,
        );
        assert!(
            output.status.success(),
            "comb up failed:\n{}",
            text(&output)
        );
        comb
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

impl Drop for Comb {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
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
