//! A caller's watch of a service's data version, against a real server: it learns the
//! version, follows each commit, forgets it on the caller's own write until it learns it
//! again, and forgets it when the instance stops.

use std::time::{Duration, Instant};

use axum::Router;
use comb_kit::events::Event;
use comb_kit::grpc::Upstream;
use comb_kit::storage::Database;
use comb_kit::versions::{VersionWatch, WATCH_WAIT, version_routes};
use comb_testkit::{TestDatabase, TestServer};
use serde_json::json;

use crate::NO_MIGRATIONS;

/// Waits until the watch knows a version for which `accept` holds.
async fn until(watch: &VersionWatch, what: &str, accept: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let current = watch.current();
        if accept(current) {
            return current;
        }
        assert!(Instant::now() < deadline, "{what}: still {current}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_watch_follows_commits_and_forgets_on_writes_and_stops() {
    let db = TestDatabase::sqlite();
    let producer = Database::open(&db.url, &NO_MIGRATIONS).await.unwrap();
    let mut server = TestServer::start(version_routes(Router::new(), &producer)).await;
    let upstream = Upstream::new(
        "producer",
        &[server.url()],
        WATCH_WAIT + Duration::from_secs(5),
    )
    .unwrap();
    let watch = VersionWatch::start(&upstream);
    let first = until(&watch, "learns the version", |v| v != 0).await;

    // A commit of the service moves the version, and the watch follows within a round
    // trip (far sooner than its poll's wait).
    let event = Event::new("producer", "test.a", "subject-1", &json!({})).unwrap();
    let mut tx = producer.begin_write().await.unwrap();
    comb_kit::events::publish(&producer, &mut tx, &event)
        .await
        .unwrap();
    comb_kit::events::commit(&producer, tx).await.unwrap();
    let second = until(&watch, "follows a commit", |v| v != 0 && v != first).await;

    // The caller's own write: nothing kept is current until the version is learnt again.
    watch.wrote();
    assert!(!watch.is_current(second));
    until(&watch, "learns the version again", |v| v == second).await;

    // A stopping instance vouches for nothing.
    server.stop().await;
    until(&watch, "forgets the version of a stopped instance", |v| {
        v == 0
    })
    .await;
}
