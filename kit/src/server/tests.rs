use super::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

async fn call(app: Router, method: &str, path: &str) -> (StatusCode, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readiness_follows_the_flag() {
    let readiness = Readiness::default();
    let app = app(Router::new(), readiness.clone());
    assert_eq!(
        call(app.clone(), "GET", "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    readiness.set(true);
    assert_eq!(call(app.clone(), "GET", "/readyz").await.0, StatusCode::OK);
    assert_eq!(call(app, "GET", "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let routes = Router::new().route("/things", get(|| async { "things" }));
    let app = app(routes, Readiness::default());
    let response = app
        .clone()
        .oneshot(
            http::Request::get("/nothing")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert!(
        response.headers().contains_key("x-request-id"),
        "every answer has a request id"
    );
    let (status, body) = call(app.clone(), "GET", "/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("/problems/not-found"), "{body}");
    let (status, body) = call(app, "DELETE", "/things").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("DELETE is not allowed"), "{body}");
}

/// A route that reports when a request has arrived and answers when released.
fn held_route(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/held",
        get(move || {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        }),
    )
}

async fn raw_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn stopping_finishes_in_flight_requests_and_turns_unready() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let readiness = Readiness::default();
    readiness.set(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = app(
        held_route(entered.clone(), release.clone()),
        readiness.clone(),
    );
    let serving = tokio::spawn(server.run(
        app,
        readiness.clone(),
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(30),
    ));
    let in_flight = tokio::spawn(raw_get(addr, "/held"));
    entered.notified().await;
    stop.send(()).expect("server running");
    while readiness.is_ready() {
        tokio::task::yield_now().await;
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections while draining"
    );
    release.notify_one();
    let answer = in_flight.await.expect("task").expect("answer");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
        "{answer}"
    );
    serving.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn the_drain_deadline_bounds_a_stuck_request() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let readiness = Readiness::default();
    let app = app(held_route(entered.clone(), release), readiness.clone());
    let serving = tokio::spawn(server.run(
        app,
        readiness,
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(100),
    ));
    let _stuck = tokio::spawn(raw_get(addr, "/held"));
    entered.notified().await;
    stop.send(()).expect("server running");
    let result = tokio::time::timeout(Duration::from_secs(10), serving).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "the server stops at the deadline"
    );
}

/// A server with short timeouts, the held route, a quick route and a route that takes a
/// body, limited to one request in flight.
async fn strict_server(
    entered: Arc<Notify>,
    release: Arc<Notify>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind")
        .with_timeouts(Timeouts {
            header: Duration::from_millis(300),
            body: Duration::from_millis(300),
            request: Duration::from_millis(500),
            idle: Duration::from_secs(60),
        });
    let addr = server.local_addr();
    let routes = held_route(entered, release)
        .route("/quick", get(|| async { "quick" }))
        .route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        );
    let routes = crate::overload::limit_in_flight(routes, 1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let readiness = Readiness::default();
    tokio::spawn(server.run(
        app(routes, readiness.clone()),
        readiness,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    (addr, stop)
}

/// What the server sends on a connection until it closes it (bounded, so a server that
/// never closes fails the test instead of hanging it).
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    let _ = read;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_half_sent_request_is_closed_at_the_header_timeout_while_others_are_served() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (addr, _stop) = strict_server(entered, release).await;
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /quick HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("write");
    let answer = raw_get(addr, "/quick").await.expect("answer");
    assert!(answer.ends_with("quick"), "{answer}");
    let started = std::time::Instant::now();
    let left = until_closed(&mut half).await;
    assert!(
        !left.contains("quick"),
        "a half-sent request is never served: {left}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at the header timeout"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (addr, _stop) = strict_server(entered, release).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("quick"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_slow_body_holds_no_place_and_times_out() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (addr, _stop) = strict_server(entered, release).await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nab")
        .await
        .expect("write");
    // Only one request may be in flight; the trickling body does not count as one.
    let answer = raw_get(addr, "/quick").await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refused = until_closed(&mut slow).await;
    assert!(refused.starts_with("HTTP/1.1 408"), "{refused}");
    assert!(
        refused.contains("did not arrive within 300 ms"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_body_larger_than_the_instance_reads_is_refused_unread() {
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind")
        .with_max_body(1024);
    let addr = server.local_addr();
    let routes = Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body }),
    );
    let readiness = Readiness::default();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(
        app(routes, readiness.clone()),
        readiness,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = "x".repeat(4096);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn an_answer_that_takes_too_long_is_cut_off() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (addr, _stop) = strict_server(entered, release).await;
    let answer = raw_get(addr, "/held").await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    // The request's place is given back: the next one is served.
    let answer = raw_get(addr, "/quick").await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_idle_only_after_nothing_moved_for_the_whole_time() {
    let (io, activity) = Watched::new(());
    drop(io);
    let idle = Duration::from_secs(60);
    tokio::time::advance(Duration::from_secs(50)).await;
    activity.touch();
    let waited = tokio::time::Instant::now();
    activity.idle_for(idle).await;
    assert_eq!(
        waited.elapsed(),
        Duration::from_secs(60),
        "counted from the last touch"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_are_served_to_operators_only() {
    let routes = Router::new().route("/things/{id}", get(|| async { "a thing" }));
    let app = app(routes, Readiness::default());
    call(app.clone(), "GET", "/things/7").await;
    let (public, _) = call(app, "GET", "/metrics").await;
    assert_eq!(
        public,
        StatusCode::NOT_FOUND,
        "no metrics where callers call"
    );
    let (status, body) = call(admin_app(Readiness::default(), None), "GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.lines()
            .any(|line| line.starts_with("http_server_requests_total")
                && line.contains("route=\"/things/{id}\"")
                && line.contains("status=\"200\"")),
        "{body}"
    );
    assert!(
        body.contains("http_server_request_duration_seconds_bucket"),
        "{body}"
    );
}
