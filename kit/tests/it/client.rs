//! The resilient upstream channel against real servers: a dead instance is skipped for
//! retry-safe calls, and the caller's deadline reaches the callee.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use comb_contracts::events::v1::ReadRequest;
use comb_contracts::events::v1::event_feed_client::EventFeedClient;
use comb_kit::deadline::{parse_grpc_timeout, within};
use comb_kit::events;
use comb_kit::grpc::Upstream;
use comb_kit::storage::Database;
use comb_testkit::{TestDatabase, TestServer};

use crate::NO_MIGRATIONS;

/// A URL where nothing listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn retry_safe_calls_skip_a_dead_instance_and_carry_the_deadline() {
    let db = TestDatabase::sqlite();
    let producer = Database::open(&db.url, &NO_MIGRATIONS).await.unwrap();
    let timeouts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let seen = Arc::clone(&timeouts);
    let routes =
        events::feed_routes(Router::new(), &producer, "producer").layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let seen = Arc::clone(&seen);
                async move {
                    if let Some(timeout) = request
                        .headers()
                        .get("grpc-timeout")
                        .and_then(|value| value.to_str().ok())
                        .and_then(parse_grpc_timeout)
                    {
                        seen.lock().unwrap().push(timeout);
                    }
                    next.run(request).await
                }
            },
        ));
    let server = TestServer::start(routes).await;
    let upstream = Upstream::new(
        "producer",
        &[dead_url(), server.url()],
        Duration::from_secs(2),
    )
    .unwrap();
    let read = || ReadRequest {
        after: 0,
        limit: 10,
        wait_ms: 0,
    };

    // Feed reads are declared free of side effects: a call that lands on the dead
    // instance goes on to the live one, and the dead one is soon ejected.
    for _ in 0..20 {
        EventFeedClient::new(upstream.channel())
            .read(read())
            .await
            .expect("every read answered");
    }

    // Inside a request with 300 ms left, the callee is told so.
    timeouts.lock().unwrap().clear();
    within(
        tokio::time::Instant::now() + Duration::from_millis(300),
        async {
            EventFeedClient::new(upstream.channel())
                .read(read())
                .await
                .expect("answered");
        },
    )
    .await;
    let told = timeouts.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0] <= Duration::from_millis(300) && told[0] > Duration::from_millis(200),
        "{told:?}"
    );

    // With no time left, the call is not even sent.
    timeouts.lock().unwrap().clear();
    let status = within(tokio::time::Instant::now(), async {
        EventFeedClient::new(upstream.channel()).read(read()).await
    })
    .await
    .expect_err("no time left");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(timeouts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn calls_to_a_dead_service_open_its_breaker() {
    let upstream = Upstream::new("producer", &[dead_url()], Duration::from_secs(1)).unwrap();
    for _ in 0..5 {
        let status = EventFeedClient::new(upstream.channel())
            .read(ReadRequest::default())
            .await
            .expect_err("nothing listens");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    assert!(matches!(
        upstream.breaker(),
        comb_kit::grpc::BreakerState::Open(_)
    ));
    let status = EventFeedClient::new(upstream.channel())
        .read(ReadRequest::default())
        .await
        .expect_err("fails fast");
    assert_eq!(
        comb_kit::grpc::Refusal::of(&status),
        Some(comb_kit::grpc::Refusal::CircuitOpen),
        "{status:?}"
    );
    // The REST answer says so in words, without the gateway reading the message.
    let problem = comb_kit::grpc::problem_from_status("producer", &status);
    assert!(problem.detail.contains("paused"), "{}", problem.detail);
}
