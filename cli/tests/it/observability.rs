//! Observability of the running system: one trace per checkout across the services, on the
//! dashboard (rendered by headless Chromium), in the logs and at an OTLP receiver; every
//! instance's metrics scraped by a real Prometheus through the discovery file.
//! Long because each signal (traces, logs, metrics, OTLP export) needs its own running
//! system and its own reader.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::{Value, json};

use crate::{Comb, eventually, repo_topology, text, trace_id};

/// One span as an OTLP receiver got it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    instance: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
}

/// A local OTLP/HTTP receiver keeping every span that arrives.
struct OtlpReceiver {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl OtlpReceiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let kept = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                let mut kept = kept.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let attribute = |key: &str| {
                        resource_spans
                            .resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                            .and_then(|a| a.value.as_ref()?.value.as_ref())
                            .map(|value| match value {
                                any_value::Value::StringValue(text) => text.clone(),
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default()
                    };
                    let service = attribute("service.name");
                    let instance = attribute("service.instance.id");
                    for scope in &resource_spans.scope_spans {
                        for span in &scope.spans {
                            kept.push(ReceivedSpan {
                                service: service.clone(),
                                instance: instance.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                name: span.name.clone(),
                            });
                        }
                    }
                }
                ""
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    fn of_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// A guest buys one music product; the order and the trace its request became.
async fn checkout(comb: &Comb, email: &str) -> (Value, String) {
    let gateway = comb.gateway();
    let http = &comb.http;
    let page: Value = http
        .get(format!("{gateway}/api/v1/products?kind=music&limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = page["items"][0]["id"].as_str().unwrap().to_owned();
    let guest: Value = http
        .post(format!("{gateway}/api/v1/auth/guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = guest["token"].as_str().unwrap().to_owned();
    let added = http
        .post(format!("{gateway}/api/v1/cart/items"))
        .bearer_auth(&token)
        .json(&json!({"product_id": product, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let placed = http
        .post(format!("{gateway}/api/v1/orders"))
        .bearer_auth(&token)
        .json(&json!({
            "email": email,
            "shipping_address": {"name": "A", "line1": "1 Way", "city": "Town", "postal_code": "1000", "country": "US"},
            "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let trace_id = trace_id(&placed);
    (placed.json().await.unwrap(), trace_id)
}

/// Debian's Chromium, or `None` (and why) off CI; on CI it must be there.
pub(crate) fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| which(name));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is required on CI (.ci/run installs Debian's chromium)"
        );
        eprintln!("skipping the browser checks: no chromium on PATH (apt-get install chromium)");
    }
    found
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The page at `url` as headless Chromium renders it (its DOM after loading).
fn render(chromium: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_checkout_is_one_trace_across_the_services() {
    let receiver = OtlpReceiver::start().await;
    let Some(comb) = Comb::system_with_env(
        &repo_topology(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str())],
    ) else {
        return;
    };
    let (order, trace_id) = checkout(&comb, "traced@example.com").await;
    assert_eq!(order["status"], "CONFIRMED");
    let dashboard = comb.dashboard();

    // The consumers handle the confirmation a moment later; wait for every part.
    let wanted = [
        "gateway",
        "orders",
        "cart",
        "inventory",
        "payments",
        "notifications",
    ];
    let spans: Vec<Value> = eventually("the whole trace", Duration::from_secs(20), || async {
        let spans = comb.trace(&trace_id).await?;
        let services: HashSet<&str> = spans
            .iter()
            .filter_map(|span| span["service"].as_str())
            .collect();
        let consumed = spans
            .iter()
            .any(|s| s["service"] == "notifications" && s["kind"] == "consumer");
        // Instances export in batches of their own: wait until no parent is missing.
        let ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
        let whole = spans.iter().all(|s| {
            s["parent_span_id"] == "" || ids.contains(s["parent_span_id"].as_str().unwrap_or(""))
        }) && spans.iter().any(|s| s["parent_span_id"] == "");
        (wanted.iter().all(|s| services.contains(s)) && consumed && whole).then_some(spans)
    })
    .await;

    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|span| (span["span_id"].as_str().unwrap(), span))
        .collect();
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|span| span["parent_span_id"] == "")
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:?}");
    assert_eq!(roots[0]["service"], "gateway");
    assert_eq!(roots[0]["kind"], "server");
    assert_eq!(roots[0]["name"], "POST /api/v1/orders");
    for span in &spans {
        if span["parent_span_id"] == "" {
            continue;
        }
        let parent = by_id
            .get(span["parent_span_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("the parent of {span} is not in the trace"));
        match span["kind"].as_str().unwrap() {
            // A gRPC server span is the child of its caller's client span for that call.
            "server" => {
                assert_eq!(parent["kind"], "client", "{span}");
                assert_eq!(parent["name"], span["name"], "{span}");
                assert_ne!(parent["service"], span["service"], "{span}");
            }
            // A call is made inside its service's own work.
            "client" => assert_eq!(parent["service"], span["service"], "{span}"),
            // An event is handled in the trace of the saga step that published it.
            "consumer" => {
                assert_eq!(parent["service"], "orders", "{span}");
                assert_eq!(parent["name"], "checkout saga", "{span}");
                assert_ne!(span["service"], "orders");
            }
            _ => {}
        }
    }
    let services: HashSet<&str> = spans
        .iter()
        .filter_map(|span| span["service"].as_str())
        .collect();
    assert!(services.len() >= 6, "{services:?}");

    // The launcher forwarded the same spans to the OTLP endpoint it was given.
    let forwarded = eventually("forwarded spans", Duration::from_secs(20), || async {
        let spans = receiver.of_trace(&trace_id);
        let services: HashSet<String> = spans.iter().map(|s| s.service.clone()).collect();
        // Every instance exports on its own clock: wait for all the spans seen above.
        (services.len() >= 6 && spans.len() >= by_id.len()).then_some(spans)
    })
    .await;
    assert!(forwarded.iter().any(|s| s.instance == "payments-1"));

    // The trace's log lines, from several services, and only them.
    let output = comb.run(&["logs", "--trace", &trace_id, "--raw"]);
    assert!(output.status.success(), "{}", text(&output));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line["trace_id"] == trace_id.as_str()),
        "{lines:?}"
    );
    let logged: HashSet<&str> = lines
        .iter()
        .filter_map(|line| line["service"].as_str())
        .collect();
    assert!(
        logged.contains("gateway") && logged.contains("orders"),
        "{logged:?}"
    );
    assert!(lines.iter().any(|line| line["msg"] == "order placed"));

    // The dashboard's pages, as a browser renders them.
    let Some(chromium) = chromium() else { return };
    let waterfall = render(&chromium, &format!("{dashboard}/traces/{trace_id}"));
    for service in wanted {
        assert!(
            waterfall.contains(&format!("data-service=\"{service}\"")),
            "no {service} span in the waterfall:\n{waterfall}"
        );
    }
    assert!(waterfall.contains("process comb.order.confirmed"));
    assert!(waterfall.contains("comb.payments.v1.Payments/Authorize"));
    let list = render(&chromium, &format!("{dashboard}/traces"));
    assert!(list.contains(&trace_id), "{list}");
    assert!(list.contains("POST /api/v1/orders"));
    let overview = render(&chromium, &format!("{dashboard}/"));
    assert!(overview.contains("payments-1") && overview.contains("ready"));
    assert!(overview.contains("14 of 14 instances ready"), "{overview}");
    let logs = render(&chromium, &format!("{dashboard}/logs?trace={trace_id}"));
    assert!(logs.contains("order placed"), "{logs}");
    let mailbox = eventually(
        "the confirmation in the mailbox",
        Duration::from_secs(10),
        || {
            let page = render(&chromium, &format!("{dashboard}/mailbox"));
            async move { page.contains("traced@example.com").then_some(page) }
        },
    )
    .await;
    assert!(mailbox.contains("order_confirmed"), "{mailbox}");
}

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every sample line of a Prometheus text exposition: name, value.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line}"
            );
            if series.contains('{') {
                assert!(series.ends_with('}'), "unclosed labels in {line}");
            }
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn total(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn prometheus_scrapes_every_instance_and_sees_business_metrics() {
    let Some(comb) = Comb::system(&repo_topology()) else {
        return;
    };
    let (order, _) = checkout(&comb, "counted@example.com").await;
    assert_eq!(order["status"], "CONFIRMED");

    // Every instance's exposition parses and has the RED histogram.
    let instances = comb.status()["instances"].as_array().unwrap().clone();
    let mut expositions = HashMap::new();
    for instance in &instances {
        let address = instance["admin_address"].as_str().unwrap();
        let body = comb
            .http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = parse_exposition(&body);
        assert!(
            samples
                .iter()
                .any(|(name, _)| name == "http_server_request_duration_seconds_bucket"),
            "{} has no latency histogram",
            instance["instance"]
        );
        expositions.insert(instance["service"].as_str().unwrap().to_owned(), samples);
    }
    assert!(total(&expositions["orders"], "comb_orders_placed_total") >= 1.0);
    assert!(total(&expositions["orders"], "comb_orders_confirmed_total") >= 1.0);
    assert!(total(&expositions["orders"], "comb_revenue_minor_total") > 0.0);
    assert!(
        expositions["orders"]
            .iter()
            .any(|(name, _)| name == "comb_saga_duration_seconds_bucket")
    );
    let consumed = eventually("the confirmation consumed", Duration::from_secs(10), || {
        let comb = &comb;
        let address = instances
            .iter()
            .find(|i| i["service"] == "notifications")
            .unwrap()["admin_address"]
            .as_str()
            .unwrap()
            .to_owned();
        async move {
            let body = comb
                .http
                .get(format!("http://{address}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let samples = parse_exposition(&body);
            (total(&samples, "comb_events_received_total") >= 1.0).then_some(samples)
        }
    })
    .await;
    assert!(
        consumed
            .iter()
            .any(|(name, _)| name == "comb_events_consumer_lag"),
        "no consumer lag gauge"
    );

    // The real Prometheus, given only the discovery file.
    let Some(prometheus) = which("prometheus") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Prometheus is required on CI (.ci/run installs Debian's prometheus)"
        );
        eprintln!(
            "skipping the Prometheus check: no prometheus on PATH (apt-get install prometheus)"
        );
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let targets = comb.dir.path().join("data/prometheus/targets.json");
    assert!(targets.exists());
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: comb\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            targets.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let query = |expression: &'static str| {
        let http = comb.http.clone();
        let api = api.clone();
        async move {
            let answer: Value = http
                .get(format!(
                    "{api}?query={}",
                    expression.replace('(', "%28").replace(')', "%29")
                ))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            answer["data"]["result"].as_array().cloned()
        }
    };
    let up = eventually(
        "every instance up in Prometheus",
        Duration::from_secs(60),
        || async {
            let results = query("up").await?;
            let all_up = results.len() == instances.len()
                && results.iter().all(|result| result["value"][1] == "1");
            all_up.then_some(results)
        },
    )
    .await;
    let scraped: HashSet<&str> = up
        .iter()
        .filter_map(|result| result["metric"]["comb_instance"].as_str())
        .collect();
    assert_eq!(scraped.len(), instances.len(), "{up:?}");
    let confirmed = eventually(
        "orders confirmed in Prometheus",
        Duration::from_secs(30),
        || async {
            let results = query("sum(comb_orders_confirmed_total)").await?;
            let value: f64 = results.first()?["value"][1].as_str()?.parse().ok()?;
            (value >= 1.0).then_some(value)
        },
    )
    .await;
    assert!(confirmed >= 1.0);
}

#[tokio::test]
async fn a_service_exports_its_spans_over_otlp_and_continues_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_comb"));
    for (name, _) in std::env::vars() {
        if name.starts_with("COMB_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let _catalog = Killed(
        command
            .args(["serve", "catalog"])
            .env("COMB_LISTEN", format!("127.0.0.1:{port}"))
            .env("COMB_INSTANCE", "catalog-7")
            .env("COMB_DATA_DIR", data.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    eventually("catalog ready", Duration::from_secs(20), || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(comb_contracts::catalog::v1::ListProductsRequest {
        limit: 2,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .unwrap(),
    );
    let listed = comb_contracts::catalog::v1::catalog_client::CatalogClient::new(channel)
        .list_products(request)
        .await
        .unwrap();
    assert_eq!(listed.into_inner().items.len(), 2);

    let span = eventually(
        "the span at the receiver",
        Duration::from_secs(20),
        || async { receiver.of_trace(caller_trace).into_iter().next() },
    )
    .await;
    assert_eq!(span.service, "catalog");
    assert_eq!(span.instance, "catalog-7");
    assert_eq!(span.parent_span_id, caller_span);
    assert_eq!(span.name, "comb.catalog.v1.Catalog/ListProducts");
    assert_eq!(span.span_id.len(), 16);
}
