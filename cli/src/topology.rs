//! The topology file, `comb.toml`: which services run, how many instances each, which
//! services each may call, how the launcher runs them, and settings for all services or
//! one. Only the launcher and the exporters read it; an instance gets its settings from
//! it through [`Topology::settings_for`] and `comb_kit::ServiceConfig::resolve`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What is wrong with a topology file, and where.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read the topology file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the topology file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid topology: {0}")]
    Invalid(String),
}

/// The topology file, `comb.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub launcher: LauncherSettings,
    /// Settings every service gets, below its own.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub services: BTreeMap<String, ServiceSpec>,
}

/// How the launcher runs the system on one machine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LauncherSettings {
    /// The port the gateway listens on; 0 picks a free one.
    pub gateway_port: u16,
    /// The port of the launcher's dashboard and control API; 0 picks a free one.
    pub dashboard_port: u16,
    /// First wait before restarting a crashed instance; doubles on each crash in a row.
    pub restart_backoff_ms: u64,
    /// The longest wait between restarts.
    pub restart_backoff_max_ms: u64,
    /// How long `comb up` waits for every instance to be ready.
    pub ready_timeout_ms: u64,
    /// A PostgreSQL account that may create roles and databases: with it, every service
    /// gets a database and a role of its own on that server instead of a SQLite file.
    pub postgres: Option<String>,
    /// A NATS server with JetStream: with it, events travel through JetStream instead of
    /// each producer's own feed.
    pub nats: Option<String>,
    /// What the names of databases, roles and streams begin with (`comb_catalog`, ...), so
    /// several systems can share one PostgreSQL and one NATS.
    pub prefix: String,
}

impl Default for LauncherSettings {
    fn default() -> Self {
        Self {
            gateway_port: 8080,
            dashboard_port: 8090,
            restart_backoff_ms: 250,
            restart_backoff_max_ms: 30_000,
            ready_timeout_ms: 30_000,
            postgres: None,
            nats: None,
            prefix: "comb".to_owned(),
        }
    }
}

/// One service in the topology.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default = "one")]
    pub replicas: u32,
    /// How far an autoscaler may scale the service out; none means it stays at `replicas`.
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// The services this one calls; the only ones it is wired to.
    #[serde(default)]
    pub calls: Vec<String>,
    /// Settings for this service, above the topology-wide ones.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// The most instances of one service the launcher runs.
pub const MAX_REPLICAS: u32 = 32;

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            TopologyError::Parse { message, .. } => TopologyError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates topology text.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let topology: Topology = toml::from_str(text).map_err(|error| TopologyError::Parse {
            path: PathBuf::from("comb.toml"),
            message: error.to_string(),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    fn validate(&self) -> Result<(), TopologyError> {
        if self.services.is_empty() {
            return Err(TopologyError::Invalid(
                "no services: add at least one [services.NAME] table".into(),
            ));
        }
        for (name, spec) in &self.services {
            if !is_service_name(name) {
                return Err(TopologyError::Invalid(format!(
                    "service name {name:?} must be lower-case letters, digits and hyphens, starting with a letter"
                )));
            }
            if spec.replicas == 0 || spec.replicas > MAX_REPLICAS {
                return Err(TopologyError::Invalid(format!(
                    "services.{name}.replicas is {}; it must be 1..={MAX_REPLICAS}",
                    spec.replicas
                )));
            }
            if let Some(max) = spec.max_replicas
                && !(spec.replicas..=MAX_REPLICAS).contains(&max)
            {
                return Err(TopologyError::Invalid(format!(
                    "services.{name}.max_replicas is {max}; it must be between replicas ({}) and {MAX_REPLICAS}",
                    spec.replicas
                )));
            }
            for callee in &spec.calls {
                if !self.services.contains_key(callee) {
                    return Err(TopologyError::Invalid(format!(
                        "services.{name}.calls names {callee:?}, which is not a service in this topology"
                    )));
                }
                if callee == name {
                    return Err(TopologyError::Invalid(format!(
                        "services.{name}.calls names the service itself"
                    )));
                }
            }
        }
        if !is_name_prefix(&self.launcher.prefix) {
            return Err(TopologyError::Invalid(format!(
                "launcher.prefix {:?} must be 1 to 20 lower-case letters, digits and underscores, starting with a letter",
                self.launcher.prefix
            )));
        }
        Ok(())
    }

    /// The settings file-side for `service`: topology-wide ones overridden by its own.
    pub fn settings_for(&self, service: &str) -> BTreeMap<String, String> {
        let mut settings = self.settings.clone();
        if let Some(spec) = self.services.get(service) {
            settings.extend(spec.settings.clone());
        }
        settings
    }
}

/// Whether `prefix` can begin PostgreSQL and JetStream names unquoted.
pub fn is_name_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    prefix.len() <= 20
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use comb_kit::ServiceConfig;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    const TOPOLOGY: &str = r#"
        [launcher]
        gateway_port = 9000

        [settings]
        log = "debug"

        [services.gateway]
        calls = ["catalog"]

        [services.catalog]
        replicas = 2
        settings = { log = "warn", seed = "false" }
    "#;

    #[test]
    fn topology_parses_with_defaults() {
        let topology = Topology::parse(TOPOLOGY).expect("valid topology");
        assert_eq!(topology.launcher.gateway_port, 9000);
        assert_eq!(topology.launcher.restart_backoff_ms, 250);
        assert_eq!(topology.services["gateway"].replicas, 1);
        assert_eq!(topology.services["catalog"].replicas, 2);
        assert_eq!(topology.services["gateway"].calls, vec!["catalog"]);
    }

    #[test]
    fn topology_rejects_unknown_callee_and_bad_replicas() {
        let error = Topology::parse("[services.a]\ncalls = [\"b\"]").expect_err("unknown callee");
        assert!(error.to_string().contains("not a service"), "{error}");
        let error = Topology::parse("[services.a]\nreplicas = 0").expect_err("zero replicas");
        assert!(error.to_string().contains("replicas is 0"), "{error}");
        let error = Topology::parse("[services.A]").expect_err("bad name");
        assert!(error.to_string().contains("lower-case"), "{error}");
        let error = Topology::parse("[services.a]\nreplica = 2").expect_err("typo");
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn the_launcher_may_name_scale_out_backends_and_an_autoscaling_ceiling() {
        let topology = Topology::parse(
            "[launcher]\npostgres = \"postgres://postgres@db/postgres\"\nnats = \"nats://mq:4222\"\nprefix = \"shop_a\"\n\
             [services.a]\nreplicas = 2\nmax_replicas = 5",
        )
        .expect("valid topology");
        assert_eq!(
            topology.launcher.postgres.as_deref(),
            Some("postgres://postgres@db/postgres")
        );
        assert_eq!(topology.launcher.nats.as_deref(), Some("nats://mq:4222"));
        assert_eq!(topology.launcher.prefix, "shop_a");
        assert_eq!(topology.services["a"].max_replicas, Some(5));
        assert_eq!(
            Topology::parse("[services.a]")
                .unwrap_or_else(|e| panic!("{e}"))
                .launcher
                .prefix,
            "comb"
        );

        let error = Topology::parse("[services.a]\nreplicas = 3\nmax_replicas = 2")
            .expect_err("ceiling below replicas");
        assert!(error.to_string().contains("max_replicas is 2"), "{error}");
        let error = Topology::parse("[launcher]\nprefix = \"Shop-A\"\n[services.a]")
            .expect_err("a prefix PostgreSQL would need quoted");
        assert!(error.to_string().contains("launcher.prefix"), "{error}");
    }

    #[test]
    fn service_settings_layer_topology_then_service_then_env() {
        let topology = Topology::parse(TOPOLOGY).expect("valid topology");
        let config = ServiceConfig::resolve("catalog", topology.settings_for("catalog"), no_env())
            .expect("config");
        assert_eq!(config.log_filter, "warn");
        assert!(!config.flag("seed", true).expect("flag"));
        let gateway = ServiceConfig::resolve("gateway", topology.settings_for("gateway"), no_env())
            .expect("config");
        assert_eq!(gateway.log_filter, "debug");

        let env = [
            ("COMB_LOG", "error"),
            ("COMB_SEED", "true"),
            ("HOME", "/root"),
        ];
        let config = ServiceConfig::resolve("catalog", topology.settings_for("catalog"), env)
            .expect("config");
        assert_eq!(config.log_filter, "error");
        assert!(config.flag("seed", false).expect("flag"));
    }
}
