use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::{System, Upstreams, gateway_for, problem};

/// However the catalog fails, the gateway answers in bounded time.
const NEVER_HANGS: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_stopped_catalog_means_503_at_once() {
    let mut system = System::start().await;
    system.json("/api/v1/products").await;
    system.catalog.stop().await;
    let started = Instant::now();
    let response = tokio::time::timeout(NEVER_HANGS, system.get("/api/v1/products"))
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("catalog"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_catalog_that_never_answers_means_503_at_the_deadline() {
    // Accepts connections and never says a word.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let gateway = gateway_for(&Upstreams::all_at(&format!("http://{addr}")), 300).await;
    let started = Instant::now();
    let response = tokio::time::timeout(
        NEVER_HANGS,
        reqwest::get(format!("{}/api/v1/products/any", gateway.url())),
    )
    .await
    .unwrap()
    .unwrap();
    let body = problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("catalog"),
        "{body}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "waited for the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "and not much longer: {took:?}"
    );
}
