//! Distributed tracing: W3C trace context carried through HTTP, gRPC and events, so one
//! checkout is one trace across every service it touches.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer installed by
//! [`crate::telemetry::init`] gives them trace and span ids and, when the standard
//! `OTEL_EXPORTER_OTLP_*` variables are set, exports them over OTLP/HTTP. This module
//! moves the context across process boundaries: [`trace_request`] continues the caller's
//! trace in every server, [`crate::grpc::UpstreamChannel`] starts a client span and sends
//! its context with every gRPC call, and events carry the `traceparent` of the span that
//! published them.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::{REQUEST_ID_HEADER, is_grpc};

/// The W3C header naming the trace and span a request belongs to.
pub const TRACEPARENT: &str = "traceparent";
/// The response header telling a caller which trace its request became.
pub const TRACERESPONSE: &str = "traceresponse";

/// Paths that are never traced: probes and scrapes arrive every second and say nothing
/// about what users do; a feed read is a long poll that would bury real traces.
fn untraced(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/comb.events.v1.EventFeed/")
}

/// The trace and span id of `span`, as lowercase hex, when it is being traced.
pub fn ids(span: &Span) -> Option<(String, String)> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// The W3C `traceparent` of `span`, or an empty string when it is not traced.
pub fn traceparent(span: &Span) -> String {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the span `traceparent` names (an event's publisher, a resumed
/// saga's first request). An empty or malformed value leaves `span` where it was.
pub fn follow(span: &Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only once the span has started; these spans are fresh.
        let _ = span.set_parent(parent);
    }
}

fn follow_headers(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

pub(crate) fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Axum middleware running every request in a server span that continues the caller's
/// trace (its `traceparent` header) or starts one. The answer's `traceresponse` header
/// names the trace, so a caller can look it up.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if untraced(path) {
        return next.run(request).await;
    }
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let grpc = is_grpc(&request) && matched.is_some();
    let method = request.method().as_str().to_owned();
    // Names come from a bounded set: a route or an RPC, never a raw path.
    let (name, route) = if grpc {
        let rpc = path.trim_start_matches('/').to_owned();
        (rpc.clone(), rpc)
    } else {
        let route = matched.unwrap_or_default();
        let name = if route.is_empty() {
            method.clone()
        } else {
            format!("{method} {route}")
        };
        (name, route)
    };
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = if grpc { "grpc" } else { "" },
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        rpc.grpc.status_code = Empty,
        request_id = %request_id,
    );
    follow_headers(&span, request.headers());
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let grpc_code = grpc_status(&response);
    if let Some(code) = grpc_code {
        span.record("rpc.grpc.status_code", code);
    }
    if status >= 500 || grpc_code.is_some_and(grpc_server_error) {
        span.record("otel.status_code", "ERROR");
    }
    let header = traceparent(&span);
    if let Ok(value) = HeaderValue::from_str(&header) {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    response
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

    #[test]
    fn probes_scrapes_and_feed_reads_are_not_traced() {
        assert!(untraced("/healthz"));
        assert!(untraced("/metrics"));
        assert!(untraced("/comb.events.v1.EventFeed/Read"));
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
}
