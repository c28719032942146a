//! The launcher's trace collector: an OTLP/HTTP receiver (`POST /v1/traces`, protobuf)
//! that every instance started by `comb up` exports its spans to, and the recent traces it
//! keeps in memory for the dashboard. When the launcher itself was given an OTLP endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), every batch is
//! also forwarded there unchanged, so Jaeger or a collector sees the same spans.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use prost::Message;
use serde::Serialize;
use tokio::sync::mpsc;

/// How many traces the collector keeps; the oldest go first.
const KEPT_TRACES: usize = 2_000;
/// Spans kept per trace: enough for any checkout, bounded for a runaway loop.
const SPANS_PER_TRACE: usize = 2_000;
/// Batches waiting to be forwarded before new ones are dropped.
const FORWARD_QUEUE: usize = 256;

/// One span as the dashboard shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    pub instance: String,
    /// server, client, producer, consumer or internal.
    pub kind: &'static str,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub error: bool,
    pub attributes: Vec<(String, String)>,
}

impl SpanRecord {
    pub fn duration_ms(&self) -> f64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) as f64 / 1e6
    }
}

/// A trace in the list of recent ones.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's name (the earliest span when the root has not arrived).
    pub name: String,
    pub service: String,
    pub start_unix_nano: u64,
    pub duration_ms: f64,
    pub span_count: usize,
    pub services: Vec<String>,
    pub error: bool,
}

/// The parts of an OTLP export the collector reads at once. Every instance exports all
/// the time, so a span is decoded only as far as lists and trees need; its attributes stay
/// encoded until someone opens its trace.
mod lite {
    use axum::body::Bytes;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Export {
        #[prost(message, repeated, tag = "1")]
        pub(super) resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub(super) resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub(super) scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ScopeSpans {
        /// Each span still encoded.
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub(super) spans: Vec<Bytes>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Span {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) trace_id: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub(super) span_id: Bytes,
        #[prost(bytes = "bytes", tag = "4")]
        pub(super) parent_span_id: Bytes,
        #[prost(string, tag = "5")]
        pub(super) name: String,
        #[prost(int32, tag = "6")]
        pub(super) kind: i32,
        #[prost(fixed64, tag = "7")]
        pub(super) start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub(super) end_time_unix_nano: u64,
        #[prost(message, optional, tag = "15")]
        pub(super) status: Option<Status>,
    }
}

/// Who sent a batch of spans.
#[derive(Debug)]
struct Origin {
    service: String,
    instance: String,
}

/// A span as the collector keeps it.
#[derive(Debug)]
struct Kept {
    span_id: u64,
    /// 0 for a root.
    parent_span_id: u64,
    name: Box<str>,
    origin: Arc<Origin>,
    kind: &'static str,
    start_unix_nano: u64,
    end_unix_nano: u64,
    error: bool,
    /// The span as it arrived, for its attributes.
    encoded: Bytes,
}

#[derive(Debug, Default)]
struct Traces {
    spans: HashMap<u128, Vec<Kept>>,
    /// Trace ids, oldest first seen at the front.
    order: VecDeque<u128>,
}

/// The recent traces, shared by the receiver and the dashboard.
#[derive(Debug, Clone)]
pub struct Collector {
    traces: Arc<Mutex<Traces>>,
    forward: Option<mpsc::Sender<Bytes>>,
}

impl Collector {
    /// A collector forwarding to `forward_to` (an OTLP/HTTP traces URL), if given.
    pub fn new(forward_to: Option<Forward>) -> Self {
        let forward = forward_to.map(|target| {
            let (sender, receiver) = mpsc::channel(FORWARD_QUEUE);
            tokio::spawn(target.run(receiver));
            sender
        });
        Self {
            traces: Arc::default(),
            forward,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Traces> {
        self.traces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the spans of one OTLP export (protobuf); spans without valid ids are skipped.
    pub fn add(&self, export: Bytes) -> Result<(), prost::DecodeError> {
        let export = lite::Export::decode(export)?;
        let mut decoded = Vec::new();
        for resource_spans in export.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|resource: &Resource| resource.attributes.as_slice())
                .unwrap_or_default();
            let origin = Arc::new(Origin {
                service: attribute(resource, "service.name").unwrap_or_else(|| "unknown".into()),
                instance: attribute(resource, "service.instance.id").unwrap_or_default(),
            });
            for encoded in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                // Its own copy: a kept span must not hold its whole batch in memory.
                let encoded = Bytes::copy_from_slice(&encoded);
                let span = lite::Span::decode(encoded.clone())?;
                let (Some(trace_id), Some(span_id)) = (id128(&span.trace_id), id64(&span.span_id))
                else {
                    continue;
                };
                decoded.push((
                    trace_id,
                    Kept {
                        span_id,
                        parent_span_id: id64(&span.parent_span_id).unwrap_or(0),
                        name: span.name.into_boxed_str(),
                        origin: Arc::clone(&origin),
                        kind: kind_name(span.kind),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        error: span
                            .status
                            .is_some_and(|status| status.code == status::StatusCode::Error as i32),
                        encoded,
                    },
                ));
            }
        }
        let mut traces = self.lock();
        for (trace_id, span) in decoded {
            traces.insert(trace_id, span);
        }
        Ok(())
    }

    /// The newest traces first, at most `limit`, only those touching `service` if given.
    pub fn recent(&self, service: Option<&str>, limit: usize) -> Vec<TraceSummary> {
        let traces = self.lock();
        traces
            .order
            .iter()
            .rev()
            .filter_map(|id| traces.spans.get(id).map(|spans| (*id, spans)))
            .filter(|(_, spans)| {
                service.is_none_or(|wanted| spans.iter().any(|s| s.origin.service == wanted))
            })
            .take(limit)
            .map(|(id, spans)| summarize(id, spans))
            .collect()
    }

    /// A trace's spans in tree order (each parent before its children, siblings by start),
    /// with each span's depth; spans whose parent has not arrived count as roots.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<(usize, SpanRecord)>> {
        let id = parse_trace_id(trace_id)?;
        let traces = self.lock();
        let spans = traces.spans.get(&id)?;
        Some(
            tree_order(spans)
                .into_iter()
                .map(|(depth, span)| (depth, record(id, span)))
                .collect(),
        )
    }

    /// Forwards a raw export to the configured endpoint, if any; never waits.
    fn forward(&self, body: Bytes) {
        if let Some(sender) = &self.forward
            && sender.try_send(body).is_err()
        {
            eprintln!("comb | the trace forwarding queue is full; a batch was not forwarded");
        }
    }
}

impl Traces {
    fn insert(&mut self, trace_id: u128, span: Kept) {
        if !self.spans.contains_key(&trace_id) {
            self.order.push_back(trace_id);
            while self.order.len() > KEPT_TRACES {
                if let Some(oldest) = self.order.pop_front() {
                    self.spans.remove(&oldest);
                }
            }
        }
        let spans = self.spans.entry(trace_id).or_default();
        // A batch sent again must not list a span twice.
        if spans.len() < SPANS_PER_TRACE && !spans.iter().any(|s| s.span_id == span.span_id) {
            spans.push(span);
        }
    }
}

fn id128(bytes: &[u8]) -> Option<u128> {
    let id = u128::from_be_bytes(bytes.try_into().ok()?);
    (id != 0).then_some(id)
}

fn id64(bytes: &[u8]) -> Option<u64> {
    let id = u64::from_be_bytes(bytes.try_into().ok()?);
    (id != 0).then_some(id)
}

/// A trace id as the dashboard writes it (32 hex digits, any case).
fn parse_trace_id(text: &str) -> Option<u128> {
    (text.len() == 32)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// The dashboard's view of a kept span, its attributes decoded.
fn record(trace_id: u128, span: &Kept) -> SpanRecord {
    let attributes = Span::decode(span.encoded.clone())
        .map(|full| {
            full.attributes
                .iter()
                .map(|pair| (pair.key.clone(), value_text(pair.value.as_ref())))
                .collect()
        })
        .unwrap_or_default();
    SpanRecord {
        trace_id: format!("{trace_id:032x}"),
        span_id: format!("{:016x}", span.span_id),
        parent_span_id: if span.parent_span_id == 0 {
            String::new()
        } else {
            format!("{:016x}", span.parent_span_id)
        },
        name: span.name.to_string(),
        service: span.origin.service.clone(),
        instance: span.origin.instance.clone(),
        kind: span.kind,
        start_unix_nano: span.start_unix_nano,
        end_unix_nano: span.end_unix_nano,
        error: span.error,
        attributes,
    }
}

fn summarize(trace_id: u128, spans: &[Kept]) -> TraceSummary {
    let ids: HashSet<u64> = spans.iter().map(|span| span.span_id).collect();
    let root = spans
        .iter()
        .filter(|span| !ids.contains(&span.parent_span_id))
        .min_by_key(|span| span.start_unix_nano);
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    let mut services: Vec<String> = spans
        .iter()
        .map(|span| span.origin.service.clone())
        .collect();
    services.sort();
    services.dedup();
    TraceSummary {
        trace_id: format!("{trace_id:032x}"),
        name: root.map(|span| span.name.to_string()).unwrap_or_default(),
        service: root
            .map(|span| span.origin.service.clone())
            .unwrap_or_default(),
        start_unix_nano: start,
        duration_ms: end.saturating_sub(start) as f64 / 1e6,
        span_count: spans.len(),
        services,
        error: spans.iter().any(|span| span.error),
    }
}

fn tree_order(spans: &[Kept]) -> Vec<(usize, &Kept)> {
    let ids: HashSet<u64> = spans.iter().map(|span| span.span_id).collect();
    let mut children: HashMap<u64, Vec<&Kept>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if ids.contains(&span.parent_span_id) {
            children.entry(span.parent_span_id).or_default().push(span);
        } else {
            roots.push(span);
        }
    }
    let by_start = |list: &mut Vec<&Kept>| list.sort_by_key(|span| span.start_unix_nano);
    by_start(&mut roots);
    for list in children.values_mut() {
        by_start(list);
    }
    let mut ordered = Vec::with_capacity(spans.len());
    let mut visited: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(usize, &Kept)> = roots.into_iter().rev().map(|s| (0, s)).collect();
    while let Some((depth, span)) = stack.pop() {
        // A span naming itself (or a cycle) as its parent is shown once, never looped over.
        if !visited.insert(span.span_id) {
            continue;
        }
        ordered.push((depth, span));
        if let Some(list) = children.get(&span.span_id) {
            stack.extend(list.iter().rev().map(|child| (depth + 1, *child)));
        }
    }
    ordered
}

fn kind_name(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        _ => "internal",
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .map(|pair| value_text(pair.value.as_ref()))
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// `POST /v1/traces`: one OTLP/HTTP protobuf export.
pub async fn receive(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this receiver takes OTLP/HTTP with Content-Type application/x-protobuf, not {content_type:?}; set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ),
        )
            .into_response();
    }
    if let Err(error) = collector.add(body.clone()) {
        return (
            StatusCode::BAD_REQUEST,
            format!("the body is not an OTLP ExportTraceServiceRequest: {error}"),
        )
            .into_response();
    }
    collector.forward(body);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// The variables that point an instance's exporter at the launcher's receiver at
/// `collector_url`: they replace whatever OTLP endpoint the launcher was given (it
/// forwards there itself), and batches leave every half second unless
/// `OTEL_BSP_SCHEDULE_DELAY` says otherwise. With tracing switched off
/// (`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`), nothing is set.
pub fn instance_env(
    collector_url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> std::collections::BTreeMap<String, String> {
    let mut vars = std::collections::BTreeMap::new();
    let off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    if off {
        return vars;
    }
    let set = |vars: &mut std::collections::BTreeMap<String, String>, key: &str, value: &str| {
        vars.insert(key.to_owned(), value.to_owned());
    };
    set(
        &mut vars,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &format!("{collector_url}/v1/traces"),
    );
    set(
        &mut vars,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "http/protobuf",
    );
    if env("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        set(&mut vars, "OTEL_BSP_SCHEDULE_DELAY", "500");
    }
    vars
}

/// Where the launcher forwards spans: the OTLP endpoint it was given itself.
#[derive(Debug, Clone)]
pub struct Forward {
    url: String,
    headers: Vec<(String, String)>,
}

impl Forward {
    /// From the standard variables: the traces endpoint as given, or the base endpoint
    /// with `/v1/traces`; headers from `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key=value`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let url = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            set("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })?;
        let headers = set("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| set("OTEL_EXPORTER_OTLP_HEADERS"))
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Some(Self { url, headers })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn run(self, mut batches: mpsc::Receiver<Bytes>) {
        let client = reqwest::Client::new();
        let mut failures = 0u64;
        while let Some(body) = batches.recv().await {
            let mut request = client
                .post(&self.url)
                .header(header::CONTENT_TYPE, "application/x-protobuf")
                .body(body);
            for (key, value) in &self.headers {
                request = request.header(key, value);
            }
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("it answered {}", response.status())),
                Err(error) => Err(error.to_string()),
            };
            if let Err(why) = outcome {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(100) {
                    eprintln!(
                        "comb | cannot forward spans to {} ({why}); {failures} batches lost so far",
                        self.url
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
