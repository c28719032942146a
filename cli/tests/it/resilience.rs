//! Resilience of the running system: instances killed under load without breaking an
//! invariant, a service scaled under load, a slow service behind an open breaker, and
//! product pages that outlive their reviews and recommendations.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Comb, eventually, repo_topology, text};

/// The repository's topology with more instances of some services.
fn topology_with(replicas: &[(&str, u32)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut topology = std::fs::read_to_string(repo_topology()).unwrap();
    for (service, count) in replicas {
        let section = format!("[services.{service}]\nreplicas = 1\n");
        assert!(topology.contains(&section), "no {service} in comb.toml");
        topology = topology.replace(
            &section,
            &format!("[services.{service}]\nreplicas = {count}\n"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comb.toml");
    std::fs::write(&path, topology).unwrap();
    (dir, path)
}

/// `comb ARGS --data-dir DIR` started in the background.
fn spawn(comb: &Comb, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_comb"))
        .args(args)
        .arg("--data-dir")
        .arg(comb.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The requests an instance has served, probes and scrapes left out.
async fn served(comb: &Comb, address: &str) -> f64 {
    let body = comb
        .http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|line| line.starts_with("http_server_requests_total{"))
        .filter(|line| {
            !["/healthz", "/readyz", "/metrics"]
                .iter()
                .any(|p| line.contains(&format!("route=\"{p}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn addresses(comb: &Comb, service: &str) -> Vec<String> {
    addresses_of(comb, service, "address")
}

/// The admin listeners (`/metrics`) of a service's instances.
fn admin_addresses(comb: &Comb, service: &str) -> Vec<String> {
    addresses_of(comb, service, "admin_address")
}

fn addresses_of(comb: &Comb, service: &str, which: &str) -> Vec<String> {
    comb.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == service)
        .map(|i| i[which].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn killing_instances_under_load_breaks_no_invariant() {
    let (_dir, topology) = topology_with(&[("orders", 2), ("inventory", 2), ("payments", 2)]);
    let Some(comb) = Comb::system(&topology) else {
        return;
    };
    let load = spawn(
        &comb,
        &[
            "load",
            "--users",
            "6",
            "--duration",
            "62s",
            "--json",
            "--quiet",
        ],
    );
    let chaos = comb.run(&["chaos", "kill", "--every", "2s", "--for", "60s"]);
    assert!(chaos.status.success(), "{}", text(&chaos));
    let kills = String::from_utf8_lossy(&chaos.stdout)
        .lines()
        .filter(|line| line.contains("killed") && line.contains("pid"))
        .count();
    assert!(kills >= 20, "{kills} kills:\n{}", text(&chaos));
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "{}", text(&load));

    // The summary is JSON on stdout, and a table for people on stderr.
    let summary: Value = serde_json::from_slice(&load.stdout).unwrap();
    let table = String::from_utf8_lossy(&load.stderr);
    assert!(
        table.contains("operation") && table.contains("p99.9 ms"),
        "{table}"
    );
    // Instances killed during the run are named; the CPU of the rest is still counted.
    let cpu = &summary["cpu"];
    assert!(cpu["seconds"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(!cpu["restarted"].as_array().unwrap().is_empty(), "{cpu}");
    assert!(
        cpu["services"]["gateway"]["seconds"].as_f64().unwrap() > 0.0,
        "{cpu}"
    );
    let operations = &summary["operations"];
    for name in ["browse", "search", "product", "checkout"] {
        assert!(
            operations[name]["count"].as_u64().unwrap() > 0,
            "no {name}: {summary}"
        );
    }
    let reads: u64 = ["browse", "search"]
        .iter()
        .map(|name| operations[name]["count"].as_u64().unwrap())
        .sum();
    let read_errors: u64 = ["browse", "search"]
        .iter()
        .map(|name| operations[name]["errors"].as_u64().unwrap())
        .sum();
    assert!(
        read_errors as f64 <= reads as f64 * 0.01,
        "{read_errors} errors in {reads} browse and search requests: {summary}"
    );

    let check = comb.run(&["chaos", "check", "--settle", "60s", "--json"]);
    let verdicts: Vec<Value> =
        serde_json::from_slice(&check.stdout).unwrap_or_else(|_| panic!("{}", text(&check)));
    assert_eq!(verdicts.len(), 4);
    assert!(
        check.status.success() && verdicts.iter().all(|v| v["ok"] == true),
        "{verdicts:#?}"
    );
    assert!(
        verdicts[0]["detail"]
            .as_str()
            .unwrap()
            .contains(" confirmed"),
        "{verdicts:#?}"
    );
}

#[tokio::test]
async fn scaling_catalog_under_load_spreads_calls_over_every_instance() {
    let Some(comb) = Comb::system(&repo_topology()) else {
        return;
    };
    let load = spawn(
        &comb,
        &[
            "load",
            "--users",
            "4",
            "--duration",
            "20s",
            // The gateway keeps what it read from the catalog while the catalog's data
            // stands, so browsing alone soon stops reaching it; carts price every added
            // line with the catalog.
            "--mix",
            "browse=3,search=1,product=2,checkout=2",
            "--quiet",
        ],
    );
    let scaled = comb.run(&["scale", "catalog=3"]);
    assert!(scaled.status.success(), "{}", text(&scaled));
    let catalogs = admin_addresses(&comb, "catalog");
    assert_eq!(catalogs.len(), 3);
    let targets =
        std::fs::read_to_string(comb.dir.path().join("data/prometheus/targets.json")).unwrap();
    assert_eq!(targets.matches("\"catalog-").count(), 3, "{targets}");

    let mut before = Vec::new();
    for address in &catalogs {
        before.push(served(&comb, address).await);
    }
    eventually(
        "every catalog instance serving",
        Duration::from_secs(15),
        || async {
            for (address, then) in catalogs.iter().zip(&before) {
                if served(&comb, address).await <= *then + 5.0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let scaled = comb.run(&["scale", "catalog=1"]);
    assert!(scaled.status.success(), "{}", text(&scaled));
    assert_eq!(addresses(&comb, "catalog").len(), 1);
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "{}", text(&load));
    let table = String::from_utf8_lossy(&load.stdout);
    let total = table
        .lines()
        .find(|line| line.starts_with("total"))
        .unwrap();
    let errors: u64 = total.split_whitespace().nth(2).unwrap().parse().unwrap();
    let count: u64 = total.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(errors as f64 <= count as f64 * 0.01, "{table}");
}

#[tokio::test]
async fn a_slow_service_trips_the_breaker_and_recovers() {
    let Some(comb) = Comb::system(&repo_topology()) else {
        return;
    };
    let gateway = comb.gateway();
    let products = format!("{gateway}/api/v1/products?limit=2");
    assert_eq!(comb.http.get(&products).send().await.unwrap().status(), 200);

    // Slower than the 2 s call deadline.
    let injected = comb.run(&["chaos", "inject", "catalog", "--latency", "3s"]);
    assert!(injected.status.success(), "{}", text(&injected));
    // Each search is new, so the gateway has nothing kept to answer it with and must ask
    // the catalog (a list it has read is still served from what it keeps: the catalog's
    // version has not moved).
    let search = |n: usize| format!("{gateway}/api/v1/search?q=slowly{n}");
    let mut slow = Vec::new();
    for n in 0..6 {
        let http = comb.http.clone();
        let url = search(n);
        slow.push(tokio::spawn(async move {
            http.get(&url).send().await.unwrap().status()
        }));
    }
    for call in slow {
        assert_eq!(call.await.unwrap(), 503);
    }
    // Open: callers fail fast instead of queueing behind the slow service.
    let started = Instant::now();
    let failed = comb.http.get(search(6)).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(failed.status(), 503);
    assert!(failed.headers().contains_key("retry-after"));
    let problem: Value = failed.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("paused"),
        "{problem}"
    );
    assert!(took < Duration::from_millis(1_000), "took {took:?}");
    let gateway_admin = admin_addresses(&comb, "gateway").remove(0);
    let metrics = comb
        .http
        .get(format!("http://{gateway_admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("comb_client_breaker_open{upstream=\"catalog\"} 1"),
        "{metrics}"
    );

    let cleared = comb.run(&["chaos", "clear", "catalog"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
    eventually(
        "the catalog answering again",
        Duration::from_secs(15),
        || async {
            let response = comb.http.get(search(7)).send().await.ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn product_pages_outlive_their_reviews_and_recommendations() {
    let Some(comb) = Comb::system(&repo_topology()) else {
        return;
    };
    let gateway = comb.gateway();
    let page: Value = comb
        .http
        .get(format!("{gateway}/api/v1/products?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let product_page = format!("{gateway}/api/v1/products/{id}");
    let whole: Value = comb
        .http
        .get(&product_page)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["unavailable"], serde_json::json!([]), "{whole}");
    assert!(whole["reviews"].is_array() && whole["recommendations"].is_array());

    for service in ["reviews", "recommendations"] {
        let stopped = comb.run(&["scale", &format!("{service}=0")]);
        assert!(stopped.status.success(), "{}", text(&stopped));
    }
    assert!(addresses(&comb, "reviews").is_empty());

    let mut took = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let response = comb.http.get(&product_page).send().await.unwrap();
        took.push(started.elapsed());
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["id"], id.as_str());
        assert_eq!(
            page["unavailable"],
            serde_json::json!(["reviews", "recommendations"]),
            "{page}"
        );
        assert!(page["reviews"].is_null() && page["recommendations"].is_null());
    }
    took.sort();
    let p99 = took[98];
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");

    // Back again, and the page is whole again.
    let restored = comb.run(&["scale", "reviews=1", "recommendations=1"]);
    assert!(restored.status.success(), "{}", text(&restored));
    eventually("a whole page again", Duration::from_secs(20), || async {
        let page: Value = comb
            .http
            .get(&product_page)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (page["unavailable"] == serde_json::json!([])).then_some(())
    })
    .await;
}
