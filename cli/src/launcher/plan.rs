//! From topology to processes: which instances to start, with which settings, and how
//! they find each other. Instances bind ports of their own choosing (port 0) and report
//! them (`address_file`); only the gateway's public port is given.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::topology::Topology;
use anyhow::{Context, bail};
use comb_kit::config::{env_name, sqlite_url};

/// The service that answers the public API; it gets the gateway port.
pub const GATEWAY: &str = "gateway";

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub service: String,
    /// `SERVICE-N`, N counting from 1.
    pub instance: String,
    /// Where the instance serves callers: port 0 until it has reported the port it bound.
    pub addr: SocketAddr,
    /// The admin listener: `/metrics` and fault control, for the launcher and operators;
    /// port 0 until reported.
    pub admin_addr: SocketAddr,
    /// Where the instance reports the addresses it bound.
    pub address_file: PathBuf,
    /// Arguments after the comb binary.
    pub args: Vec<String>,
    /// Environment set for the process (on top of the launcher's own).
    pub env: BTreeMap<String, String>,
}

impl InstanceSpec {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the instance's addresses are known (it reported them, or was given them).
    pub fn is_addressed(&self) -> bool {
        self.addr.port() != 0 && self.admin_addr.port() != 0
    }
}

/// Every instance of the system, in topology order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub instances: Vec<InstanceSpec>,
}

impl Plan {
    /// The public URL of the API, when the topology has a gateway given its port.
    pub fn gateway_url(&self) -> Option<String> {
        self.instances
            .iter()
            .find(|instance| instance.service == GATEWAY && instance.is_addressed())
            .map(InstanceSpec::url)
    }
}

/// Where things live under the data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let root = std::path::absolute(root)
            .with_context(|| format!("the data directory {} is unusable", root.display()))?;
        Ok(Self { root })
    }

    /// The launcher's state: pid and control address of a running system.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("launcher.json")
    }

    /// The running system's operator token (readable by its owner alone): `comb chaos`
    /// sends it to inject faults and to read the databases' full URLs.
    pub fn operator_token_file(&self) -> PathBuf {
        self.root.join("operator.token")
    }

    /// What a detached launcher prints.
    pub fn launcher_log(&self) -> PathBuf {
        self.root.join("launcher.log")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn instance_log(&self, instance: &str) -> PathBuf {
        self.logs_dir().join(format!("{instance}.log"))
    }

    /// Prometheus file-based service discovery: every instance to scrape.
    pub fn prometheus_targets(&self) -> PathBuf {
        self.root.join("prometheus").join("targets.json")
    }

    /// An instance's own directory.
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.root.join("instances").join(instance)
    }

    /// Media's blob store, shared by media and its workers.
    pub fn media_blobs(&self) -> PathBuf {
        self.root.join("services").join("media").join("blobs")
    }

    /// A service's SQLite database, shared by its instances.
    pub fn service_database(&self, service: &str) -> PathBuf {
        self.root
            .join("services")
            .join(service)
            .join(format!("{service}.db"))
    }
}

/// What the plan needs besides the topology.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    pub layout: &'a Layout,
    pub gateway_port: u16,
    /// The topology file, passed on so each instance applies its settings.
    pub config_path: Option<&'a Path>,
    pub launcher_pid: u32,
    /// Whether the launcher's environment already names a database (then it wins).
    pub database_url_in_env: bool,
}

/// Gives every instance its settings and wires each service to the instances it calls.
/// Every instance binds a free port of its own choosing (port 0), except the gateway's
/// first, which gets the public port when one is set; callers learn the others' addresses
/// from discovery, as the instances report them.
pub fn plan(topology: &Topology, inputs: &PlanInputs<'_>) -> anyhow::Result<Plan> {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut instances = Vec::new();
    for (service, spec) in &topology.services {
        for index in 1..=spec.replicas {
            let instance = format!("{service}-{index}");
            let addr = if service == GATEWAY && index == 1 && inputs.gateway_port != 0 {
                ensure_free(inputs.gateway_port)?;
                SocketAddr::from((Ipv4Addr::LOCALHOST, inputs.gateway_port))
            } else {
                any_port
            };
            let instance_dir = inputs.layout.instance_dir(&instance);
            let mut env = BTreeMap::new();
            env.insert(env_name("instance"), instance.clone());
            env.insert(env_name("data_dir"), instance_dir.display().to_string());
            env.insert(env_name("parent_pid"), inputs.launcher_pid.to_string());
            let database_in_topology = topology.settings_for(service).contains_key("database_url");
            if !database_in_topology && !inputs.database_url_in_env {
                env.insert(
                    env_name("database_url"),
                    sqlite_url(&inputs.layout.service_database(service)),
                );
            }
            // Media and its workers share one blob store.
            let blobs_in_topology = topology.settings_for(service).contains_key("media_store");
            if (service == "media" || service == "media-worker") && !blobs_in_topology {
                env.insert(
                    env_name("media_store"),
                    inputs.layout.media_blobs().display().to_string(),
                );
            }
            for callee in &spec.calls {
                // No address: the callee's instances come from discovery once they report.
                env.insert(
                    env_name(&format!("upstream_{}", callee.replace('-', "_"))),
                    String::new(),
                );
            }
            let mut args = vec!["serve".to_owned(), service.clone()];
            if let Some(path) = inputs.config_path {
                args.push("--config".to_owned());
                args.push(path.display().to_string());
            }
            instances.push(addressed(
                InstanceSpec {
                    service: service.clone(),
                    instance,
                    addr,
                    admin_addr: any_port,
                    address_file: instance_dir.join("addresses.json"),
                    args,
                    env,
                },
                addr,
                any_port,
            ));
        }
    }
    // The gateway first: it is what a person waits for.
    instances.sort_by_key(|instance| instance.service != GATEWAY);
    Ok(Plan { instances })
}

/// `spec` told to listen on `addr` and `admin_addr` (port 0: a free port of its choosing).
pub fn addressed(mut spec: InstanceSpec, addr: SocketAddr, admin_addr: SocketAddr) -> InstanceSpec {
    spec.addr = addr;
    spec.admin_addr = admin_addr;
    spec.env.insert(env_name("listen"), addr.to_string());
    spec.env
        .insert(env_name("admin_listen"), admin_addr.to_string());
    spec.env.insert(
        env_name("address_file"),
        spec.address_file.display().to_string(),
    );
    spec
}

/// Another instance of `template`'s service, number `index`: what `comb scale` starts.
pub fn instance_like(template: &InstanceSpec, index: u32, layout: &Layout) -> InstanceSpec {
    let instance = format!("{}-{index}", template.service);
    let instance_dir = layout.instance_dir(&instance);
    let mut env = template.env.clone();
    env.insert(env_name("instance"), instance.clone());
    env.insert(env_name("data_dir"), instance_dir.display().to_string());
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    addressed(
        InstanceSpec {
            service: template.service.clone(),
            instance,
            addr: any_port,
            admin_addr: any_port,
            address_file: instance_dir.join("addresses.json"),
            args: template.args.clone(),
            env,
        },
        any_port,
        any_port,
    )
}

/// The instances' admin listeners as Prometheus file-based service discovery targets, one
/// group per instance labelled with its service and instance name.
pub fn prometheus_targets(instances: &[InstanceSpec]) -> serde_json::Value {
    serde_json::Value::Array(
        instances
            .iter()
            .filter(|instance| instance.is_addressed())
            .map(|instance| {
                serde_json::json!({
                    "targets": [instance.admin_addr.to_string()],
                    "labels": {"job": "comb", "service": instance.service, "comb_instance": instance.instance},
                })
            })
            .collect(),
    )
}

fn ensure_free(port: u16) -> anyhow::Result<()> {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        bail!(
            "port {port} is in use: stop what uses it, or pass --gateway-port with another port (0 picks a free one)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::parse(
            r#"
            [services.gateway]
            calls = ["catalog"]
            [services.catalog]
            replicas = 2
            "#,
        )
        .expect("topology")
    }

    fn inputs(layout: &Layout) -> PlanInputs<'_> {
        PlanInputs {
            layout,
            gateway_port: 0,
            config_path: None,
            launcher_pid: 42,
            database_url_in_env: false,
        }
    }

    #[test]
    fn instances_choose_their_ports_and_callers_learn_them_from_discovery() {
        let layout = Layout::new(Path::new("/tmp/comb-plan")).expect("layout");
        let plan = plan(&topology(), &inputs(&layout)).expect("plan");
        let names: Vec<&str> = plan.instances.iter().map(|i| i.instance.as_str()).collect();
        assert_eq!(names, ["gateway-1", "catalog-1", "catalog-2"]);
        for instance in &plan.instances {
            assert_eq!(instance.env["COMB_LISTEN"], "127.0.0.1:0", "{instance:?}");
            assert_eq!(instance.env["COMB_ADMIN_LISTEN"], "127.0.0.1:0");
            assert!(!instance.is_addressed());
        }
        let gateway = &plan.instances[0];
        assert_eq!(gateway.env["COMB_UPSTREAM_CATALOG"], "", "from discovery");
        assert_eq!(
            gateway.env["COMB_ADDRESS_FILE"],
            "/tmp/comb-plan/instances/gateway-1/addresses.json"
        );
        assert_eq!(gateway.env["COMB_PARENT_PID"], "42");
        assert_eq!(gateway.args, ["serve", "gateway"]);
        assert!(
            !plan.instances[1].env.contains_key("COMB_UPSTREAM_GATEWAY"),
            "only declared calls are wired"
        );
        assert_eq!(
            prometheus_targets(&plan.instances),
            serde_json::json!([]),
            "nothing to scrape before an instance reports where"
        );
    }

    #[test]
    fn the_gateway_gets_the_public_port_it_is_given() {
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let layout = Layout::new(Path::new("/tmp/comb-plan")).expect("layout");
        let mut inputs = inputs(&layout);
        inputs.gateway_port = port;
        let plan = plan(&topology(), &inputs).expect("plan");
        assert_eq!(
            plan.instances[0].env["COMB_LISTEN"],
            format!("127.0.0.1:{port}")
        );
        assert_eq!(plan.instances[1].env["COMB_LISTEN"], "127.0.0.1:0");
    }

    #[test]
    fn replicas_share_their_service_database_but_not_their_directory() {
        let layout = Layout::new(Path::new("/tmp/comb-plan")).expect("layout");
        let plan = plan(&topology(), &inputs(&layout)).expect("plan");
        let (one, two) = (&plan.instances[1], &plan.instances[2]);
        assert_eq!(
            one.env["COMB_DATABASE_URL"],
            "sqlite:///tmp/comb-plan/services/catalog/catalog.db"
        );
        assert_eq!(one.env["COMB_DATABASE_URL"], two.env["COMB_DATABASE_URL"]);
        assert_ne!(one.env["COMB_DATA_DIR"], two.env["COMB_DATA_DIR"]);
        let mut with_env = inputs(&layout);
        with_env.database_url_in_env = true;
        let plan = super::plan(&topology(), &with_env).expect("plan");
        assert!(
            !plan.instances[1].env.contains_key("COMB_DATABASE_URL"),
            "the environment's database wins"
        );
    }

    #[test]
    fn a_taken_gateway_port_is_reported_before_anything_starts() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let layout = Layout::new(Path::new("/tmp/comb-plan")).expect("layout");
        let mut inputs = inputs(&layout);
        inputs.gateway_port = port;
        let error = plan(&topology(), &inputs).expect_err("port in use");
        assert!(error.to_string().contains("--gateway-port"), "{error}");
    }
}
