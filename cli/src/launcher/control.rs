//! How other `comb` commands and people reach a running launcher: a state file in the
//! data directory (the launcher's pid and the address of its control API) and that API,
//! which answers `GET /status`, receives the instances' spans (`POST /v1/traces`) and
//! serves the dashboard.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::dashboard::{self, DashboardMemory};
use super::plan::Layout;
use super::supervisor::{InstanceStatus, Supervisor};
use super::traces::{self, Collector};

/// What a running launcher leaves in `launcher.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LauncherState {
    pub pid: u32,
    pub control_url: String,
    pub gateway_url: Option<String>,
    /// Where the dashboard's pages are shared read-only (`--dashboard-address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dashboard_url: Option<String>,
    pub started_at: String,
}

/// The whole system as `comb status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemStatus {
    pub launcher_pid: u32,
    pub gateway_url: Option<String>,
    pub data_dir: String,
    pub started_at: String,
    /// Every instance is ready.
    pub ready: bool,
    /// CPU time (user + system) the launcher itself has used, in seconds.
    #[serde(default)]
    pub launcher_cpu_seconds: Option<f64>,
    pub instances: Vec<InstanceStatus>,
}

/// What the control API's handlers share.
#[derive(Clone)]
pub struct Control {
    pub supervisor: Arc<Supervisor>,
    pub state: LauncherState,
    pub data_dir: String,
    pub layout: Layout,
    pub logs_dir: std::path::PathBuf,
    /// The services of the topology, for the dashboard's filters.
    pub services: Arc<[String]>,
    /// Each service's database URL, for `comb chaos check`.
    pub databases: Arc<std::collections::BTreeMap<String, String>>,
    /// The system's operator token: who presents it sees the databases' passwords.
    pub operator_token: Option<Arc<str>>,
    pub collector: Collector,
    pub memory: Arc<DashboardMemory>,
    pub http: reqwest::Client,
}

impl axum::extract::FromRef<Control> for Collector {
    fn from_ref(control: &Control) -> Self {
        control.collector.clone()
    }
}

/// The running control API.
#[derive(Debug)]
pub struct ControlServer {
    pub state: LauncherState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Stops answering and lets go of the supervisor.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The control API's port, taken before any instance starts so they can be told where to
/// send their spans.
#[derive(Debug)]
pub struct ControlPort {
    listener: TcpListener,
    pub url: String,
}

impl ControlPort {
    /// Binds `port` on localhost (0 picks a free one).
    pub async fn bind(port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| {
                format!(
                    "cannot open the dashboard port {port}: is another comb running? Pass --dashboard-port with a free port, or 0 for any"
                )
            })?;
        let addr: SocketAddr = listener
            .local_addr()
            .context("cannot open the launcher's control port")?;
        Ok(Self {
            listener,
            url: format!("http://{addr}"),
        })
    }
}

/// The largest batch of spans an instance may send at once.
const TRACES_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Serves the control API and the dashboard on `port`, and the dashboard's pages alone on
/// `shared` when it is given.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    port: ControlPort,
    shared: Option<super::shared::SharedDashboard>,
    supervisor: Arc<Supervisor>,
    layout: &Layout,
    services: Vec<String>,
    databases: std::collections::BTreeMap<String, String>,
    gateway_url: Option<String>,
    collector: Collector,
) -> anyhow::Result<ControlServer> {
    let ControlPort { listener, url } = port;
    let state = LauncherState {
        pid: std::process::id(),
        control_url: url,
        gateway_url,
        shared_dashboard_url: shared.as_ref().map(|shared| shared.url.clone()),
        started_at: now(),
    };
    let control = Control {
        supervisor,
        state: state.clone(),
        data_dir: layout.root.display().to_string(),
        layout: layout.clone(),
        logs_dir: layout.logs_dir(),
        services: services.into(),
        databases: Arc::new(databases),
        operator_token: std::fs::read_to_string(layout.operator_token_file())
            .ok()
            .map(|token| token.trim().into()),
        collector,
        memory: Arc::default(),
        http: reqwest::Client::new(),
    };
    let (shared_stop, shared_stopped) = tokio::sync::oneshot::channel::<()>();
    let shared_task = match shared {
        Some(shared) => Some(shared.serve(control.clone(), async move {
            let _ = shared_stopped.await;
        })?),
        None => None,
    };
    let app = Router::new()
        .route("/status", get(status))
        .route("/discovery", get(discover_all))
        .route("/discovery/{service}", get(discovery))
        .route("/scale", post(scale))
        .route("/databases", get(list_databases))
        .route(
            "/v1/traces",
            post(traces::receive).layer(DefaultBodyLimit::max(TRACES_BODY_LIMIT)),
        )
        .merge(dashboard::pages())
        .with_state(control)
        .layer(axum::middleware::from_fn_with_state(
            own_hosts(&state.control_url),
            only_own_host,
        ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The kit's server: the same timeouts as every instance, so a stalled client of the
    // dashboard holds nothing.
    let server = comb_kit::server::Server::from_listener(listener)
        .context("cannot serve the launcher's control port")?
        .with_max_body(TRACES_BODY_LIMIT);
    let task = tokio::spawn(async move {
        let serving = server.run(
            app,
            comb_kit::server::Readiness::default(),
            async move {
                let _ = stopped.await;
                let _ = shared_stop.send(());
            },
            std::time::Duration::from_secs(2),
        );
        if let Err(error) = serving.await {
            eprintln!("comb | the control API stopped: {error}");
        }
        if let Some(shared) = shared_task {
            let _ = shared.await;
        }
    });
    Ok(ControlServer { state, stop, task })
}

/// The ready instances of a service, for its callers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Discovered {
    pub service: String,
    pub urls: Vec<String>,
}

async fn discovery(
    State(control): State<Control>,
    axum::extract::Path(service): axum::extract::Path<String>,
) -> Json<Discovered> {
    let urls = control.supervisor.discover(&service);
    Json(Discovered { service, urls })
}

#[derive(Debug, Deserialize)]
struct DiscoverAfter {
    #[serde(default)]
    after: u64,
}

/// Every service's ready instances, once they differ from version `after` (at once when
/// they already do); after a long poll with no change, the same version again.
async fn discover_all(
    State(control): State<Control>,
    axum::extract::Query(query): axum::extract::Query<DiscoverAfter>,
) -> Json<comb_kit::discovery::Snapshot> {
    let mut snapshots = control.supervisor.discovery();
    let mut stopping = control.supervisor.stopping();
    // A stopping launcher answers at once, so its own shutdown never waits on a poll.
    tokio::select! {
        _ = tokio::time::timeout(
            comb_kit::discovery::LONG_POLL,
            snapshots.wait_for(|snapshot| snapshot.version != query.after),
        ) => {}
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
    let snapshot = snapshots.borrow().as_ref().clone();
    Json(snapshot)
}

/// Each service's database URL; passwords are shown only to a caller presenting the
/// system's operator token (`comb chaos check`), never on the dashboard.
async fn list_databases(
    State(control): State<Control>,
    headers: axum::http::HeaderMap,
) -> Json<std::collections::BTreeMap<String, String>> {
    let operator = control.operator_token.as_deref().is_some_and(|token| {
        headers
            .get(comb_kit::faults::TOKEN_HEADER)
            .is_some_and(|presented| {
                comb_kit::faults::same_secret(presented.as_bytes(), token.as_bytes())
            })
    });
    Json(
        control
            .databases
            .iter()
            .map(|(service, url)| {
                let url = if operator {
                    url.clone()
                } else {
                    comb_kit::storage::redact(url)
                };
                (service.clone(), url)
            })
            .collect(),
    )
}

/// The `Host` values the control API answers: its own address, by number or as
/// `localhost`.
fn own_hosts(url: &str) -> Arc<[String]> {
    let address = url.trim_start_matches("http://");
    let port = address.rsplit_once(':').map_or("", |(_, port)| port);
    vec![
        address.to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
    .into()
}

/// Refuses a request addressed to another host: a web page whose name was pointed at this
/// machine (DNS rebinding) must not read the dashboard or drive the launcher.
async fn only_own_host(
    State(hosts): State<Arc<[String]>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !hosts.contains(&host) {
        return (
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this is comb's launcher, which answers only as {}; open the dashboard at that address",
                hosts[0]
            ),
        )
            .into_response();
    }
    next.run(request).await
}

/// A request to run a service with so many instances.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub service: String,
    pub replicas: u32,
}

/// What a scale changed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScaleOutcome {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

async fn scale(
    State(control): State<Control>,
    Json(request): Json<ScaleRequest>,
) -> Result<Json<ScaleOutcome>, (axum::http::StatusCode, String)> {
    let bad = |why: String| (axum::http::StatusCode::BAD_REQUEST, why);
    if request.replicas > crate::topology::MAX_REPLICAS {
        return Err(bad(format!(
            "replicas must be between 0 (stopped) and {}, not {}",
            crate::topology::MAX_REPLICAS,
            request.replicas
        )));
    }
    if !control.services.contains(&request.service) {
        return Err(bad(format!(
            "the topology has no service {:?}; it has {}",
            request.service,
            control.services.join(", ")
        )));
    }
    let layout = control.layout.clone();
    let (added, removed) = control
        .supervisor
        .scale(&request.service, request.replicas, |template, index| {
            super::plan::instance_like(template, index, &layout)
        })
        .map_err(|error| bad(format!("{error:#}")))?;
    if let Err(error) =
        super::write_prometheus_targets(&control.layout, &control.supervisor.specs())
    {
        eprintln!("comb | the Prometheus discovery file could not be rewritten: {error:#}");
    }
    Ok(Json(ScaleOutcome { added, removed }))
}

async fn status(State(control): State<Control>) -> Json<SystemStatus> {
    Json(SystemStatus {
        launcher_pid: control.state.pid,
        gateway_url: control.supervisor.gateway_url(),
        data_dir: control.data_dir.clone(),
        started_at: control.state.started_at.clone(),
        ready: control.supervisor.all_ready() && !control.supervisor.is_stopping(),
        launcher_cpu_seconds: crate::cpu::process_cpu_seconds(control.state.pid),
        instances: control.supervisor.status(),
    })
}

pub fn write_state(layout: &Layout, state: &LauncherState) -> anyhow::Result<()> {
    let path = layout.state_file();
    let text = serde_json::to_string_pretty(state)?;
    // Written whole then renamed, so a reader never sees half a file.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The state of the launcher running from this data directory, if one is.
pub fn running_launcher(layout: &Layout) -> anyhow::Result<Option<LauncherState>> {
    let path = layout.state_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let state: LauncherState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a launcher state file", path.display()))?;
    if is_alive(state.pid) {
        Ok(Some(state))
    } else {
        // Left behind by a launcher that was killed.
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }
}

pub fn remove_state(layout: &Layout) {
    let _ = std::fs::remove_file(layout.state_file());
}

/// Whether a process runs with this pid. A zombie (exited, not yet reaped by a parent
/// that may never reap it) does not count.
pub fn is_alive(pid: u32) -> bool {
    let exists = i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok());
    exists && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat: "PID (COMMAND) STATE ..."; the command may hold spaces and parentheses.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Asks a running launcher for the status of the system.
pub async fn fetch_status(state: &LauncherState) -> anyhow::Result<SystemStatus> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let status = client
        .get(format!("{}/status", state.control_url))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| {
            format!(
                "the launcher (pid {}) does not answer at {}",
                state.pid, state.control_url
            )
        })?
        .json()
        .await
        .context("the launcher's status cannot be read")?;
    Ok(status)
}

fn now() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}
