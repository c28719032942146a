//! OTLP/HTTP export of finished spans, configured by the standard `OTEL_*` variables:
//! spans queue in memory and leave in batches of protobuf (`application/x-protobuf`) from
//! one exporter thread, so a request never waits on the collector.
//!
//! - endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   with `/v1/traces`; only `http/protobuf` is spoken (`OTEL_EXPORTER_OTLP_PROTOCOL`);
//! - headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`
//!   (`key=value,key=value`, values percent-decoded);
//! - timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (ms);
//! - batching: `OTEL_BSP_SCHEDULE_DELAY` (ms between exports, default 5000),
//!   `OTEL_BSP_MAX_QUEUE_SIZE` (spans held before new ones are dropped, default 2048),
//!   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (spans per export, default 512; a full batch leaves at
//!   once);
//! - resource: `service.name` and `service.instance.id` from the instance, plus
//!   `OTEL_RESOURCE_ATTRIBUTES`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{span, status};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::trace::{AttributeValue, FinishedSpan, SpanKind};

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub schedule_delay: Duration,
    pub max_queue: usize,
    pub max_batch: usize,
    /// Resource attributes: who the spans come from.
    pub resource: Vec<(String, String)>,
}

impl ExportConfig {
    /// The export the standard variables describe for `service`'s `instance`: `None` when
    /// no endpoint is set or tracing is switched off (`OTEL_SDK_DISABLED=true`,
    /// `OTEL_TRACES_EXPORTER=none`), or `Err` saying what cannot be used.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        service: &str,
        instance: &str,
    ) -> Option<Result<Self, String>> {
        let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let disabled = set("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        if disabled {
            return None;
        }
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|url| url.trim().to_owned())
            .or_else(|| {
                set("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .map(|base| format!("{}/v1/traces", base.trim().trim_end_matches('/')))
            })?;
        Some(Self::resolve(&set, endpoint, service, instance))
    }

    fn resolve(
        set: &impl Fn(&str) -> Option<String>,
        endpoint: String,
        service: &str,
        instance: &str,
    ) -> Result<Self, String> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "the OTLP endpoint {endpoint:?} is not an http:// or https:// address"
            ));
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol
            && protocol.trim() != "http/protobuf"
        {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?} is not supported; comb exports http/protobuf"
            ));
        }
        let millis = |names: &[&str], default: u64| {
            names
                .iter()
                .find_map(|name| set(name).and_then(|v| v.trim().parse::<u64>().ok()))
                .map_or(Duration::from_millis(default), Duration::from_millis)
        };
        let count = |name: &str, default: usize| {
            set(name)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048);
        let mut resource = vec![
            ("service.name".to_owned(), service.to_owned()),
            ("service.instance.id".to_owned(), instance.to_owned()),
            ("telemetry.sdk.name".to_owned(), "comb".to_owned()),
            ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
        ];
        for (key, value) in pairs(&set("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()) {
            if !resource.iter().any(|(known, _)| *known == key) {
                resource.push((key, value));
            }
        }
        Ok(Self {
            endpoint,
            headers: pairs(
                &set("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                    .or_else(|| set("OTEL_EXPORTER_OTLP_HEADERS"))
                    .unwrap_or_default(),
            ),
            timeout: millis(
                &[
                    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                ],
                10_000,
            ),
            schedule_delay: millis(&["OTEL_BSP_SCHEDULE_DELAY"], 5_000),
            max_queue,
            max_batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).min(max_queue),
            resource,
        })
    }
}

/// `key=value,key=value` as the OTEL variables write lists, values percent-decoded.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), percent_decode(value.trim())))
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Finished spans on their way out.
pub struct Exporter {
    config: ExportConfig,
    queue: Mutex<Vec<FinishedSpan>>,
    /// Woken when a batch is full.
    full: Notify,
    dropped: AtomicU64,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(config: ExportConfig) -> std::io::Result<Arc<Self>> {
        let (flushes, flush_requests) = mpsc::unbounded_channel();
        let exporter = Arc::new(Self {
            queue: Mutex::new(Vec::with_capacity(config.max_batch)),
            config,
            full: Notify::new(),
            dropped: AtomicU64::new(0),
            flushes,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let running = Arc::clone(&exporter);
        std::thread::Builder::new()
            .name("comb-otlp".into())
            .spawn(move || runtime.block_on(running.run(flush_requests)))?;
        Ok(exporter)
    }

    /// Queues a span; drops it (and counts it) when the queue is full.
    pub fn push(&self, span: FinishedSpan) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= self.config.max_queue {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push(span);
        let full = queue.len() >= self.config.max_batch;
        drop(queue);
        if full {
            self.full.notify_one();
        }
    }

    /// Exports what is queued; returns once it has left (or failed), or after `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (done, exported) = oneshot::channel();
        if self.flushes.send(done).is_ok() {
            let _ = tokio::time::timeout(timeout, exported).await;
        }
    }

    async fn run(
        self: Arc<Self>,
        mut flush_requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let client = match reqwest::Client::builder()
            .timeout(self.config.timeout)
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                eprintln!("comb: spans will not be exported: no HTTP client ({error})");
                return;
            }
        };
        let mut failures = 0u64;
        loop {
            let mut flushed = None;
            tokio::select! {
                () = tokio::time::sleep(self.config.schedule_delay) => {}
                () = self.full.notified() => {}
                request = flush_requests.recv() => match request {
                    Some(done) => flushed = Some(done),
                    None => return,
                },
            }
            loop {
                let batch: Vec<FinishedSpan> = {
                    let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let take = queue.len().min(self.config.max_batch);
                    queue.drain(..take).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let body = encode(&self.config.resource, &batch);
                if let Err(why) = self.send(&client, body).await {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        eprintln!(
                            "comb: cannot export spans to {} ({why}); {failures} batches lost so far",
                            self.config.endpoint
                        );
                    }
                }
                if self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
                    < self.config.max_batch
                    && flushed.is_none()
                {
                    break;
                }
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                eprintln!(
                    "comb: {dropped} spans dropped: more finished than {} could take (raise OTEL_BSP_MAX_QUEUE_SIZE, or sample with OTEL_TRACES_SAMPLER)",
                    self.config.endpoint
                );
            }
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    async fn send(&self, client: &reqwest::Client, body: Vec<u8>) -> Result<(), String> {
        let mut request = client
            .post(&self.config.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        for (key, value) in &self.config.headers {
            request = request.header(key, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("it answered {}", response.status())),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Protobuf writing for the few OTLP messages sent: spans are encoded straight from the
/// layer's records, with no intermediate message structs (an export runs for every batch
/// of every instance, all the time).
mod wire {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

    pub(super) fn bytes_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    pub(super) fn varint_field(out: &mut Vec<u8>, tag: u32, value: u64) {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }

    pub(super) fn fixed64_field(out: &mut Vec<u8>, tag: u32, value: u64) {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn fixed32_field(out: &mut Vec<u8>, tag: u32, value: u32) {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }

    /// A length-delimited field whose contents `write` appends; the length is filled in
    /// after, shifting the contents only when it needs more than one byte.
    pub(super) fn message_field(out: &mut Vec<u8>, tag: u32, write: impl FnOnce(&mut Vec<u8>)) {
        encode_key(tag, WireType::LengthDelimited, out);
        let at = out.len();
        out.push(0);
        write(out);
        let len = out.len() - at - 1;
        let width = encoded_len_varint(len as u64);
        let mut prefix = Vec::with_capacity(width);
        encode_varint(len as u64, &mut prefix);
        out.splice(at..=at, prefix);
    }
}

/// The `KeyValue` of a string attribute, as an OTLP field `tag`.
fn write_string_attribute(out: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    wire::message_field(out, tag, |kv| {
        wire::bytes_field(kv, 1, key.as_bytes());
        wire::message_field(kv, 2, |any| wire::bytes_field(any, 1, value.as_bytes()));
    });
}

fn write_attribute(out: &mut Vec<u8>, key: &str, value: &AttributeValue) {
    wire::message_field(out, 9, |kv| {
        wire::bytes_field(kv, 1, key.as_bytes());
        wire::message_field(kv, 2, |any| match value {
            AttributeValue::Str(text) => wire::bytes_field(any, 1, text.as_bytes()),
            AttributeValue::Bool(flag) => wire::varint_field(any, 2, u64::from(*flag)),
            AttributeValue::Int(number) => wire::varint_field(any, 3, *number as u64),
            AttributeValue::Float(number) => wire::fixed64_field(any, 4, number.to_bits()),
        });
    });
}

fn write_span(out: &mut Vec<u8>, finished: &FinishedSpan) {
    let record = &finished.record;
    let kind = match record.kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    };
    wire::message_field(out, 2, |span| {
        wire::bytes_field(span, 1, &record.context.trace_id.to_be_bytes());
        wire::bytes_field(span, 2, &record.context.span_id.to_be_bytes());
        if record.parent_span_id != 0 {
            wire::bytes_field(span, 4, &record.parent_span_id.to_be_bytes());
        }
        wire::bytes_field(span, 5, record.name.as_bytes());
        wire::varint_field(span, 6, kind as u64);
        wire::fixed64_field(span, 7, record.start_unix_nano);
        wire::fixed64_field(span, 8, finished.end_unix_nano.max(record.start_unix_nano));
        for (key, value) in &record.attributes {
            write_attribute(span, key, value);
        }
        if record.error {
            wire::message_field(span, 15, |status| {
                wire::varint_field(status, 3, status::StatusCode::Error as u64);
            });
        }
        // The W3C trace flags: sampled.
        wire::fixed32_field(span, 16, u32::from(record.context.sampled));
    });
}

/// One OTLP `ExportTraceServiceRequest`, protobuf-encoded: the spans of one resource.
pub fn encode(resource: &[(String, String)], batch: &[FinishedSpan]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + batch.len() * 320);
    wire::message_field(&mut out, 1, |resource_spans| {
        wire::message_field(resource_spans, 1, |attributes| {
            for (key, value) in resource {
                write_string_attribute(attributes, 1, key, value);
            }
        });
        wire::message_field(resource_spans, 2, |scope_spans| {
            wire::message_field(scope_spans, 1, |scope| {
                wire::bytes_field(scope, 1, b"comb");
                wire::bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for finished in batch {
                write_span(scope_spans, finished);
            }
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;
    use crate::trace::{SpanContext, SpanRecord};

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn the_standard_variables_configure_the_export() {
        assert_eq!(
            ExportConfig::from_env(env(&[]), "catalog", "catalog-1"),
            None
        );
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(ExportConfig::from_env(off, "catalog", "catalog-1"), None);
        let config = ExportConfig::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=a%20b, x-team = shop"),
                ("OTEL_BSP_SCHEDULE_DELAY", "500"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=lab,service.name=nope",
                ),
            ]),
            "catalog",
            "catalog-1",
        )
        .expect("configured")
        .expect("valid");
        assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            config.headers,
            [
                ("x-token".to_owned(), "a b".to_owned()),
                ("x-team".to_owned(), "shop".to_owned())
            ]
        );
        assert_eq!(config.schedule_delay, Duration::from_millis(500));
        assert_eq!((config.max_queue, config.max_batch), (100, 100));
        assert!(
            config
                .resource
                .contains(&("service.name".to_owned(), "catalog".to_owned()))
        );
        assert!(
            config
                .resource
                .contains(&("deployment.environment".to_owned(), "lab".to_owned()))
        );
        let traces_url = ExportConfig::from_env(
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://x/custom")]),
            "a",
            "a-1",
        );
        assert_eq!(
            traces_url.expect("set").expect("valid").endpoint,
            "https://x/custom"
        );
        let grpc = ExportConfig::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
            "a",
            "a-1",
        );
        assert!(
            grpc.expect("set")
                .expect_err("unsupported")
                .contains("http/protobuf")
        );
    }

    #[test]
    fn spans_encode_as_otlp() {
        let finished = FinishedSpan {
            record: SpanRecord {
                context: SpanContext {
                    trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                    span_id: 0x00f067aa0ba902b7,
                    sampled: true,
                },
                parent_span_id: 7,
                name: Cow::Borrowed("GET /things"),
                kind: SpanKind::Server,
                start_unix_nano: 10,
                error: true,
                attributes: vec![
                    ("http.route", AttributeValue::Str("/things".into())),
                    ("http.response.status_code", AttributeValue::Int(500)),
                    // Long enough that its lengths take two bytes.
                    ("note", AttributeValue::Str("x".repeat(300))),
                ],
            },
            end_unix_nano: 20,
        };
        let resource = [("service.name".to_owned(), "catalog".to_owned())];
        let bytes = encode(&resource, &[finished]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()
        );
        assert_eq!(span.parent_span_id, 7u64.to_be_bytes());
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (10, 20)
        );
        assert_eq!(span.attributes.len(), 3);
        assert_eq!(span.name, "GET /things");
        assert_eq!(span.flags, 1);
        let value = |index: usize| span.attributes[index].value.clone().and_then(|v| v.value);
        assert_eq!(
            value(0),
            Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                    "/things".into()
                )
            )
        );
        assert_eq!(
            value(1),
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(500))
        );
        let resource_spans = &decoded.resource_spans[0];
        let resource = resource_spans.resource.as_ref().expect("a resource");
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope = resource_spans.scope_spans[0]
            .scope
            .as_ref()
            .expect("a scope");
        assert_eq!(scope.name, "comb");
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
    }
}
