//! The commands that inspect or stop a running system from another terminal: `status`,
//! `logs` and `down`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::launcher::control::{ScaleOutcome, ScaleRequest};
use crate::launcher::control::{fetch_status, is_alive, running_launcher};
use crate::launcher::logs::{LogFilter, log_files, prefixed, read_logs, render};
use crate::launcher::plan::Layout;
use crate::{DataDirArg, LogsArgs, ScaleArgs, StatusArgs};

/// How long `comb down` waits for the launcher to stop its instances.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn not_running(layout: &Layout) -> String {
    format!(
        "comb is not running from {} (start it with `comb up`, or pass the --data-dir it was started with)",
        layout.root.display()
    )
}

/// `comb status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.data_dir.data_dir)?;
    let Some(state) = running_launcher(&layout)? else {
        eprintln!("{}", not_running(&layout));
        return Ok(ExitCode::FAILURE);
    };
    let status = fetch_status(&state).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "comb {} (launcher pid {}, data in {})",
        if status.ready {
            "is ready"
        } else {
            "is NOT ready"
        },
        status.launcher_pid,
        status.data_dir
    );
    if let Some(url) = &status.gateway_url {
        println!("gateway: {url}");
    }
    println!();
    println!(
        "{:<12} {:<14} {:>8} {:<21} {:<10} {:>8} {:>9} {:>8}",
        "SERVICE", "INSTANCE", "PID", "ADDRESS", "HEALTH", "RESTARTS", "UPTIME", "CPU"
    );
    for instance in &status.instances {
        println!(
            "{:<12} {:<14} {:>8} {:<21} {:<10} {:>8} {:>9} {:>8}",
            instance.service,
            instance.instance,
            instance
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            instance.address,
            serde_json::to_value(instance.health)?
                .as_str()
                .unwrap_or_default(),
            instance.restarts,
            instance
                .uptime_secs
                .map_or_else(|| "-".to_owned(), format_uptime),
            instance
                .cpu_seconds
                .map_or_else(|| "-".to_owned(), |seconds| format!("{seconds:.2}s")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn format_uptime(seconds: f64) -> String {
    let whole = seconds as u64;
    match whole {
        0..=59 => format!("{whole}s"),
        60..=3599 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
    }
}

/// `comb down`.
pub async fn down(args: DataDirArg) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.data_dir)?;
    let Some(state) = running_launcher(&layout)? else {
        println!("{}", not_running(&layout));
        return Ok(ExitCode::SUCCESS);
    };
    // Only a launcher that answers as itself is signalled: a pid from an old state file may
    // belong to another process by now.
    let answering = fetch_status(&state)
        .await
        .is_ok_and(|status| status.launcher_pid == state.pid);
    if !answering {
        anyhow::bail!(
            "the launcher recorded in {} (pid {}) does not answer at {}; not signalling it. If comb is not running, remove that file",
            layout.state_file().display(),
            state.pid,
            state.control_url
        );
    }
    let pid =
        Pid::from_raw(i32::try_from(state.pid).context("the launcher's pid is out of range")?);
    kill(pid, Signal::SIGTERM)
        .with_context(|| format!("cannot signal the launcher (pid {})", state.pid))?;
    let started = Instant::now();
    while is_alive(state.pid) {
        if started.elapsed() > DOWN_TIMEOUT {
            let _ = kill(pid, Signal::SIGKILL);
            println!(
                "comb did not stop within {} s; killed the launcher (its instances stop when they notice)",
                DOWN_TIMEOUT.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("comb stopped ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// `comb logs`: the stored lines of every matching instance, oldest first; with
/// `--follow`, then new lines as they come. `--trace` and `--level` narrow them down.
pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.data_dir.data_dir)?;
    let dir = layout.logs_dir();
    let filter = LogFilter {
        level: args.level.map(|level| level.as_str().to_owned()),
        trace: args.trace.as_deref().map(str::to_ascii_lowercase),
    };
    let files = log_files(&dir, args.service.as_deref())?;
    if files.is_empty() && !args.follow {
        eprintln!(
            "no logs{} in {}",
            args.service
                .as_deref()
                .map(|s| format!(" for {s}"))
                .unwrap_or_default(),
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
    for (instance, path) in &files {
        let length = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        offsets.insert(instance.clone(), length);
    }
    for line in read_logs(&dir, args.service.as_deref(), &filter, usize::MAX)? {
        print_line(&line.instance, &line.text, args.raw);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (instance, path) in log_files(&dir, args.service.as_deref())? {
            let offset = offsets.entry(instance.clone()).or_insert(0);
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            if length < *offset {
                *offset = 0;
            }
            if length == *offset {
                continue;
            }
            file.seek(SeekFrom::Start(*offset))?;
            let mut fresh = String::new();
            file.read_to_string(&mut fresh)?;
            // Only whole lines; a partial last line waits for its end.
            let complete = fresh.rfind('\n').map_or(0, |end| end + 1);
            for line in fresh[..complete]
                .lines()
                .filter(|line| filter.matches(line))
            {
                print_line(&instance, line, args.raw);
            }
            *offset += complete as u64;
        }
    }
}

/// `SERVICE=N`.
fn scale_target(text: &str) -> anyhow::Result<ScaleRequest> {
    let (service, replicas) = text
        .split_once('=')
        .with_context(|| format!("{text:?} is not SERVICE=N (for example catalog=3)"))?;
    let replicas: u32 = replicas
        .trim()
        .parse()
        .with_context(|| format!("the count in {text:?} must be a whole number"))?;
    Ok(ScaleRequest {
        service: service.trim().to_owned(),
        replicas,
    })
}

/// `comb scale SERVICE=N ...`: asks the launcher, then waits until the service runs
/// exactly the instances asked for, all ready.
pub async fn scale(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.data_dir.data_dir)?;
    let requests = args
        .targets
        .iter()
        .map(|target| scale_target(target))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Some(state) = running_launcher(&layout)? else {
        eprintln!("{}", not_running(&layout));
        return Ok(ExitCode::FAILURE);
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for request in &requests {
        let response = client
            .post(format!("{}/scale", state.control_url))
            .json(request)
            .send()
            .await
            .with_context(|| format!("the launcher does not answer at {}", state.control_url))?;
        if !response.status().is_success() {
            let why = response.text().await.unwrap_or_default();
            eprintln!("comb scale: {} not scaled: {why}", request.service);
            return Ok(ExitCode::FAILURE);
        }
        let outcome: ScaleOutcome = response.json().await?;
        println!(
            "{}: {} instance{}{}{}",
            request.service,
            request.replicas,
            if request.replicas == 1 { "" } else { "s" },
            if outcome.added.is_empty() {
                String::new()
            } else {
                format!(", starting {}", outcome.added.join(", "))
            },
            if outcome.removed.is_empty() {
                String::new()
            } else {
                format!(", draining {}", outcome.removed.join(", "))
            },
        );
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    loop {
        let status = fetch_status(&state).await?;
        let settled = requests.iter().all(|request| {
            let instances: Vec<_> = status
                .instances
                .iter()
                .filter(|i| i.service == request.service)
                .collect();
            instances.len() == request.replicas as usize
                && instances
                    .iter()
                    .all(|i| i.health == crate::launcher::supervisor::Health::Ready)
        });
        if settled {
            println!("done in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("comb scale: not settled after 60 s; see `comb status` and `comb logs`");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_line(instance: &str, line: &str, raw: bool) {
    if raw {
        println!("{line}");
    } else {
        println!("{}", prefixed(instance, &render(line), None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_naturally() {
        assert_eq!(format_uptime(5.2), "5s");
        assert_eq!(format_uptime(125.0), "2m05s");
        assert_eq!(format_uptime(7300.0), "2h01m");
    }

    #[test]
    fn log_files_match_a_service_or_an_instance() {
        let dir = tempfile::tempdir().expect("dir");
        for name in [
            "catalog-1.log",
            "catalog-2.log",
            "gateway-1.log",
            "catalog-admin-1.log",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let names = |filter| -> Vec<String> {
            log_files(dir.path(), filter)
                .expect("list")
                .into_iter()
                .map(|(instance, _)| instance)
                .collect()
        };
        assert_eq!(names(Some("catalog")), ["catalog-1", "catalog-2"]);
        assert_eq!(names(Some("catalog-2")), ["catalog-2"]);
        assert_eq!(names(None).len(), 4);
    }
}
