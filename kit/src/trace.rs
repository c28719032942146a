//! Distributed tracing: W3C trace context carried through HTTP, gRPC and events, so one
//! checkout is one trace across every service it touches.
//!
//! Spans are `tracing` spans. The kit's [`SpanLayer`] (installed by
//! [`crate::telemetry::init`]) gives each one a trace id and a span id, inherited from its
//! parent span or from the `traceparent` it was told to [`follow`], keeps its name, kind,
//! status and fields, and hands it to the OTLP exporter ([`crate::otlp`]) when it closes,
//! if the trace is sampled and an exporter is configured. Ids exist whether or not spans
//! leave the process: log lines carry them and answers name their trace.
//!
//! Fields with an `otel.` prefix describe the span itself, as tracing-opentelemetry reads
//! them: `otel.name` (the span's name), `otel.kind` (`server`, `client`, `producer`,
//! `consumer`, `internal`) and `otel.status_code` (`ERROR`). Every other field is an
//! attribute.
//!
//! This module also moves the context across process boundaries: [`observe`] continues the
//! caller's trace in every server, [`crate::grpc::UpstreamChannel`] starts a client span and
//! sends its context with every gRPC call, and events carry the `traceparent` of the span
//! that published them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::otlp::Exporter;

/// The W3C header naming the trace and span a request belongs to.
pub const TRACEPARENT: &str = "traceparent";
/// The response header telling a caller which trace its request became.
pub const TRACERESPONSE: &str = "traceresponse";

/// Paths that are never traced: probes and scrapes arrive every second and say nothing
/// about what users do; a feed read is a long poll, and a media worker's asking for a job
/// or renewing its lease a steady beat, that would bury real traces.
pub(crate) fn untraced(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/comb.media.v1.Media/LeaseJob"
            | "/comb.media.v1.Media/Heartbeat"
    ) || path.starts_with("/comb.events.v1.EventFeed/")
}

/// A span's place in its trace: what `traceparent` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// Whether the trace is recorded (the W3C `sampled` flag).
    pub sampled: bool,
}

impl SpanContext {
    /// The W3C `traceparent` value: `00-TRACE_ID-SPAN_ID-FLAGS`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Parses a W3C `traceparent`. Versions after 00 are read as 00 (their first four
    /// fields mean the same); version ff, all-zero ids and malformed values are refused.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.splitn(5, '-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        let lowercase_hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lowercase_hex(version, 2)
            || version == "ff"
            || (version == "00" && parts.next().is_some())
            || !lowercase_hex(trace_id, 32)
            || !lowercase_hex(span_id, 16)
            || !lowercase_hex(flags, 2)
        {
            return None;
        }
        let context = Self {
            trace_id: u128::from_str_radix(trace_id, 16).ok()?,
            span_id: u64::from_str_radix(span_id, 16).ok()?,
            sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1,
        };
        (context.trace_id != 0 && context.span_id != 0).then_some(context)
    }
}

/// What kind of span, as OpenTelemetry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    fn parse(text: &str) -> Self {
        match text {
            "server" | "SERVER" => Self::Server,
            "client" | "CLIENT" => Self::Client,
            "producer" | "PRODUCER" => Self::Producer,
            "consumer" | "CONSUMER" => Self::Consumer,
            _ => Self::Internal,
        }
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Which traces are recorded, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Children follow their parent's decision (the `parentbased_` samplers).
    parent_based: bool,
    /// The share of new traces recorded, 0 to 1.
    ratio: f64,
}

impl Default for Sampler {
    /// `parentbased_always_on`, OpenTelemetry's default.
    fn default() -> Self {
        Self {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

impl Sampler {
    /// The sampler the standard variables name; an unknown name keeps the default and says
    /// so on stderr.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let argument = env("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|arg| arg.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .unwrap_or(1.0);
        let Some(name) = env("OTEL_TRACES_SAMPLER") else {
            return Self::default();
        };
        let (parent_based, ratio) = match name.trim() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, argument),
            "parentbased_always_on" | "" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, argument),
            other => {
                eprintln!(
                    "comb: OTEL_TRACES_SAMPLER={other:?} is not a sampler comb knows; using parentbased_always_on (or use always_on, always_off, traceidratio, parentbased_traceidratio, parentbased_always_off)"
                );
                (true, 1.0)
            }
        };
        Self {
            parent_based,
            ratio,
        }
    }

    /// Whether a span of `trace_id` is recorded, given its parent's decision if it has a
    /// parent. Ratio sampling looks at the trace id alone, so every service decides the
    /// same for one trace.
    fn sample(&self, trace_id: u128, parent_sampled: Option<bool>) -> bool {
        match parent_sampled {
            Some(sampled) if self.parent_based => sampled,
            _ => {
                if self.ratio >= 1.0 {
                    true
                } else if self.ratio <= 0.0 {
                    false
                } else {
                    // The trace id's low 64 bits are random in every W3C-conformant tracer.
                    let bound = (self.ratio * u64::MAX as f64) as u64;
                    (trace_id as u64) < bound
                }
            }
        }
    }
}

/// What the layer keeps of a span while it is open.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub context: SpanContext,
    /// 0 for the root of a trace.
    pub parent_span_id: u64,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub error: bool,
    pub attributes: Vec<(&'static str, AttributeValue)>,
}

/// A span that has ended, waiting to be exported.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub record: SpanRecord,
    pub end_unix_nano: u64,
}

pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// A trace or span id: random and never zero.
fn random_nonzero<T: Default + PartialEq>(random: impl Fn() -> T) -> T {
    loop {
        let id = random();
        if id != T::default() {
            return id;
        }
    }
}

/// Reads a span's fields into its record: `otel.*` fields describe the span, the others
/// become attributes (empty strings are left out: they say nothing).
struct Fields<'a>(&'a mut SpanRecord);

impl Fields<'_> {
    fn text(&mut self, field: &Field, text: Cow<'_, str>) {
        match field.name() {
            "otel.name" => self.0.name = Cow::Owned(text.into_owned()),
            "otel.kind" => self.0.kind = SpanKind::parse(&text),
            "otel.status_code" => self.0.error = text.eq_ignore_ascii_case("error"),
            _ if text.is_empty() => {}
            name => self.set(name, AttributeValue::Str(text.into_owned())),
        }
    }

    fn set(&mut self, name: &'static str, value: AttributeValue) {
        match self.0.attributes.iter_mut().find(|(key, _)| *key == name) {
            Some((_, existing)) => *existing = value,
            None => self.0.attributes.push((name, value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, Cow::Borrowed(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), AttributeValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(
            field.name(),
            AttributeValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), AttributeValue::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), AttributeValue::Bool(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, Cow::Owned(format!("{value:?}")));
    }
}

/// The `tracing` layer that makes spans into trace spans: ids, parents, sampling, and
/// export when they close.
pub struct SpanLayer {
    sampler: Sampler,
    exporter: Option<Arc<Exporter>>,
}

impl SpanLayer {
    pub fn new(sampler: Sampler, exporter: Option<Arc<Exporter>>) -> Self {
        Self { sampler, exporter }
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<SpanRecord>().map(|r| r.context));
        let trace_id = parent.map_or_else(|| random_nonzero(rand::random::<u128>), |p| p.trace_id);
        let mut record = SpanRecord {
            context: SpanContext {
                trace_id,
                span_id: random_nonzero(rand::random::<u64>),
                sampled: self.sampler.sample(trace_id, parent.map(|p| p.sampled)),
            },
            parent_span_id: parent.map_or(0, |p| p.span_id),
            name: Cow::Borrowed(attrs.metadata().name()),
            kind: SpanKind::Internal,
            start_unix_nano: unix_nanos(),
            error: false,
            attributes: Vec::with_capacity(attrs.fields().len()),
        };
        attrs.record(&mut Fields(&mut record));
        span.extensions_mut().insert(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(record) = span.extensions_mut().get_mut::<SpanRecord>()
        {
            values.record(&mut Fields(record));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        if let Some(span) = ctx.span(&id)
            && let Some(record) = span.extensions_mut().remove::<SpanRecord>()
            && record.context.sampled
        {
            exporter.push(FinishedSpan {
                record,
                end_unix_nano: unix_nanos(),
            });
        }
    }
}

/// Runs `f` on `span`'s record, when the span is enabled and the kit's layer keeps it.
fn with_record<T>(span: &Span, f: impl FnOnce(&mut SpanRecord) -> T) -> Option<T> {
    let mut f = Some(f);
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        let record = extensions.get_mut::<SpanRecord>()?;
        f.take().map(|f| f(record))
    })
    .flatten()
}

/// The trace context of `span`, when it is being traced.
pub fn context(span: &Span) -> Option<SpanContext> {
    with_record(span, |record| record.context)
}

/// The trace and span id of `span`, as lowercase hex, when it is being traced.
pub fn ids(span: &Span) -> Option<(String, String)> {
    context(span).map(|context| {
        (
            format!("{:032x}", context.trace_id),
            format!("{:016x}", context.span_id),
        )
    })
}

/// The W3C `traceparent` of `span`, or an empty string when it is not traced.
pub fn traceparent(span: &Span) -> String {
    context(span)
        .map(|context| context.traceparent())
        .unwrap_or_default()
}

/// Makes `span` a child of the span `traceparent` names (a caller, an event's publisher,
/// a resumed saga's first request). An empty or malformed value leaves `span` where it
/// was. Call it before the span has children.
pub fn follow(span: &Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    if let Some(parent) = SpanContext::parse(traceparent) {
        adopt(span, parent);
    }
}

/// Gives `span` the remote `parent`: its trace, its span as parent, and (with a
/// parent-based sampler) its sampling decision.
fn adopt(span: &Span, parent: SpanContext) {
    let sampler = sampler();
    with_record(span, |record| {
        record.context.trace_id = parent.trace_id;
        record.context.sampled = sampler.sample(parent.trace_id, Some(parent.sampled));
        record.parent_span_id = parent.span_id;
    });
}

/// The sampler of this process (the default until telemetry starts).
fn sampler() -> Sampler {
    crate::telemetry::sampler()
}

/// Makes `span` a child of the caller named by the request's `traceparent` header.
pub(crate) fn follow_headers(span: &Span, headers: &http::HeaderMap) {
    if let Some(parent) = headers
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(SpanContext::parse)
    {
        adopt(span, parent);
    }
}

/// Puts `span`'s context into outgoing headers as `traceparent`.
pub(crate) fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    if let Some(context) = context(span)
        && let Ok(value) = HeaderValue::from_str(&context.traceparent())
    {
        headers.insert(TRACEPARENT, value);
    }
}

/// The gRPC status in a response's headers: a failed unary call answers trailers-only.
pub(crate) fn grpc_status<B>(response: &http::Response<B>) -> Option<u16> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// gRPC codes that mean the server failed, as opposed to the caller asking wrongly:
/// unknown, deadline exceeded, unimplemented, internal, unavailable, data loss.
pub(crate) fn grpc_server_error(code: u16) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn probes_scrapes_and_feed_reads_are_not_traced() {
        assert!(untraced("/healthz"));
        assert!(untraced("/metrics"));
        assert!(untraced("/comb.events.v1.EventFeed/Read"));
        assert!(untraced("/comb.media.v1.Media/LeaseJob"));
        assert!(!untraced("/comb.media.v1.Media/CompleteJob"));
        assert!(!untraced("/api/v1/products"));
        assert!(!untraced("/comb.orders.v1.Orders/CreateOrder"));
    }

    #[test]
    fn server_errors_are_told_from_caller_errors() {
        assert!(grpc_server_error(14));
        assert!(grpc_server_error(13));
        assert!(!grpc_server_error(5));
        assert!(!grpc_server_error(3));
    }

    #[test]
    fn an_untraced_span_has_no_traceparent_and_a_bad_one_is_ignored() {
        let span = Span::none();
        assert_eq!(traceparent(&span), "");
        follow(&span, "not-a-traceparent");
        assert!(ids(&span).is_none());
    }

    #[test]
    fn traceparents_parse_and_print_as_w3c_says() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = SpanContext::parse(text).expect("valid");
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert!(context.sampled);
        assert_eq!(context.traceparent(), text);
        let unsampled = SpanContext::parse(&text.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled);
        // A later version may append fields; version 00 may not.
        assert!(SpanContext::parse(&format!("01{}-later", &text[2..])).is_some());
        for bad in [
            &format!("{text}-extra"),
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn samplers_follow_the_standard_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let default = Sampler::from_env(env(&[]));
        assert!(default.sample(1, None));
        assert!(
            !default.sample(1, Some(false)),
            "children follow their parent"
        );
        let off = Sampler::from_env(env(&[("OTEL_TRACES_SAMPLER", "always_off")]));
        assert!(!off.sample(1, Some(true)));
        let tenth = Sampler::from_env(env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ]));
        let kept = (0..10_000u128)
            .filter(|n| {
                tenth.sample(
                    n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                    None,
                )
            })
            .count();
        assert!((800..1200).contains(&kept), "{kept} of 10000 kept");
        assert!(
            tenth.sample(7, Some(true)),
            "a sampled parent's child is kept"
        );
    }

    #[test]
    fn spans_get_ids_parents_fields_and_remote_parents() {
        let subscriber =
            tracing_subscriber::registry().with(SpanLayer::new(Sampler::default(), None));
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!(
                "request",
                otel.name = "GET /things",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty
            );
            follow(
                &parent,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            let parent_context = context(&parent).expect("traced");
            assert_eq!(parent_context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
            let child =
                parent.in_scope(|| tracing::info_span!("grpc call", peer.service = "catalog"));
            let child_context = context(&child).expect("traced");
            assert_eq!(child_context.trace_id, parent_context.trace_id);
            assert_ne!(child_context.span_id, parent_context.span_id);
            let parent_id = with_record(&child, |record| record.parent_span_id);
            assert_eq!(parent_id, Some(parent_context.span_id));
            parent.record("otel.status_code", "ERROR");
            let (name, kind, error) =
                with_record(&parent, |r| (r.name.to_string(), r.kind, r.error)).expect("record");
            assert_eq!(
                (name.as_str(), kind, error),
                ("GET /things", SpanKind::Server, true)
            );
            assert_eq!(
                traceparent(&child),
                format!(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01",
                    child_context.span_id
                )
            );
            let root = tracing::info_span!("saga");
            let root_context = context(&root).expect("traced");
            assert_ne!(
                root_context.trace_id, parent_context.trace_id,
                "a new trace"
            );
        });
    }
}
