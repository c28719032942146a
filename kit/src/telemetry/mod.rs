//! Telemetry: structured logs, traces and Prometheus metrics.
//!
//! Every log line is one JSON object carrying `service` and `instance`, and `trace_id` and
//! `span_id` when it was written inside a traced span, so the launcher (or any log
//! shipper) can tell instances apart and join lines to traces without parsing text.
//! Spans get OpenTelemetry ids always and are exported over OTLP/HTTP when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the
//! service as `service.name` and the instance as `service.instance.id`. Every request
//! through [`record_red`] counts towards the RED metrics (rate, errors, duration) labelled
//! by route (the gRPC method for gRPC calls), method and status.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use time::format_description::well_known::Rfc3339;
use tracing::field::{Empty, Field, Visit};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, ServiceConfig};
use crate::otlp::{ExportConfig, Exporter};
use crate::trace::{
    Sampler, SpanLayer, SpanRecord, TRACERESPONSE, follow_headers, grpc_server_error, grpc_status,
    untraced,
};

/// Latency histogram buckets in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "the log filter {filter:?} is not valid ({source}); use a level such as info or a directive such as comb_catalog=debug"
    )]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Starts logging (to stdout), tracing and the metrics recorder for this process.
///
/// A process that already has a global logger keeps it: tests start several services in
/// one process.
pub fn init(config: &ServiceConfig) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::Filter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let env = |name: &str| std::env::var(name).ok();
    let sampler = *SAMPLER.get_or_init(|| Sampler::from_env(env));
    let exporter = EXPORTER.get_or_init(|| start_exporter(config, env)).clone();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(SpanLayer::new(sampler, exporter));
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(JsonLogLayer::new(
                &config.service,
                &config.instance,
                std::io::stdout,
            ))
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("a logger was already installed in this process; keeping it");
    }
    metrics_handle();
    Ok(())
}

static SAMPLER: OnceLock<Sampler> = OnceLock::new();
static EXPORTER: OnceLock<Option<Arc<Exporter>>> = OnceLock::new();

/// The sampler this process decides with (OpenTelemetry's default until [`init`]).
pub fn sampler() -> Sampler {
    SAMPLER.get().copied().unwrap_or_default()
}

/// The OTLP exporter, when the standard variables ask for one.
fn start_exporter(
    config: &ServiceConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Arc<Exporter>> {
    let export = match ExportConfig::from_env(env, &config.service, &config.instance)? {
        Ok(export) => export,
        Err(why) => {
            eprintln!(
                "comb: spans will not be exported: {why}; check the OTEL_EXPORTER_OTLP_* variables"
            );
            return None;
        }
    };
    match Exporter::start(export) {
        Ok(exporter) => Some(exporter),
        Err(error) => {
            eprintln!("comb: spans will not be exported: the exporter could not start ({error})");
            None
        }
    }
}

/// Sends the spans still waiting to be exported; called when the instance stops.
pub async fn flush_traces() {
    if let Some(Some(exporter)) = EXPORTER.get() {
        exporter.flush(Duration::from_secs(2)).await;
    }
}

/// Writes each event as one JSON line: time, level, service, instance, target, the trace
/// and span it belongs to, the message (`msg`) and the event's fields. A line is built in
/// one buffer and leaves in one write; span fields are never formatted for logs.
pub struct JsonLogLayer<W> {
    service: String,
    instance: String,
    make_writer: W,
}

impl<W> JsonLogLayer<W> {
    pub fn new(service: &str, instance: &str, make_writer: W) -> Self {
        Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
            make_writer,
        }
    }
}

/// Keys every line has; an event field of the same name is left out.
const RESERVED_KEYS: &[&str] = &[
    "ts", "level", "service", "instance", "target", "trace_id", "span_id",
];

impl<S, W> tracing_subscriber::Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            let metadata = event.metadata();
            let now = time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            line.push_str("{\"ts\":");
            push_json_str(&mut line, &now);
            line.push_str(",\"level\":\"");
            line.push_str(metadata.level().as_str());
            line.push_str("\",\"service\":");
            push_json_str(&mut line, &self.service);
            line.push_str(",\"instance\":");
            push_json_str(&mut line, &self.instance);
            line.push_str(",\"target\":");
            push_json_str(&mut line, metadata.target());
            let span = event
                .parent()
                .and_then(|id| ctx.span(id))
                .or_else(|| ctx.lookup_current());
            if let Some(context) =
                span.and_then(|span| span.extensions().get::<SpanRecord>().map(|r| r.context))
            {
                use std::fmt::Write as _;
                let _ = write!(
                    line,
                    ",\"trace_id\":\"{:032x}\",\"span_id\":\"{:016x}\"",
                    context.trace_id, context.span_id
                );
            }
            event.record(&mut JsonFields(&mut line));
            line.push_str("}\n");
            let _ = std::io::Write::write_all(&mut self.make_writer.make_writer(), line.as_bytes());
            // A line that once held a huge field does not keep its memory.
            if line.capacity() > 64 * 1024 {
                *line = String::new();
            }
        });
    }
}

/// Appends `text` as a JSON string.
fn push_json_str(line: &mut String, text: &str) {
    line.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        line.push_str(&text[start..index]);
        if escaped.is_empty() {
            use std::fmt::Write as _;
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escaped);
        }
        start = index + 1;
    }
    line.push_str(&text[start..]);
    line.push('"');
}

/// Appends an event's fields as `,"key":value`; the message is `msg`.
struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        if RESERVED_KEYS.contains(&name) {
            return false;
        }
        self.0.push(',');
        push_json_str(self.0, name);
        self.0.push(':');
        true
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_json_str(self.0, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                use std::fmt::Write as _;
                let _ = write!(self.0, "{value}");
            } else {
                self.0.push_str("null");
            }
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.0.push_str(if value { "true" } else { "false" });
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if self.key(field) {
            push_json_str(self.0, &text);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            push_json_str(self.0, &format!("{value:?}"));
        }
    }
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "latency buckets rejected; histograms become summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was already installed in this process");
        }
        describe_red_metrics();
        handle
    })
}

/// The Prometheus text exposition of this process's metrics.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

fn describe_red_metrics() {
    metrics::describe_counter!(
        "http_server_requests_total",
        "Requests served, by route (or gRPC method), method and status (HTTP status, or gRPC status code)."
    );
    metrics::describe_histogram!(
        "http_server_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to its response headers, by route (or gRPC method) and method."
    );
}

/// The RED metrics of one route and method: the latency histogram, and a request counter
/// per status.
struct RouteMetrics {
    duration: metrics::Histogram,
    requests: Vec<(String, metrics::Counter)>,
}

/// The handles of a route's RED metrics, registered on first use: registering a labelled
/// metric builds and hashes its labels, which is worth doing once, not per request.
fn red_handles(route: &str, method: &str, status: &str) -> (metrics::Histogram, metrics::Counter) {
    type Routes = HashMap<String, HashMap<String, RouteMetrics>>;
    static ROUTES: OnceLock<Mutex<Routes>> = OnceLock::new();
    let mut routes = ROUTES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let methods = match routes.get_mut(route) {
        Some(methods) => methods,
        None => routes.entry(route.to_owned()).or_default(),
    };
    let metrics = match methods.get_mut(method) {
        Some(metrics) => metrics,
        None => methods
            .entry(method.to_owned())
            .or_insert_with(|| RouteMetrics {
                duration: metrics::histogram!(
                    "http_server_request_duration_seconds",
                    "route" => route.to_owned(),
                    "method" => method.to_owned(),
                ),
                requests: Vec::new(),
            }),
    };
    let counter = match metrics.requests.iter().find(|(known, _)| known == status) {
        Some((_, counter)) => counter.clone(),
        None => {
            let counter = metrics::counter!(
                "http_server_requests_total",
                "route" => route.to_owned(),
                "method" => method.to_owned(),
                "status" => status.to_owned(),
            );
            metrics.requests.push((status.to_owned(), counter.clone()));
            counter
        }
    };
    (metrics.duration.clone(), counter)
}

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";
/// The gRPC status of a call to a method the service does not have.
const GRPC_UNIMPLEMENTED: u16 = 12;

/// The header carrying a request's id; every answer has one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// The longest request id taken from a caller; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Axum middleware: what the kit observes of every request, in one pass.
/// - the request id: the caller's `x-request-id`, or a new one, on the request and its answer;
/// - the trace: a server span continuing the caller's `traceparent` (or starting a trace),
///   named by the route or RPC, never a raw path; the answer's `traceresponse` names it.
///   Probes, scrapes and feed reads are not traced;
/// - the deadline: a gRPC caller's `grpc-timeout` bounds everything done for the call;
/// - RED metrics by route (the method for gRPC), method and status;
/// - one access log line: method, path (never the query, which may carry personal data),
///   status, duration and request id. Probes, scrapes and internal gRPC calls log at debug
///   level, so the info log shows what callers asked for.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    // Only a call to a gRPC service this instance serves is labelled by its method: label
    // values must come from a bounded set, never from whatever path a client sends.
    let grpc = is_grpc(&request) && matched.is_some();
    let path = request.uri().path().to_owned();
    let method = if grpc {
        "grpc"
    } else {
        request.method().as_str()
    }
    .to_owned();
    let route = match (grpc, matched) {
        (true, _) => path.clone(),
        (false, Some(matched)) => matched,
        (false, None) => UNMATCHED.to_owned(),
    };
    let request_id = match request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| value.len() <= MAX_REQUEST_ID && value.to_str().is_ok())
    {
        Some(id) => Some(id.clone()),
        // A call between services is named by its trace; it needs no id of its own.
        None if grpc => None,
        None => {
            let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"));
            request.headers_mut().insert(REQUEST_ID, id.clone());
            Some(id)
        }
    };
    let timeout = request
        .headers()
        .get(crate::deadline::GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .and_then(crate::deadline::parse_grpc_timeout);
    let quiet = grpc || matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let span = if untraced(&path) {
        tracing::Span::none()
    } else {
        let name = if grpc {
            path.trim_start_matches('/').to_owned()
        } else if route == UNMATCHED {
            method.clone()
        } else {
            format!("{method} {route}")
        };
        let span = tracing::info_span!(
            "request",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = if grpc { "grpc" } else { "" },
            http.request.method = %method,
            http.route = %if grpc { name.as_str() } else { route.as_str() },
            http.response.status_code = Empty,
            rpc.grpc.status_code = Empty,
            request_id = request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default(),
        );
        follow_headers(&span, request.headers());
        span
    };
    let work = next.run(request).instrument(span.clone());
    let mut response = match timeout {
        Some(timeout) => crate::deadline::within(tokio::time::Instant::now() + timeout, work).await,
        None => work.await,
    };
    let status = response.status().as_u16();
    let grpc_code = if grpc {
        Some(grpc_status(&response).unwrap_or(0))
    } else {
        None
    };
    span.record("http.response.status_code", status);
    if let Some(code) = grpc_code {
        span.record("rpc.grpc.status_code", code);
    }
    if status >= 500 || grpc_code.is_some_and(grpc_server_error) {
        span.record("otel.status_code", "ERROR");
    }
    // Answers to people and scripts name their trace and request; gRPC callers have both.
    if !grpc {
        let headers = response.headers_mut();
        if let Some(context) = crate::trace::context(&span)
            && let Ok(value) = HeaderValue::from_str(&context.traceparent())
        {
            headers.insert(TRACERESPONSE, value);
        }
        if let Some(id) = &request_id {
            headers.insert(REQUEST_ID, id.clone());
        }
    }

    let elapsed = started.elapsed();
    // A call to a method this service does not have is labelled like an unknown route.
    let route = if grpc_code == Some(GRPC_UNIMPLEMENTED) {
        UNMATCHED.to_owned()
    } else {
        route
    };
    let status_label = match grpc_code {
        Some(code) => code.to_string(),
        None => status.to_string(),
    };
    let (duration, requests) = red_handles(&route, &method, &status_label);
    duration.record(elapsed.as_secs_f64());
    requests.increment(1);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let request_id = request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let _entered = span.enter();
    if quiet {
        tracing::debug!(target: "access", %method, %path, status, duration_ms, %request_id, "request");
    } else {
        tracing::info!(target: "access", %method, %path, status, duration_ms, %request_id, "request");
    }
    response
}

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests;
