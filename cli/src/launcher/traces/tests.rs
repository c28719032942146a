use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

use super::*;

fn add(collector: &Collector, request: &ExportTraceServiceRequest) {
    collector
        .add(Bytes::from(request.encode_to_vec()))
        .expect("a valid export");
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn span(trace: u8, id: u8, parent: Option<u8>, start: u64, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        status: Some(Status {
            code: if name.contains("fail") {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", service),
                    text("service.instance.id", &format!("{service}-1")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn spans_from_several_services_make_one_trace_in_tree_order() {
    let collector = Collector::new(None);
    // The child's batch arrives before its parent's, as exports race.
    add(
        &collector,
        &export(
            "orders",
            vec![
                span(1, 3, Some(2), 20, "CreateOrder"),
                span(1, 4, Some(3), 30, "fail"),
            ],
        ),
    );
    add(
        &collector,
        &export(
            "gateway",
            vec![
                span(1, 2, None, 10, "POST /api/v1/orders"),
                span(1, 5, Some(2), 15, "auth"),
            ],
        ),
    );
    add(
        &collector,
        &export("catalog", vec![span(9, 1, None, 5, "GET")]),
    );

    let recent = collector.recent(None, 10);
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].trace_id, "09".repeat(16), "newest first");
    assert_eq!(recent[1].trace_id, "01".repeat(16));
    assert_eq!(recent[1].name, "POST /api/v1/orders");
    assert_eq!(recent[1].service, "gateway");
    assert_eq!(recent[1].services, ["gateway", "orders"]);
    assert_eq!(recent[1].span_count, 4);
    assert!(recent[1].error);
    assert!(!recent[0].error);
    assert_eq!(collector.recent(Some("catalog"), 10).len(), 1);

    let tree = collector.trace(&"01".repeat(16)).expect("kept");
    let shape: Vec<(usize, &str)> = tree.iter().map(|(d, s)| (*d, s.name.as_str())).collect();
    assert_eq!(
        shape,
        [
            (0, "POST /api/v1/orders"),
            (1, "auth"),
            (1, "CreateOrder"),
            (2, "fail")
        ]
    );
    assert_eq!(tree[2].1.instance, "orders-1");
    assert!(collector.trace("ff").is_none());
}

#[tokio::test]
async fn the_oldest_traces_make_room() {
    let collector = Collector::new(None);
    for trace in 0..=u8::MAX {
        for round in 0..8u64 {
            let mut request = export("catalog", vec![span(trace, 1, None, 1, "GET")]);
            request.resource_spans[0].scope_spans[0].spans[0].trace_id[0] = round as u8;
            add(&collector, &request);
        }
    }
    assert_eq!(collector.recent(None, usize::MAX).len(), KEPT_TRACES);
}

#[test]
fn instances_export_to_the_launcher_unless_tracing_is_off() {
    let vars = instance_env("http://127.0.0.1:9", |_| None);
    assert_eq!(
        vars["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        "http://127.0.0.1:9/v1/traces"
    );
    assert_eq!(vars["OTEL_BSP_SCHEDULE_DELAY"], "500");
    let kept = instance_env("http://x", |name| {
        (name == "OTEL_BSP_SCHEDULE_DELAY").then(|| "5000".to_owned())
    });
    assert!(!kept.contains_key("OTEL_BSP_SCHEDULE_DELAY"));
    let off = instance_env("http://x", |name| {
        (name == "OTEL_SDK_DISABLED").then(|| "true".to_owned())
    });
    assert!(off.is_empty());
}

#[test]
fn the_forward_target_comes_from_the_standard_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    };
    assert!(Forward::from_env(env(&[])).is_none());
    let base = Forward::from_env(env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=abc, x-team = shop"),
    ]))
    .expect("configured");
    assert_eq!(base.url(), "http://jaeger:4318/v1/traces");
    assert_eq!(
        base.headers,
        [
            ("x-token".to_owned(), "abc".to_owned()),
            ("x-team".to_owned(), "shop".to_owned())
        ]
    );
    let traces = Forward::from_env(env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/traces"),
    ]))
    .expect("configured");
    assert_eq!(traces.url(), "http://b:4318/traces");
}
