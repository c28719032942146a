//! What comb's requests cost: `comb load` reports the CPU each service used, per request
//! when a run has one kind of operation, and `scripts/bench` prints the whole table. These
//! tests check that the figures are there and add up, never what they are: timings belong
//! to benchmarks, not tests.

use std::process::Command;

use serde_json::Value;

use crate::support::{Comb, repo_topology, text};

fn load(comb: &Comb, args: &[&str]) -> Value {
    let mut all = vec!["load", "--json", "--quiet", "--duration", "3s"];
    all.extend_from_slice(args);
    let output = comb.run(&all);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)))
}

#[test]
fn comb_load_reports_the_cpu_of_each_service_per_request() {
    let comb = Comb::up(&repo_topology());
    let summary = load(
        &comb,
        &["--get", "/api/v1/products?limit=20", "--users", "4"],
    );
    let count = summary["operations"]["get"]["count"].as_u64().unwrap();
    assert!(count > 0, "{summary}");
    let cpu = &summary["cpu"];
    assert_eq!(cpu["operation"], "get", "{summary}");
    let per_request = cpu["per_operation_us"].as_f64().unwrap();
    let seconds = cpu["seconds"].as_f64().unwrap();
    assert!(per_request > 0.0 && seconds > 0.0, "{cpu}");
    // The figure per request is the run's CPU divided by its requests.
    assert!(
        (per_request - seconds * 1e6 / count as f64).abs() < 1.0,
        "{cpu}"
    );
    let services = cpu["services"].as_object().unwrap();
    // The gateway answers every list (from the answers it keeps, so the catalog may work
    // for less than the one clock tick the figures can see) and the launcher takes every
    // request's spans.
    for service in ["gateway", "launcher"] {
        assert!(
            services[service]["seconds"].as_f64().unwrap() > 0.0,
            "{service} used no CPU serving product lists: {cpu}"
        );
    }
    assert!(
        services["catalog"]["seconds"].as_f64().is_some(),
        "every service is listed, the catalog too: {cpu}"
    );
    let summed: f64 = services
        .values()
        .map(|service| service["seconds"].as_f64().unwrap())
        .sum();
    assert!((summed - seconds).abs() < 1e-6, "{cpu}");

    // A checkout-only run is also measured per confirmed order.
    let summary = load(&comb, &["--mix", "checkout=100", "--users", "2"]);
    let confirmed = summary["operations"]["checkout"]["confirmed"]
        .as_u64()
        .unwrap();
    assert!(confirmed > 0, "{summary}");
    let cpu = &summary["cpu"];
    assert_eq!(cpu["operation"], "checkout");
    let per_order = cpu["per_confirmed_order_us"].as_f64().unwrap();
    assert!(
        (per_order - cpu["seconds"].as_f64().unwrap() * 1e6 / confirmed as f64).abs() < 1.0,
        "{cpu}"
    );
    assert!(
        cpu["services"]["orders"]["per_operation_us"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{cpu}"
    );

    // A mix is measured for the whole run only.
    let summary = load(&comb, &["--mix", "browse=1,search=1", "--users", "2"]);
    assert!(summary["cpu"]["operation"].is_null(), "{summary}");
    assert!(summary["cpu"]["per_operation_us"].is_null(), "{summary}");
    assert!(summary["cpu"]["seconds"].as_f64().unwrap() > 0.0);

    // Instances report their CPU time to `comb status`.
    let status = comb.status();
    assert!(status["launcher_cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|instance| instance["cpu_seconds"].as_f64().is_some()),
        "{status}"
    );
}

#[test]
fn the_bench_script_prints_every_row() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "python3 is required on CI for scripts/bench"
        );
        eprintln!("skipped: scripts/bench needs python3");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench");
    let output = Command::new("python3")
        .arg(script)
        .env("QUICK", "1")
        .env("COMB", env!("CARGO_BIN_EXE_comb"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    for row in [
        "gateway /healthz (baseline)",
        "GET /api/v1/products?limit=20",
        "GET /api/v1/products/{id}",
        "GET /api/v1/search?q=love",
        "storefront /",
        "storefront product page",
        "closed loop, 32 users",
        // QUICK=1 runs the open loop at 20 checkouts a second.
        "open loop, 20 checkouts/s",
    ] {
        let line = printed
            .lines()
            .find(|line| line.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}:\n{printed}"));
        let figures: Vec<f64> = line[row.len()..]
            .split_whitespace()
            .take(4)
            .filter_map(|figure| figure.replace(',', "").parse().ok())
            .collect();
        assert_eq!(figures.len(), 4, "row {row:?} lacks its figures: {line}");
        assert!(figures[0] > 0.0, "row {row:?} measured nothing: {line}");
    }
    if which("nginx") && which("wrk") {
        assert!(
            printed.contains("nginx → gateway /healthz (baseline)"),
            "{printed}"
        );
    }
    assert!(
        printed.contains("comb chaos check after the checkouts: passed"),
        "{printed}"
    );
}

#[test]
fn the_media_bench_script_prints_every_line() {
    if !crate::media::ffmpeg_present() {
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/media-bench");
    let output = Command::new("python3")
        .arg(script)
        .env("QUICK", "1")
        .env("COMB", env!("CARGO_BIN_EXE_comb"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    let throughput = printed
        .lines()
        .find(|line| line.starts_with("worker throughput"))
        .unwrap_or_else(|| panic!("no throughput line:\n{printed}"));
    assert!(
        throughput.contains("1 worker") && throughput.contains("2 workers"),
        "{throughput}"
    );
    for label in ["1. workers idle", "1. 2 workers transcoding"] {
        let line = printed
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?}:\n{printed}"));
        assert!(line.contains(" 0 errors"), "{line}");
    }
    assert!(printed.contains("median p99"), "{printed}");
    assert!(printed.contains("chaos check: passed"), "{printed}");
}

fn which(program: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .any(|dir| std::path::Path::new(dir).join(program).exists())
}
