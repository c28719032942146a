//! The local dashboard the launcher serves while `comb up` runs: services and instances
//! with health, restarts and RED figures, recent traces and the waterfall of one, logs
//! filtered by service, level or trace, and the notification mailbox. Pages are rendered
//! on the server with no script and no external asset, so they work offline and in any
//! browser; `/api/traces` gives the same traces as JSON.
//!
//! Longer than most files: each page is one `maud` template, and they share the frame,
//! the filters and the control state, so they are kept together (the tests are in
//! `tests.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use comb_contracts::notifications::v1::RecentMessagesRequest;
use comb_contracts::notifications::v1::notifications_client::NotificationsClient;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::control::Control;
use super::logs::{LogFilter, LogLine, read_logs};
use super::supervisor::{Health, InstanceStatus};
use super::traces::{SpanRecord, TraceSummary};

/// Routes no metrics figure should count: the launcher's own probes and scrapes.
const PROBE_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];
/// Event feed reads are long polls that wait for events by design; their latency says
/// nothing about how fast a service answers.
const FEED_ROUTE_PREFIX: &str = "/comb.events.v1.EventFeed/";
/// How long a page waits for an instance's metrics or the mailbox.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the dashboard remembers between views: each instance's request count when it was
/// last scraped, to show a rate.
#[derive(Debug, Default)]
pub struct DashboardMemory {
    last_scrape: Mutex<HashMap<String, (Instant, f64)>>,
}

/// The RED figures of one instance, from its `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Red {
    pub requests: f64,
    pub errors: f64,
    /// The upper bound of the latency bucket holding the 99th percentile.
    pub p99_ms: Option<f64>,
}

/// Sums the request counter and the latency histogram of a Prometheus text exposition,
/// leaving out probes and scrapes. An error is an HTTP 5xx or a gRPC code that means the
/// server failed.
pub fn red_figures(exposition: &str) -> Red {
    let mut red = Red::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in exposition.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if label("route").is_some_and(|route| {
            PROBE_ROUTES.contains(&route) || route.starts_with(FEED_ROUTE_PREFIX)
        }) {
            continue;
        }
        match name {
            "http_server_requests_total" => {
                red.requests += value;
                let status = label("status").unwrap_or_default();
                let failed = if label("method") == Some("grpc") {
                    matches!(status, "2" | "4" | "12" | "13" | "14" | "15")
                } else {
                    status.starts_with('5')
                };
                if failed {
                    red.errors += value;
                }
            }
            "http_server_request_duration_seconds_bucket" => {
                let Some(bound) = label("le") else { continue };
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().unwrap_or(f64::INFINITY)
                };
                buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
            }
            _ => {}
        }
    }
    let mut cumulative: Vec<(f64, f64)> = buckets.into_values().collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(_, total)) = cumulative.last()
        && total > 0.0
    {
        red.p99_ms = cumulative
            .iter()
            .find(|(_, count)| *count >= total * 0.99)
            .map(|(bound, _)| bound * 1000.0);
    }
    red
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

/// One sample line: metric name, labels and value; comments and blank lines are `None`.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || *c == ' ')
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() || key.starts_with('}') {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.push((key, value));
    }
    Some((name, labels, value))
}

async fn scrape(client: &reqwest::Client, address: &str) -> Option<Red> {
    let text = client
        .get(format!("http://{address}/metrics"))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(red_figures(&text))
}

const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f8f9fb; --accent:#3b5bdb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { background:#111827; color:#fff; padding:10px 20px; display:flex; gap:24px; align-items:center; }
header b { font-size:16px; letter-spacing:.5px; }
header a { color:#cbd5e1; text-decoration:none; } header a.on { color:#fff; border-bottom:2px solid #fff; }
main { padding:16px 20px; }
h1 { font-size:18px; margin:4px 0 12px; } h2 { font-size:15px; margin:18px 0 8px; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f2f4f7; font-weight:600; font-size:12px; text-transform:uppercase; color:var(--muted); }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
a { color:var(--accent); }
.muted { color:var(--muted); }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; }
.ready { background:#d3f9d8; color:#2b8a3e; } .starting { background:#fff3bf; color:#8f6b00; }
.down { background:#ffe3e3; color:#c92a2a; } .error { color:#c92a2a; font-weight:600; }
form.filters { display:flex; gap:8px; align-items:center; margin-bottom:12px; flex-wrap:wrap; }
input, select, button { font:inherit; padding:4px 8px; }
.waterfall { background:#fff; border:1px solid var(--line); }
.span { display:grid; grid-template-columns: 38% 1fr 80px; border-bottom:1px solid var(--line); align-items:center; }
.span > summary { display:contents; cursor:pointer; list-style:none; }
.span .label { padding:4px 8px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.span .track { position:relative; height:18px; margin:0 8px; }
.span .bar { position:absolute; top:3px; height:12px; border-radius:2px; min-width:2px; }
.span .dur { text-align:right; padding-right:8px; font-variant-numeric: tabular-nums; }
.span .attrs { grid-column:1 / -1; padding:4px 8px 8px 24px; font-size:12px; color:var(--muted); }
.svc { display:inline-block; padding:0 6px; border-radius:3px; color:#fff; font-size:12px; margin-right:6px; }
pre.log { background:#fff; border:1px solid var(--line); padding:8px; overflow-x:auto; font-size:12px; line-height:1.5; }
.lvl-ERROR { color:#c92a2a; } .lvl-WARN { color:#b35c00; }
"#;

const SERVICE_COLORS: &[&str] = &[
    "#3b5bdb", "#2b8a3e", "#c2255c", "#e8590c", "#6741d9", "#0b7285", "#5c940d", "#a61e4d",
    "#1864ab", "#862e9c", "#d9480f", "#087f5b",
];

fn service_color(service: &str) -> &'static str {
    if let Some(index) = crate::services::known()
        .iter()
        .position(|name| *name == service)
    {
        return SERVICE_COLORS[index % SERVICE_COLORS.len()];
    }
    let hash = service.bytes().fold(7u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u32::from(byte))
    });
    SERVICE_COLORS[hash as usize % SERVICE_COLORS.len()]
}

fn page(title: &str, active: &str, refresh_secs: Option<u32>, body: Markup) -> Html<String> {
    let tab = |href: &str, name: &str, label: &str| {
        html! { a href=(href) class=[(active == name).then_some("on")] { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "comb · " (title) }
                @if let Some(seconds) = refresh_secs {
                    meta http-equiv="refresh" content=(seconds);
                }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    b { "comb" }
                    (tab("/", "overview", "Overview"))
                    (tab("/traces", "traces", "Traces"))
                    (tab("/logs", "logs", "Logs"))
                    (tab("/mailbox", "mailbox", "Mailbox"))
                    (tab("/media", "media", "Media"))
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

fn health_pill(health: &Health) -> Markup {
    let (class, label) = match health {
        Health::Ready => ("ready", "ready"),
        Health::Starting => ("starting", "starting"),
        other => ("down", health_label(other)),
    };
    html! { span.pill.(class) { (label) } }
}

fn health_label(health: &Health) -> &'static str {
    match health {
        Health::Ready => "ready",
        Health::Starting => "starting",
        Health::Unready => "not ready",
        Health::Restarting => "restarting",
        Health::Draining => "draining",
        Health::Stopped => "stopped",
    }
}

fn millis(value: f64) -> String {
    if value.is_infinite() {
        "> 10 s".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} ms")
    }
}

fn time_of(unix_nano: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nano))
        .ok()
        .and_then(|at| {
            at.format(time::macros::format_description!(
                "[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The dashboard's pages and their JSON: read-only, served on the control port and, when
/// shared, on the shared dashboard's.
pub fn pages() -> axum::Router<Control> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(overview))
        .route("/traces", get(traces))
        .route("/traces/{id}", get(trace))
        .route("/logs", get(logs))
        .route("/mailbox", get(mailbox))
        .route("/media", get(media))
        .route("/api/traces", get(api_traces))
        .route("/api/traces/{id}", get(api_trace))
}

/// `GET /`: every instance with its health, restarts and RED figures.
pub async fn overview(State(control): State<Control>) -> Html<String> {
    let instances = control.supervisor.status();
    let mut scrapes = tokio::task::JoinSet::new();
    for instance in instances.iter().filter(|i| i.health == Health::Ready) {
        let client = control.http.clone();
        let name = instance.instance.clone();
        let address = instance.admin_address.clone();
        scrapes.spawn(async move { (name, scrape(&client, &address).await) });
    }
    let mut figures: HashMap<String, Red> = HashMap::new();
    while let Some(Ok((name, red))) = scrapes.join_next().await {
        if let Some(red) = red {
            figures.insert(name, red);
        }
    }
    let rates = rates(&control.memory, &figures);
    let ready = instances
        .iter()
        .filter(|i| i.health == Health::Ready)
        .count();
    page(
        "overview",
        "overview",
        Some(5),
        html! {
            h1 { "Services" }
            p.muted {
                (ready) " of " (instances.len()) " instances ready"
                @if let Some(url) = &control.supervisor.gateway_url() {
                    " · gateway " a href=(url) { (url) }
                }
                " · data in " (control.data_dir)
                " · refreshes every 5 s"
            }
            table {
                thead { tr {
                    th { "service" } th { "instance" } th { "health" } th.num { "pid" }
                    th.num { "restarts" } th.num { "uptime" } th { "address" }
                    th.num { "requests" } th.num { "req/s" } th.num { "errors" } th.num { "p99" }
                } }
                tbody {
                    @for instance in &instances {
                        (instance_row(instance, figures.get(&instance.instance), rates.get(&instance.instance)))
                    }
                }
            }
            p.muted { "RED figures come from each instance's /metrics, probes and scrapes left out; p99 is the upper bound of its latency bucket. Last exits show why an instance restarted." }
        },
    )
}

fn instance_row(instance: &InstanceStatus, red: Option<&Red>, rate: Option<&f64>) -> Markup {
    html! {
        tr {
            td { span.svc style={"background:" (service_color(&instance.service))} { (instance.service) } }
            td { (instance.instance) }
            td {
                (health_pill(&instance.health))
                @if let Some(exit) = &instance.last_exit { " " span.muted { "last exit: " (exit) } }
            }
            td.num { (instance.pid.map(|pid| pid.to_string()).unwrap_or_default()) }
            td.num { (instance.restarts) }
            td.num { (instance.uptime_secs.map(crate::commands::format_uptime).unwrap_or_default()) }
            td { (instance.address) }
            @if let Some(red) = red {
                td.num { (red.requests) }
                td.num { (rate.map(|r| format!("{r:.1}")).unwrap_or_else(|| "…".into())) }
                td.num class=[(red.errors > 0.0).then_some("error")] { (red.errors) }
                td.num { (red.p99_ms.map(millis).unwrap_or_default()) }
            } @else {
                td.num.muted colspan="4" { "no metrics" }
            }
        }
    }
}

/// Requests per second since the previous view, per instance.
fn rates(memory: &DashboardMemory, figures: &HashMap<String, Red>) -> HashMap<String, f64> {
    let now = Instant::now();
    let mut last = memory
        .last_scrape
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut rates = HashMap::new();
    for (instance, red) in figures {
        if let Some((then, count)) = last.get(instance) {
            let seconds = now.duration_since(*then).as_secs_f64();
            if seconds > 0.0 && red.requests >= *count {
                rates.insert(instance.clone(), (red.requests - count) / seconds);
            }
        }
        last.insert(instance.clone(), (now, red.requests));
    }
    rates
}

#[derive(Debug, Deserialize)]
pub struct TraceQuery {
    service: Option<String>,
    /// A trace id to open.
    id: Option<String>,
    limit: Option<usize>,
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `GET /traces`: the newest traces, optionally only those touching a service.
pub async fn traces(State(control): State<Control>, Query(query): Query<TraceQuery>) -> Response {
    if let Some(id) = non_empty(query.id.as_ref()) {
        return Redirect::to(&format!("/traces/{}", id.to_ascii_lowercase())).into_response();
    }
    let service = non_empty(query.service.as_ref());
    let recent = control
        .collector
        .recent(service, query.limit.unwrap_or(100).min(1_000));
    let services: Vec<&str> = {
        let mut names: Vec<&str> = control.services.iter().map(String::as_str).collect();
        names.sort_unstable();
        names
    };
    page(
        "traces",
        "traces",
        None,
        html! {
            h1 { "Recent traces" }
            form.filters method="get" action="/traces" {
                select name="service" {
                    option value="" { "every service" }
                    @for name in &services {
                        option value=(name) selected[service == Some(*name)] { (name) }
                    }
                }
                button type="submit" { "filter" }
                input name="id" placeholder="trace id" size="34";
                button type="submit" { "open" }
            }
            @if recent.is_empty() {
                p.muted { "No traces yet. Every request through the gateway becomes one: try the store, then come back." }
            } @else {
                table {
                    thead { tr {
                        th { "started" } th { "root" } th { "services" } th.num { "spans" } th.num { "duration" } th { "trace" }
                    } }
                    tbody {
                        @for trace in &recent { (trace_row(trace)) }
                    }
                }
            }
        },
    )
    .into_response()
}

fn trace_row(trace: &TraceSummary) -> Markup {
    html! {
        tr {
            td { (time_of(trace.start_unix_nano)) }
            td {
                span.svc style={"background:" (service_color(&trace.service))} { (trace.service) }
                a href={"/traces/" (trace.trace_id)} { (trace.name) }
                @if trace.error { " " span.error { "error" } }
            }
            td { (trace.services.join(", ")) }
            td.num { (trace.span_count) }
            td.num { (millis(trace.duration_ms)) }
            td { code.muted { (trace.trace_id) } }
        }
    }
}

/// `GET /traces/{id}`: one trace as a waterfall, each span's attributes one click away.
pub async fn trace(State(control): State<Control>, Path(id): Path<String>) -> Response {
    let Some(spans) = control.collector.trace(&id) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "trace not found",
                "traces",
                None,
                html! {
                    h1 { "No trace " code { (id) } }
                    p { "The launcher keeps the most recent traces only, and spans arrive a moment after a request ends. "
                        a href="/traces" { "Recent traces" } }
                },
            ),
        )
            .into_response();
    };
    let start = spans
        .iter()
        .map(|(_, s)| s.start_unix_nano)
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|(_, s)| s.end_unix_nano)
        .max()
        .unwrap_or(start);
    let total = end.saturating_sub(start).max(1) as f64;
    let mut services: Vec<&str> = spans.iter().map(|(_, s)| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    page(
        "trace",
        "traces",
        None,
        html! {
            h1 { "Trace " code { (id) } }
            p.muted {
                (spans.len()) " spans from " (services.len()) " services (" (services.join(", ")) ") over "
                (millis(total / 1e6)) " · "
                a href={"/logs?trace=" (id)} { "its log lines" }
            }
            div.waterfall {
                @for (depth, span) in &spans {
                    (span_row(*depth, span, start, total))
                }
            }
        },
    )
    .into_response()
}

fn span_row(depth: usize, span: &SpanRecord, trace_start: u64, total: f64) -> Markup {
    let left = (span.start_unix_nano.saturating_sub(trace_start) as f64 / total * 100.0).min(99.8);
    let width = (span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / total * 100.0)
        .max(0.2)
        .min(100.0 - left);
    let color = if span.error {
        "#c92a2a"
    } else {
        service_color(&span.service)
    };
    html! {
        details.span data-service=(span.service) data-span-id=(span.span_id) data-parent-id=(span.parent_span_id) {
            summary {
                div.label style={"padding-left:" (8 + depth * 16) "px"} title=(span.name) {
                    span.svc style={"background:" (service_color(&span.service))} { (span.service) }
                    (span.name)
                    @if span.error { " " span.error { "error" } }
                }
                div.track {
                    div.bar style={"left:" (format!("{left:.2}")) "%;width:" (format!("{width:.2}")) "%;background:" (color)} {}
                }
                div.dur { (millis(span.duration_ms())) }
            }
            div.attrs {
                div { "instance " b { (span.instance) } " · kind " b { (span.kind) } " · span " code { (span.span_id) }
                    @if !span.parent_span_id.is_empty() { " · parent " code { (span.parent_span_id) } } }
                @for (key, value) in &span.attributes {
                    div { (key) " = " code { (value) } }
                }
            }
        }
    }
}

/// `GET /api/traces`: the newest traces as JSON.
pub async fn api_traces(
    State(control): State<Control>,
    Query(query): Query<TraceQuery>,
) -> Json<Vec<TraceSummary>> {
    Json(control.collector.recent(
        non_empty(query.service.as_ref()),
        query.limit.unwrap_or(100).min(1_000),
    ))
}

#[derive(Debug, serde::Serialize)]
pub struct TraceSpan {
    depth: usize,
    #[serde(flatten)]
    span: SpanRecord,
}

/// `GET /api/traces/{id}`: one trace's spans in tree order, as JSON.
pub async fn api_trace(State(control): State<Control>, Path(id): Path<String>) -> Response {
    match control.collector.trace(&id) {
        Some(spans) => Json(
            spans
                .into_iter()
                .map(|(depth, span)| TraceSpan { depth, span })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "title": "Not Found",
                "status": 404,
                "detail": format!("no trace {id} has arrived, or it is older than the traces kept"),
            })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    service: Option<String>,
    level: Option<String>,
    trace: Option<String>,
}

/// How many lines the logs page shows at most: the newest.
const LOG_LINES: usize = 500;

/// `GET /logs`: the newest log lines of every instance, filtered.
pub async fn logs(State(control): State<Control>, Query(query): Query<LogQuery>) -> Response {
    let service = non_empty(query.service.as_ref()).map(str::to_owned);
    let filter = LogFilter {
        level: non_empty(query.level.as_ref()).map(str::to_ascii_uppercase),
        trace: non_empty(query.trace.as_ref()).map(str::to_ascii_lowercase),
    };
    let dir = control.logs_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_logs(&dir, service.as_deref(), &filter, LOG_LINES)
    })
    .await;
    let lines: Vec<LogLine> = match read {
        Ok(Ok(lines)) => lines,
        Ok(Err(error)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the logs cannot be read: {error:#}"),
            )
                .into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let chosen_service = non_empty(query.service.as_ref());
    let chosen_level = non_empty(query.level.as_ref()).map(str::to_ascii_uppercase);
    let mut services: Vec<&str> = control.services.iter().map(String::as_str).collect();
    services.sort_unstable();
    page(
        "logs",
        "logs",
        None,
        html! {
            h1 { "Logs" }
            form.filters method="get" action="/logs" {
                select name="service" {
                    option value="" { "every service" }
                    @for name in &services {
                        option value=(name) selected[chosen_service == Some(*name)] { (name) }
                    }
                }
                select name="level" {
                    @for level in ["", "DEBUG", "INFO", "WARN", "ERROR"] {
                        option value=(level) selected[chosen_level.as_deref() == Some(level)] {
                            (if level.is_empty() { "any level" } else { level })
                        }
                    }
                }
                input name="trace" placeholder="trace id" size="34" value=[non_empty(query.trace.as_ref())];
                button type="submit" { "filter" }
            }
            p.muted { "The newest " (LOG_LINES) " matching lines, oldest first." }
            @if lines.is_empty() {
                p.muted { "No lines match." }
            } @else {
                pre.log {
                    @for line in &lines {
                        span class={"lvl-" (line.level)} {
                            (super::logs::prefixed(&line.instance, &super::logs::render(&line.text), None))
                        }
                        "\n"
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /mailbox`: the newest messages the notifications service has sent.
pub async fn mailbox(State(control): State<Control>) -> Response {
    let address = control
        .supervisor
        .status()
        .into_iter()
        .find(|i| i.service == "notifications" && i.health == Health::Ready)
        .map(|i| i.address);
    let fetched = match address {
        None => Err("no notifications instance is ready".to_owned()),
        Some(address) => recent_messages(&address).await,
    };
    page(
        "mailbox",
        "mailbox",
        Some(10),
        html! {
            h1 { "Mailbox" }
            p.muted { "Every message comb has sent (order confirmations, cancellations, shipments, welcomes), newest first. Nothing leaves this machine." }
            @match fetched {
                Err(why) => p.error { "The mailbox cannot be shown: " (why) "." },
                Ok(messages) if messages.is_empty() => p.muted { "No messages yet: sign up or check out to get one." },
                Ok(messages) => table {
                    thead { tr { th { "sent" } th { "to" } th { "kind" } th { "subject" } th { "message" } } }
                    tbody {
                        @for message in &messages {
                            tr {
                                td { (message.created_at) }
                                td { (message.email) br; span.muted { (message.recipient) } }
                                td { (message.kind) }
                                td { (message.subject) }
                                td { pre style="margin:0;white-space:pre-wrap;font:inherit" { (message.body) } }
                            }
                        }
                    }
                },
            }
        },
    )
    .into_response()
}

/// `GET /media`: the media queue (depth, running jobs and their progress, failures and
/// why) and what is stored.
pub async fn media(State(control): State<Control>) -> Response {
    let instances = control.supervisor.status();
    let address = instances
        .iter()
        .find(|i| i.service == "media" && i.health == Health::Ready)
        .map(|i| i.address.clone());
    let workers = instances
        .iter()
        .filter(|i| i.service == "media-worker" && i.health == Health::Ready)
        .count();
    let fetched = match address {
        None => Err("no media instance is ready".to_owned()),
        Some(address) => media_queue(&address).await,
    };
    page(
        "media",
        "media",
        Some(5),
        html! {
            h1 { "Media" }
            p.muted { "Uploaded masters become renditions in the media workers (" (workers) " ready); scale them with " code { "comb scale media-worker=N" } "." }
            @match fetched {
                Err(why) => p.error { "The media queue cannot be shown: " (why) "." },
                Ok((stats, jobs)) => {
                    table {
                        thead { tr { th { "queued" } th { "running" } th { "done" } th { "failed" } th { "cancelled" } th { "stored" } } }
                        tbody { tr {
                            td { (stats.queued) } td { (stats.running) } td { (stats.done) }
                            td { (stats.failed) } td { (stats.cancelled) }
                            td { (format!("{:.1} MB", stats.bytes_stored as f64 / 1e6)) }
                        } }
                    }
                    h2 { "Jobs, newest first" }
                    @if jobs.is_empty() {
                        p.muted { "No uploads yet: POST a master to /api/v1/admin/products/{id}/media." }
                    } @else {
                        table {
                            thead { tr { th { "job" } th { "product" } th { "kind" } th { "state" } th { "progress" } th { "attempts" } th { "took" } th { "failure" } } }
                            tbody {
                                @for job in &jobs {
                                    tr {
                                        td { code { (job.id) } }
                                        td { code { (job.product_id) } }
                                        td { (word(job.kind().as_str_name(), "MEDIA_KIND_")) }
                                        td { (word(job.state().as_str_name(), "JOB_STATE_")) }
                                        td { progress max="100" value=(job.percent) { (job.percent) "%" } " " (job.percent) "%" }
                                        td { (job.attempts) }
                                        td { @if job.duration_ms > 0 { (millis(job.duration_ms as f64)) } }
                                        td { (job.failure) }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        },
    )
    .into_response()
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

async fn media_queue(
    address: &str,
) -> Result<
    (
        comb_contracts::media::v1::QueueStatsResponse,
        Vec<comb_contracts::media::v1::Job>,
    ),
    String,
> {
    use comb_contracts::media::v1::media_client::MediaClient;
    use comb_contracts::media::v1::{ListJobsRequest, QueueStatsRequest};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| error.to_string())?
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("media at {address} does not answer ({error})"))?;
    let mut client = MediaClient::new(channel);
    let stats = client
        .queue_stats(QueueStatsRequest {})
        .await
        .map_err(|status| format!("media answered {}", status.message()))?
        .into_inner();
    let jobs = client
        .list_jobs(ListJobsRequest {
            state: 0,
            limit: 50,
        })
        .await
        .map_err(|status| format!("media answered {}", status.message()))?
        .into_inner()
        .items;
    Ok((stats, jobs))
}

async fn recent_messages(
    address: &str,
) -> Result<Vec<comb_contracts::notifications::v1::Message>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| error.to_string())?
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("notifications at {address} does not answer ({error})"))?;
    NotificationsClient::new(channel)
        .recent_messages(RecentMessagesRequest { limit: 200 })
        .await
        .map(|response| response.into_inner().items)
        .map_err(|status| format!("notifications answered {}", status.message()))
}

#[cfg(test)]
mod tests;
