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

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, ServiceConfig};

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
    let provider = TRACER_PROVIDER.get_or_init(|| tracer_provider(config));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("comb")));
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines {
                        service: config.service.clone(),
                        instance: config.instance.clone(),
                    })
                    .with_writer(std::io::stdout),
            )
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

static TRACER_PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans should leave the process: an OTLP endpoint is set and the SDK is not
/// switched off.
fn otlp_configured(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|value| !value.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The process's tracer provider: ids for every span, and a batching OTLP/HTTP exporter
/// when one is configured (the exporter reads the other `OTEL_*` variables itself:
/// headers, timeout, batch delay).
fn tracer_provider(config: &ServiceConfig) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(config.service.clone())
        .with_attribute(KeyValue::new(
            "service.instance.id",
            config.instance.clone(),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !otlp_configured(|name| std::env::var(name).ok()) {
        return builder.build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(error) => {
            eprintln!(
                "comb: spans will not be exported: the OTLP exporter could not start ({error}); check OTEL_EXPORTER_OTLP_ENDPOINT"
            );
            builder.build()
        }
    }
}

/// Sends the spans still waiting in the exporter's batch; called when the instance stops.
pub fn flush_traces() {
    if let Some(provider) = TRACER_PROVIDER.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::debug!(%error, "spans could not be flushed");
    }
}

/// Writes each event as one JSON object: time, level, service, instance, target, message,
/// the trace and span it belongs to, and the event's fields.
struct JsonLines {
    service: String,
    instance: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("ts".into(), Value::String(now));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert("instance".into(), Value::String(self.instance.clone()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        if let Some((trace_id, span_id)) = crate::trace::ids(&tracing::Span::current()) {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        event.record(&mut JsonFields(&mut line));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl JsonFields<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.insert(field, Value::String(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
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

/// Axum middleware recording the RED metrics of every request.
pub async fn record_red(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    // Only a call to a gRPC service this instance serves is labelled by its method: label
    // values must come from a bounded set, never from whatever path a client sends.
    let grpc = is_grpc(&request) && matched.is_some();
    let mut route = if grpc {
        request.uri().path().to_owned()
    } else {
        matched.unwrap_or_else(|| UNMATCHED.to_owned())
    };
    let method = if grpc {
        "grpc".to_owned()
    } else {
        request.method().as_str().to_owned()
    };
    let response = next.run(request).await;
    let status = if grpc {
        // A failed unary call answers trailers-only, so its status is in the headers; a
        // successful one carries grpc-status 0 in trailers.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("0")
            .to_owned();
        if code == GRPC_UNIMPLEMENTED {
            route = UNMATCHED.to_owned();
        }
        code
    } else {
        response.status().as_u16().to_string()
    };
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.clone(),
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "http_server_requests_total",
        "route" => route,
        "method" => method,
        "status" => status,
    )
    .increment(1);
    response
}

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";
/// The gRPC status of a call to a method the service does not have.
const GRPC_UNIMPLEMENTED: &str = "12";

/// The header carrying a request's id; every answer has one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Axum middleware writing one access log line per request: method, path (never the
/// query, which may carry personal data), status, duration and request id. Probes,
/// scrapes and internal gRPC calls log at debug level, so the info log shows what callers
/// asked for.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let internal = is_grpc(&request) && request.extensions().get::<MatchedPath>().is_some();
    let quiet = internal || matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
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
