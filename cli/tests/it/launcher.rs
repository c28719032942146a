use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{Comb, eventually, pid_alive, repo_topology, text};

fn signal(pid: u64, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
}

/// The repository's topology with a slower first restart than the default, written in
/// `dir`, so an outage or a squatted port is long enough to observe.
fn slow_restarts(dir: &std::path::Path) -> std::path::PathBuf {
    let topology = std::fs::read_to_string(repo_topology())
        .unwrap()
        .replace("restart_backoff_ms = 250", "restart_backoff_ms = 1500");
    assert!(topology.contains("restart_backoff_ms = 1500"));
    let path = dir.join("comb.toml");
    std::fs::write(&path, topology).unwrap();
    path
}

/// Waits until the gateway lists products.
async fn products_answer(comb: &Comb, what: &str, within: Duration) {
    eventually(what, within, || async {
        let response = comb.get("/api/v1/products").await?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn up_serves_the_seeded_catalog_from_separate_processes_and_down_stops_them() {
    let comb = Comb::up(&repo_topology());
    let response = comb.get("/api/v1/products").await.unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert!(
        page["next_cursor"].is_string(),
        "more than one page of seeded products"
    );

    let status = comb.status();
    assert_eq!(status["ready"], true);
    let instances = status["instances"].as_array().unwrap();
    let names: Vec<&str> = instances
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gateway-1",
            "cart-1",
            "catalog-1",
            "inventory-1",
            "media-1",
            "media-worker-1",
            "notifications-1",
            "orders-1",
            "payments-1",
            "recommendations-1",
            "reports-1",
            "reviews-1",
            "shipping-1",
            "users-1"
        ]
    );
    let pids: Vec<u64> = instances
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&u64> = pids.iter().collect();
    assert_eq!(
        distinct.len(),
        pids.len(),
        "each instance is its own process"
    );
    assert!(
        pids.iter()
            .all(|pid| pid_alive(*pid) && *pid != u64::from(std::process::id()))
    );
    for instance in instances {
        assert_eq!(instance["health"], "ready");
        assert_eq!(instance["restarts"], 0);
    }
    // Each instance has its own data directory; the catalog's database is its own file.
    let data = comb.dir.path().join("data");
    assert!(data.join("instances/catalog-1").is_dir() && data.join("instances/gateway-1").is_dir());
    assert!(data.join("services/catalog/catalog.db").is_file());
    // A real Prometheus finds every instance through this file.
    let targets: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("prometheus/targets.json")).unwrap(),
    )
    .unwrap();
    let groups = targets.as_array().unwrap();
    assert_eq!(groups.len(), instances.len());
    for instance in instances {
        assert!(
            groups
                .iter()
                .any(|group| group["targets"][0] == instance["admin_address"]
                    && group["labels"]["service"] == instance["service"]
                    && group["labels"]["comb_instance"] == instance["instance"]),
            "{instance} is a target: {targets}"
        );
    }
    assert!(
        data.join("services/users/users.db").is_file(),
        "and the users' is another"
    );

    // A request that crosses gateway and users: register, then ask who we are.
    let registered = comb
        .http
        .post(format!("{}/api/v1/auth/register", comb.gateway()))
        .json(&serde_json::json!({"email": "sys@example.com", "password": "a long enough secret", "name": "Sys"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let token = registered.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me: Value = comb
        .http
        .get(format!("{}/api/v1/me", comb.gateway()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "sys@example.com");

    let table = comb.run(&["status"]);
    assert!(text(&table).contains("catalog-1"), "{}", text(&table));
    let logs = comb.run(&["logs", "catalog"]);
    assert!(text(&logs).contains("listening"), "{}", text(&logs));
    let access = std::fs::read_to_string(data.join("logs/gateway-1.log")).unwrap();
    assert!(
        access
            .lines()
            .any(|line| line.contains("\"target\":\"access\"")
                && line.contains("\"path\":\"/api/v1/products\"")
                && line.contains("\"status\":200")
                && line.contains("\"request_id\"")),
        "the gateway writes an access log line: {access}"
    );
    let stored = std::fs::read_to_string(data.join("logs/catalog-1.log")).unwrap();
    assert!(stored.lines().count() >= 2);
    for line in stored.lines() {
        let line: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON log line: {line}"));
        assert_eq!(line["service"], "catalog", "{line}");
        assert_eq!(line["instance"], "catalog-1", "{line}");
        assert!(
            line["ts"].is_string() && line["level"].is_string() && line["msg"].is_string(),
            "{line}"
        );
    }

    let down = comb.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids {
        assert!(!pid_alive(pid), "instance {pid} stopped with the system");
    }
    let status = comb.run(&["status"]);
    assert!(!status.status.success());
    assert!(text(&status).contains("not running"), "{}", text(&status));
}

#[tokio::test]
async fn a_killed_catalog_means_503_until_the_supervisor_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let comb = Comb::up(&slow_restarts(dir.path()));
    assert_eq!(comb.get("/api/v1/products").await.unwrap().status(), 200);

    let catalog = comb.instance("catalog-1");
    let old_pid = catalog["pid"].as_u64().unwrap();
    signal(old_pid, Signal::SIGKILL);

    let outage = eventually(
        "a 503 while the catalog is down",
        Duration::from_secs(5),
        || async {
            let response = comb.get("/api/v1/products").await?;
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    assert_eq!(outage.headers()["content-type"], "application/problem+json");
    let problem: Value = outage.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("catalog"),
        "{problem}"
    );

    products_answer(
        &comb,
        "the catalog back after its restart",
        Duration::from_secs(30),
    )
    .await;
    let catalog = comb.instance("catalog-1");
    assert_eq!(catalog["restarts"], 1, "{catalog}");
    assert_ne!(catalog["pid"].as_u64().unwrap(), old_pid);
    assert!(
        catalog["last_exit"].as_str().unwrap().contains("signal 9"),
        "{catalog}"
    );
    assert_eq!(
        comb.instance("gateway-1")["restarts"],
        0,
        "the gateway was left alone"
    );
}

#[tokio::test]
async fn instances_report_the_ports_they_bound_and_keep_them_unless_taken() {
    let dir = tempfile::tempdir().unwrap();
    let comb = Comb::up(&slow_restarts(dir.path()));
    let catalog = comb.instance("catalog-1");
    let address = catalog["address"].as_str().unwrap().to_owned();
    let admin_address = catalog["admin_address"].as_str().unwrap().to_owned();
    // What the instance wrote once it listened is what the launcher publishes.
    let reported: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(&comb.data_dir()).join("instances/catalog-1/addresses.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reported["listen"], address.as_str());
    assert_eq!(reported["admin"], admin_address.as_str());
    assert!(!address.ends_with(":0") && !admin_address.ends_with(":0"));

    // A restart is given the port it had.
    signal(catalog["pid"].as_u64().unwrap(), Signal::SIGKILL);
    let back = eventually("catalog-1 ready again", Duration::from_secs(30), || async {
        let catalog = comb.instance("catalog-1");
        (catalog["restarts"] == 1 && catalog["health"] == "ready").then_some(catalog)
    })
    .await;
    assert_eq!(back["address"], address.as_str(), "{back}");

    // Once another program holds that port, the instance binds another one and callers
    // are told so.
    signal(back["pid"].as_u64().unwrap(), Signal::SIGKILL);
    let squatter = eventually("the old port free", Duration::from_secs(5), || async {
        std::net::TcpListener::bind(&address).ok()
    })
    .await;
    let moved = eventually(
        "catalog-1 ready elsewhere",
        Duration::from_secs(30),
        || async {
            let catalog = comb.instance("catalog-1");
            (catalog["health"] == "ready" && catalog["address"] != address.as_str())
                .then_some(catalog)
        },
    )
    .await;
    assert!(
        moved["last_exit"].as_str().unwrap().contains("exited"),
        "the start given the taken port failed: {moved}"
    );
    products_answer(
        &comb,
        "products through the gateway",
        Duration::from_secs(10),
    )
    .await;
    drop(squatter);
}

#[tokio::test]
async fn instances_stop_when_their_launcher_is_killed() {
    let comb = Comb::up(&repo_topology());
    let status = comb.status();
    let launcher = status["launcher_pid"].as_u64().unwrap();
    let pids: Vec<u64> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    signal(launcher, Signal::SIGKILL);
    eventually(
        "orphaned instances to stop",
        Duration::from_secs(15),
        || async { pids.iter().all(|pid| !pid_alive(*pid)).then_some(()) },
    )
    .await;
    let status = comb.run(&["status"]);
    assert!(
        text(&status).contains("not running"),
        "a stale state file is noticed: {}",
        text(&status)
    );
}

#[tokio::test]
async fn mistakes_are_refused_with_advice() {
    let comb = Comb::up(&repo_topology());
    let again = comb.try_up(&repo_topology(), &[], &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[services.gateway]\ncalls = [\"nowhere\"]\n").unwrap();
    let output = comb.run(&["up", "--config", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(text(&output).contains("not a service"), "{}", text(&output));

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[services.teleporter]\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_comb"))
        .args([
            "up",
            "--gateway-port",
            "0",
            "--dashboard-port",
            "0",
            "--config",
            unknown.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("cannot run"), "{}", text(&output));

    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_comb"))
        .args(["serve", "teleporter"])
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(
        text(&serve).contains(
            "comb runs cart, catalog, gateway, inventory, media, media-worker, notifications, orders, payments, recommendations, reports, reviews, shipping, users"
        ),
        "{}",
        text(&serve)
    );
}

#[tokio::test]
async fn ctrl_c_stops_a_foreground_system() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let comb = Comb::unstarted();
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_comb"))
        .args([
            "up",
            "--gateway-port",
            "0",
            "--dashboard-port",
            "0",
            "--config",
        ])
        .arg(repo_topology())
        .arg("--data-dir")
        .arg(comb.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let stdout = launcher.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut output = Vec::new();
    // The banner: "comb is up ...", where the gateway listens, then the dashboard.
    while !output
        .iter()
        .any(|line: &String| line.contains("dashboard: http://"))
    {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("comb up never said it was up: {output:#?}"));
        output.push(line);
    }
    assert!(
        output.iter().any(|line| line.contains("comb is up")),
        "{output:#?}"
    );
    let gateway_line = output.iter().find(|line| line.contains("gateway: http://"));
    let status = comb.status();
    let gateway = status["gateway_url"].as_str().unwrap();
    assert!(
        gateway_line.is_some_and(|line| line.contains(gateway)),
        "comb up says where the gateway listens: {output:#?}"
    );
    let dashboard_line = output
        .iter()
        .find(|line| line.contains("dashboard: http://"))
        .unwrap();
    let dashboard = dashboard_line
        .split("dashboard: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let page = comb.http.get(&dashboard).send().await.unwrap();
    assert_eq!(page.status(), 200, "the printed dashboard address answers");
    assert!(page.text().await.unwrap().contains("instances ready"));
    let pids: Vec<u64> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();

    signal(u64::from(launcher.id()), Signal::SIGINT);
    let exited = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || launcher.wait()),
    )
    .await
    .expect("comb up stops on Ctrl-C")
    .unwrap()
    .unwrap();
    assert!(exited.success(), "{exited}");
    reader.join().unwrap();
    output.extend(received.try_iter());
    assert_eq!(
        output.last().map(String::as_str),
        Some("comb | stopped"),
        "{output:#?}"
    );
    for instance in ["gateway-1", "catalog-1"] {
        let streamed = |needle: &str| {
            output
                .iter()
                .any(|line| line.starts_with(instance) && line.contains(needle))
        };
        assert!(
            streamed("listening"),
            "{instance}'s logs are streamed with its name: {output:#?}"
        );
        assert!(
            streamed("draining"),
            "{instance} drained instead of being killed: {output:#?}"
        );
    }
    assert!(
        pids.iter().all(|pid| !pid_alive(*pid)),
        "every instance stopped"
    );
    assert!(
        !comb.dir.path().join("data/launcher.json").exists(),
        "the state file is removed"
    );
}
