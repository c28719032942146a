use super::*;

const EXPOSITION: &str = r#"# HELP http_server_requests_total Requests served
# TYPE http_server_requests_total counter
http_server_requests_total{route="/api/v1/products",method="GET",status="200"} 40
http_server_requests_total{route="/api/v1/orders",method="POST",status="503"} 2
http_server_requests_total{route="/comb.orders.v1.Orders/CreateOrder",method="grpc",status="14"} 1
http_server_requests_total{route="/comb.orders.v1.Orders/GetOrder",method="grpc",status="5"} 3
http_server_requests_total{route="/readyz",method="GET",status="200"} 900
http_server_requests_total{route="/comb.events.v1.EventFeed/Read",method="grpc",status="0"} 7
http_server_request_duration_seconds_bucket{route="/comb.events.v1.EventFeed/Read",method="grpc",le="+Inf"} 7
http_server_request_duration_seconds_bucket{route="/api/v1/products",method="GET",le="0.005"} 30
http_server_request_duration_seconds_bucket{route="/api/v1/products",method="GET",le="0.05"} 39
http_server_request_duration_seconds_bucket{route="/api/v1/products",method="GET",le="0.25"} 40
http_server_request_duration_seconds_bucket{route="/api/v1/products",method="GET",le="+Inf"} 40
http_server_request_duration_seconds_bucket{route="/readyz",method="GET",le="0.005"} 900
http_server_request_duration_seconds_bucket{route="/readyz",method="GET",le="+Inf"} 900
comb_orders_placed_total 5
"#;

#[test]
fn red_figures_leave_probes_out_and_count_server_failures() {
    let red = red_figures(EXPOSITION);
    assert_eq!(red.requests, 46.0);
    assert_eq!(
        red.errors, 3.0,
        "a 503 and a gRPC unavailable, not a not-found"
    );
    assert_eq!(red.p99_ms, Some(250.0));
    assert_eq!(red_figures("").p99_ms, None);
}

#[test]
fn sample_lines_are_split_into_name_labels_and_value() {
    let (name, labels, value) = sample(r#"m{a="x,y",b="q\"uote"} 2.5"#).expect("a sample");
    assert_eq!(name, "m");
    assert_eq!(
        labels,
        [
            ("a".to_owned(), "x,y".to_owned()),
            ("b".to_owned(), "q\"uote".to_owned())
        ]
    );
    assert_eq!(value, 2.5);
    assert_eq!(sample("plain 3").map(|s| s.2), Some(3.0));
    assert!(sample("# TYPE m counter").is_none());
    assert!(sample("broken{a=x} 1").is_none());
}

#[test]
fn a_waterfall_bar_stays_inside_its_track() {
    let span = SpanRecord {
        trace_id: "t".into(),
        span_id: "s".into(),
        parent_span_id: String::new(),
        name: "GET <script>".into(),
        service: "gateway".into(),
        instance: "gateway-1".into(),
        kind: "server",
        start_unix_nano: 1_000,
        end_unix_nano: 1_000,
        error: false,
        attributes: vec![],
    };
    let html = span_row(0, &span, 0, 1_000.0).into_string();
    assert!(html.contains("left:99.80%;width:0.20%"), "{html}");
    assert!(html.contains("GET &lt;script&gt;"), "names are escaped");
}
