//! `comb up`: the single-machine launcher. It plans the instances of the topology, starts
//! each as its own process under the [`supervisor::Supervisor`], waits for readiness, and
//! on Ctrl-C, SIGTERM or `comb down` asks every instance to drain and waits for them.

pub mod control;
pub mod dashboard;
pub mod logs;
pub mod plan;
pub mod shared;
pub mod supervisor;
pub mod traces;

use std::fs::File;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::topology::Topology;
use anyhow::{Context, bail};
use comb_kit::shutdown::StopSignals;

use self::control::{ControlPort, LauncherState, SystemStatus, fetch_status, running_launcher};
use self::logs::LogSink;
use self::plan::{Layout, Plan, PlanInputs};
use self::supervisor::{Health, Supervisor};
use self::traces::{Collector, Forward};
use crate::UpArgs;
use crate::services::{DEFAULT_TOPOLOGY, check_runnable, load_topology};

/// `comb up`.
pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let (mut topology, config_path) = load_topology(args.config.as_deref())?;
    apply_backend_flags(&mut topology, &args)?;
    check_runnable(&topology)?;
    let layout = Layout::new(&args.data_dir.data_dir)?;
    if let Some(state) = running_launcher(&layout)? {
        bail!(
            "comb is already running from {} (launcher pid {}): stop it with `comb down`, or pass another --data-dir",
            layout.root.display(),
            state.pid
        );
    }
    std::fs::create_dir_all(&layout.root)
        .with_context(|| format!("cannot create the data directory {}", layout.root.display()))?;
    // Instances read their settings from a file: without one, the built-in topology is
    // written to the data directory and used from there.
    let config_path = match config_path {
        Some(path) => Some(path),
        None => {
            let path = layout.root.join("comb.toml");
            std::fs::write(&path, DEFAULT_TOPOLOGY)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Some(path)
        }
    };
    if args.detach {
        return detach(&args, &layout, &topology, config_path.as_deref()).await;
    }
    run(&args, &layout, &topology, config_path.as_deref()).await
}

/// Runs the system in the foreground until Ctrl-C or SIGTERM.
async fn run(
    args: &UpArgs,
    layout: &Layout,
    topology: &Topology,
    config_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut signals = StopSignals::listen(None).context("cannot listen for Ctrl-C and SIGTERM")?;
    let control_port = ControlPort::bind(
        args.dashboard_port
            .unwrap_or(topology.launcher.dashboard_port),
    )
    .await?;
    let shared_dashboard = match args.dashboard_address {
        Some(address) => {
            Some(shared::SharedDashboard::bind(address, args.dashboard_token.as_deref()).await?)
        }
        None => None,
    };
    let shared_url = shared_dashboard.as_ref().map(|shared| shared.url.clone());
    let mut plan = plan::plan(
        topology,
        &PlanInputs {
            layout,
            gateway_port: args.gateway_port.unwrap_or(topology.launcher.gateway_port),
            config_path,
            launcher_pid: std::process::id(),
            database_url_in_env: std::env::var_os("COMB_DATABASE_URL").is_some(),
        },
    )?;
    // Every instance sends its spans to the launcher, which keeps them for the dashboard
    // and forwards them to the OTLP endpoint the launcher itself was given, if any.
    let launcher_env = |name: &str| std::env::var(name).ok();
    let tracing_env = traces::instance_env(&control_port.url, launcher_env);
    let operator_token = new_operator_token(layout)?;
    // `COMB_FAULT_INJECTION=false` where comb up runs keeps every instance free of faults.
    let fault_injection_set = std::env::var_os("COMB_FAULT_INJECTION").is_some();
    for instance in &mut plan.instances {
        instance.env.extend(tracing_env.clone());
        // Callers follow their upstreams' instances as they scale.
        instance.env.insert(
            "COMB_DISCOVERY_URL".to_owned(),
            format!("{}/discovery", control_port.url),
        );
        // `comb chaos` injects latency and errors into running instances, with the token.
        if !fault_injection_set {
            instance
                .env
                .entry("COMB_FAULT_INJECTION".to_owned())
                .or_insert_with(|| "true".to_owned());
        }
        instance
            .env
            .insert("COMB_FAULT_TOKEN".to_owned(), operator_token.clone());
    }
    if let Some(nats_url) = &topology.launcher.nats {
        check_reachable(nats_url).await?;
    }
    let databases = match &topology.launcher.postgres {
        Some(admin_url) => {
            let services: Vec<String> = topology
                .services
                .keys()
                .filter(|service| crate::services::keeps_data(service))
                .cloned()
                .collect();
            let urls =
                crate::postgres::provision(admin_url, &topology.launcher.prefix, &services).await?;
            for instance in &mut plan.instances {
                if let Some(url) = urls.get(&instance.service) {
                    instance
                        .env
                        .insert("COMB_DATABASE_URL".to_owned(), url.clone());
                }
            }
            urls
        }
        None => databases(topology, layout),
    };
    if let Some(nats_url) = &topology.launcher.nats {
        for instance in &mut plan.instances {
            instance.env.extend([
                ("COMB_EVENTS_TRANSPORT".to_owned(), "nats".to_owned()),
                ("COMB_NATS_URL".to_owned(), nats_url.clone()),
                (
                    "COMB_NATS_PREFIX".to_owned(),
                    topology.launcher.prefix.to_ascii_uppercase(),
                ),
            ]);
        }
    }
    let forward = Forward::from_env(launcher_env);
    write_prometheus_targets(layout, &plan.instances)?;
    let exe =
        std::env::current_exe().context("cannot find the comb binary to start services with")?;
    let (logs, log_writer) = LogSink::start(layout, !args.quiet)?;
    let supervisor = Supervisor::new(
        exe,
        layout.clone(),
        &plan,
        topology.launcher.clone(),
        logs.clone(),
    );
    if let Some(target) = &forward {
        logs.launcher(format!("forwarding spans to {}", target.url()));
    }
    let control = control::serve(
        control_port,
        shared_dashboard,
        supervisor.clone(),
        layout,
        topology.services.keys().cloned().collect(),
        databases,
        plan.gateway_url(),
        Collector::new(forward),
    )
    .await?;
    control::write_state(layout, &control.state)?;
    if let Some(url) = shared_url {
        logs.launcher(format!(
            "dashboard shared read-only at {url}/ (open it with ?token=YOUR_TOKEN)"
        ));
    }
    let mut instances = supervisor.start();
    logs.launcher(format!(
        "starting {} instances of {} services from {}",
        plan.instances.len(),
        topology.services.len(),
        config_path.map_or_else(
            || "the built-in topology".to_owned(),
            |path| path.display().to_string()
        )
    ));

    let ready_timeout = Duration::from_millis(topology.launcher.ready_timeout_ms);
    let outcome = tokio::select! {
        ready = wait_until_ready(&supervisor, &logs, ready_timeout, started) => Some(ready),
        _ = signals.next() => None,
    };
    let mut code = ExitCode::SUCCESS;
    match outcome {
        Some(true) => {
            // The gateway's address is known now, had it to be chosen.
            let state = LauncherState {
                gateway_url: supervisor.gateway_url(),
                ..control.state.clone()
            };
            control::write_state(layout, &state)?;
            print_banner(
                &plan,
                state.gateway_url.as_deref(),
                &control.state.control_url,
                &layout.root,
                started.elapsed(),
                &logs,
            );
            logs.launcher(backends_line(&topology.launcher));
            let reason = signals.next().await;
            logs.launcher(format!("stopping ({reason:?})"));
        }
        Some(false) => {
            let waiting: Vec<String> = supervisor
                .status()
                .into_iter()
                .filter(|instance| instance.health != Health::Ready)
                .map(|instance| instance.instance)
                .collect();
            logs.launcher(format!(
                "not ready after {} s: {}; see `comb logs {}` for why. Stopping.",
                ready_timeout.as_secs(),
                waiting.join(", "),
                waiting.first().map(String::as_str).unwrap_or_default()
            ));
            code = ExitCode::FAILURE;
        }
        None => logs.launcher("stopping before everything was ready".to_owned()),
    }
    supervisor.stop();
    let drained = async {
        while instances.join_next().await.is_some() {}
        supervisor.join_added().await;
    };
    tokio::select! {
        () = drained => {}
        _ = signals.next() => logs.launcher("stopping at once".to_owned()),
    }
    control::remove_state(layout);
    control.shutdown().await;
    // The writer ends once the last sender is gone; a stuck pipe must not hold the exit.
    drop((supervisor, instances, logs));
    let _ = tokio::time::timeout(Duration::from_secs(2), log_writer).await;
    println!("comb | stopped");
    Ok(code)
}

/// `--postgres`, `--nats` and `--prefix` win over the topology's `[launcher]` table.
fn apply_backend_flags(topology: &mut Topology, args: &UpArgs) -> anyhow::Result<()> {
    let launcher = &mut topology.launcher;
    if let Some(url) = &args.postgres {
        launcher.postgres = Some(url.clone());
    }
    if let Some(url) = &args.nats {
        launcher.nats = Some(url.clone());
    }
    if let Some(prefix) = &args.prefix {
        if !crate::topology::is_name_prefix(prefix) {
            bail!(
                "--prefix {prefix:?}: use 1 to 20 lower-case letters, digits and underscores, starting with a letter"
            );
        }
        launcher.prefix = prefix.clone();
    }
    if let Some(url) = &launcher.postgres
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bail!(
            "the PostgreSQL address {} must start with postgres://",
            comb_kit::storage::redact(url)
        );
    }
    if let Some(url) = &launcher.nats
        && !url.starts_with("nats://")
    {
        bail!("the NATS address {url} must start with nats://");
    }
    Ok(())
}

/// Each service's database URL, as its instances resolve it: the launcher's
/// `COMB_DATABASE_URL`, else the topology's `database_url`, else its SQLite file.
fn databases(topology: &Topology, layout: &Layout) -> std::collections::BTreeMap<String, String> {
    let from_env = std::env::var("COMB_DATABASE_URL").ok();
    topology
        .services
        .keys()
        .map(|service| {
            let url = from_env
                .clone()
                .or_else(|| topology.settings_for(service).get("database_url").cloned())
                .map(|url| url.replace("{service}", &service.replace('-', "_")))
                .unwrap_or_else(|| comb_kit::config::sqlite_url(&layout.service_database(service)));
            (service.clone(), url)
        })
        .collect()
}

/// Writes the Prometheus discovery file (whole, then renamed, so a reader never sees half).
pub(crate) fn write_prometheus_targets(
    layout: &Layout,
    instances: &[plan::InstanceSpec],
) -> anyhow::Result<()> {
    let path = layout.prometheus_targets();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let partial = path.with_extension("json.partial");
    std::fs::write(
        &partial,
        serde_json::to_string_pretty(&plan::prometheus_targets(instances))?,
    )
    .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn wait_until_ready(
    supervisor: &Supervisor,
    logs: &LogSink,
    timeout: Duration,
    started: Instant,
) -> bool {
    let mut announced = std::collections::HashSet::new();
    loop {
        for instance in supervisor.status() {
            if instance.health == Health::Ready && announced.insert(instance.instance.clone()) {
                logs.launcher(format!(
                    "{} ready at {} ({:.2} s)",
                    instance.instance,
                    instance.address,
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        if supervisor.all_ready() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fails early, with advice, when the NATS server does not answer: otherwise every
/// instance would fail alone and the start would only time out.
async fn check_reachable(nats_url: &str) -> anyhow::Result<()> {
    let address = nats_url.trim_start_matches("nats://");
    let address = address.rsplit_once('@').map_or(address, |(_, host)| host);
    let address = address.split(['/', ',']).next().unwrap_or(address);
    let address = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:4222")
    };
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => bail!(
            "cannot reach NATS at {nats_url} ({error}); start a server with JetStream (nats-server -js) or leave out --nats"
        ),
        Err(_) => bail!(
            "NATS at {nats_url} did not answer within 3 s; start a server with JetStream (nats-server -js) or leave out --nats"
        ),
    }
}

/// Where the services keep their data and send their events, for the start-up banner.
fn backends_line(launcher: &crate::topology::LauncherSettings) -> String {
    let databases = match &launcher.postgres {
        Some(url) => format!(
            "PostgreSQL at {}, a database and role per service ({}_SERVICE)",
            comb_kit::storage::redact(url),
            launcher.prefix
        ),
        None => "a SQLite file per service".to_owned(),
    };
    let events = match &launcher.nats {
        Some(url) => format!("NATS JetStream at {url}"),
        None => "each producer's own feed".to_owned(),
    };
    format!("data: {databases}; events: {events}")
}

fn print_banner(
    plan: &Plan,
    gateway_url: Option<&str>,
    dashboard: &str,
    data_dir: &Path,
    took: Duration,
    logs: &LogSink,
) {
    logs.launcher(format!(
        "comb is up: {} instances ready in {:.2} s (data in {})",
        plan.instances.len(),
        took.as_secs_f64(),
        data_dir.display()
    ));
    if let Some(url) = gateway_url {
        logs.launcher(format!("gateway: {url}   try: curl {url}/api/v1/products"));
    }
    logs.launcher(format!("dashboard: {dashboard}/"));
    logs.launcher("status: comb status   logs: comb logs -f   stop: Ctrl-C".to_owned());
    let workers = plan
        .instances
        .iter()
        .any(|instance| instance.service == "media-worker");
    if let Some(note) = media_tools_note(workers) {
        logs.launcher(note);
    }
}

/// What to say when media workers run without ffmpeg: everything else works, but uploaded
/// media waits unprocessed.
fn media_tools_note(workers: bool) -> Option<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|directory| directory.join(tool).is_file())
        })
    };
    let missing: Vec<&str> = ["ffmpeg", "ffprobe"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    (workers && !missing.is_empty()).then(|| {
        format!(
            "media: {} not installed, so uploaded images, audio and video wait unprocessed (drawn covers and everything else work); install it (Debian: apt-get install ffmpeg) and the workers start on the queue",
            missing.join(" and ")
        )
    })
}

/// Starts a launcher in the background and returns once the system is ready.
async fn detach(
    args: &UpArgs,
    layout: &Layout,
    topology: &Topology,
    config_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let log_path = layout.launcher_log();
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the comb binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("up")
        .arg("--quiet")
        .arg("--data-dir")
        .arg(&layout.root);
    if let Some(path) = config_path {
        command.arg("--config").arg(path);
    }
    if let Some(port) = args.gateway_port {
        command.arg("--gateway-port").arg(port.to_string());
    }
    if let Some(port) = args.dashboard_port {
        command.arg("--dashboard-port").arg(port.to_string());
    }
    if let Some(address) = args.dashboard_address {
        command.arg("--dashboard-address").arg(address.to_string());
    }
    // The token travels in the environment, not on the command line.
    if let Some(token) = &args.dashboard_token {
        command.env("COMB_DASHBOARD_TOKEN", token);
    }
    for (flag, value) in [
        ("--postgres", &args.postgres),
        ("--nats", &args.nats),
        ("--prefix", &args.prefix),
    ] {
        if let Some(value) = value {
            command.arg(flag).arg(value);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut launcher = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the launcher log")?)
        .stderr(log)
        .spawn()
        .context("cannot start the background launcher")?;

    let started = Instant::now();
    let deadline =
        Duration::from_millis(topology.launcher.ready_timeout_ms) + Duration::from_secs(5);
    loop {
        if let Some(status) = launcher
            .try_wait()
            .context("cannot watch the background launcher")?
        {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "comb did not start ({status}); its output:\n{}",
                tail(&output, 30)
            );
        }
        if let Some(state) = running_launcher(layout)?
            && let Ok(status) = fetch_status(&state).await
            && status.ready
        {
            print_detached(&state, &status, started.elapsed(), layout);
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > deadline {
            let _ = launcher.kill();
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "comb was not ready after {} s; its output:\n{}",
                deadline.as_secs(),
                tail(&output, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_detached(state: &LauncherState, status: &SystemStatus, took: Duration, layout: &Layout) {
    println!(
        "comb is up in the background: {} instances ready in {:.2} s (launcher pid {})",
        status.instances.len(),
        took.as_secs_f64(),
        state.pid
    );
    if let Some(url) = &status.gateway_url {
        println!("gateway: {url}   try: curl {url}/api/v1/products");
    }
    println!("dashboard: {}/", state.control_url);
    let workers = status
        .instances
        .iter()
        .any(|instance| instance.service == "media-worker");
    if let Some(note) = media_tools_note(workers) {
        println!("{note}");
    }
    let data_dir = layout.root.display();
    println!(
        "status: comb status --data-dir {data_dir}   logs: comb logs -f --data-dir {data_dir}   stop: comb down --data-dir {data_dir}"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A new secret for this system's operator actions (the instances' fault endpoints, the
/// launcher's unredacted database list), kept where `comb chaos` finds it and readable by
/// this user alone.
fn new_operator_token(layout: &Layout) -> anyhow::Result<String> {
    use rand::Rng;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let path = layout.operator_token_file();
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write the operator token to {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("cannot write the operator token to {}", path.display()))?;
    Ok(token)
}
