//! The event machinery over real databases and a real feed: outbox, feed, consumer,
//! inbox and parking, on SQLite and PostgreSQL; and the resilient upstream channel.

#![allow(clippy::unwrap_used)]

mod client;
mod versions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use comb_kit::events::{self, Consumer, Event, Handler, HandlerError};
use comb_kit::grpc::Upstream;
use comb_kit::storage::sql;
use comb_kit::storage::{Database, Migration, Migrations};
use comb_testkit::{TestDatabase, TestServer};
use serde_json::{Value, json};

const CONSUMER_MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "effects",
        sql: "CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT NOT NULL);",
    }],
    postgres: &[Migration {
        version: 1,
        description: "effects",
        sql: "CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT NOT NULL);",
    }],
};

pub(crate) const NO_MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};

/// Writes one row per handled event; refuses events whose data says `poison`.
struct Recorder;

#[tonic::async_trait]
impl Handler for Recorder {
    fn wants(&self, kind: &str) -> bool {
        kind.starts_with("test.")
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let data: Value = event.data()?;
        if data["poison"] == true {
            return Err(HandlerError::Poison(
                "this event can never be handled".into(),
            ));
        }
        sql::query("INSERT INTO effects (event_id, note) VALUES ($1, $2)")
            .bind(event.id.as_str())
            .bind(data["note"].as_str().unwrap_or_default())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn publish(db: &Database, kind: &str, data: Value, commit: bool) -> Event {
    let event = Event::new("producer", kind, "subject-1", &data).unwrap();
    let mut tx = db.begin_write().await.unwrap();
    events::publish(db, &mut tx, &event).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    event
}

async fn effects(db: &Database) -> Vec<String> {
    sql::query_scalar("SELECT note FROM effects ORDER BY note")
        .fetch_all(db)
        .await
        .unwrap()
}

struct Pair {
    producer: Database,
    consumer: Database,
    feed: Arc<Upstream>,
    _server: TestServer,
}

async fn pair(producer_db: &TestDatabase, consumer_db: &TestDatabase) -> Pair {
    let producer = Database::connect(&producer_db.url).await.unwrap();
    producer.migrate(&NO_MIGRATIONS).await.unwrap();
    let consumer = Database::connect(&consumer_db.url).await.unwrap();
    consumer.migrate(&CONSUMER_MIGRATIONS).await.unwrap();
    let server = TestServer::start(events::feed_routes(Router::new(), &producer, "producer")).await;
    let feed =
        Arc::new(Upstream::new("producer", &[server.url()], Duration::from_secs(5)).unwrap());
    Pair {
        producer,
        consumer,
        feed,
        _server: server,
    }
}

fn consumer(pair: &Pair) -> Consumer {
    let mut consumer = Consumer::new(
        pair.consumer.clone(),
        Arc::clone(&pair.feed),
        Arc::new(Recorder),
    );
    consumer.wait = Duration::from_millis(100);
    consumer.attempts = 2;
    consumer
}

#[tokio::test]
async fn events_flow_once_on_sqlite() {
    exercise(&TestDatabase::sqlite(), &TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn events_flow_once_on_postgres() {
    let (Some(producer), Some(consumer)) = (
        TestDatabase::postgres().await,
        TestDatabase::postgres().await,
    ) else {
        return;
    };
    exercise(&producer, &consumer).await;
}

async fn exercise(producer_db: &TestDatabase, consumer_db: &TestDatabase) {
    let pair = pair(producer_db, consumer_db).await;
    publish(&pair.producer, "test.a", json!({"note": "one"}), true).await;
    publish(
        &pair.producer,
        "test.a",
        json!({"note": "rolled back"}),
        false,
    )
    .await;
    publish(
        &pair.producer,
        "other.kind",
        json!({"note": "not wanted"}),
        true,
    )
    .await;
    publish(&pair.producer, "test.b", json!({"note": "two"}), true).await;
    let reader = consumer(&pair);
    assert_eq!(
        reader.poll_once().await.unwrap(),
        3,
        "a rolled-back event never leaves"
    );
    assert_eq!(effects(&pair.consumer).await, ["one", "two"]);
    assert_eq!(reader.poll_once().await.unwrap(), 0, "nothing new");

    // Redelivery (the position lost, then the consumer restarted, say) changes nothing:
    // the inbox remembers.
    sql::query("DELETE FROM feed_positions")
        .execute(&pair.consumer)
        .await
        .unwrap();
    let reader = consumer(&pair);
    assert_eq!(reader.poll_once().await.unwrap(), 3);
    assert_eq!(effects(&pair.consumer).await, ["one", "two"]);

    // A poison event is parked with its reason; the events after it flow.
    let poison = publish(&pair.producer, "test.c", json!({"poison": true}), true).await;
    publish(&pair.producer, "test.c", json!({"note": "three"}), true).await;
    assert_eq!(reader.poll_once().await.unwrap(), 2);
    assert_eq!(effects(&pair.consumer).await, ["one", "three", "two"]);
    let parked = events::parked(&pair.consumer).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, poison.id);
    assert_eq!(parked[0].reason, "this event can never be handled");
    assert_eq!(
        reader.poll_once().await.unwrap(),
        0,
        "the parked event is not read again"
    );
}

#[tokio::test]
async fn a_running_consumer_picks_up_new_events_by_long_poll() {
    let (producer_db, consumer_db) = (TestDatabase::sqlite(), TestDatabase::sqlite());
    let pair = pair(&producer_db, &consumer_db).await;
    let running = tokio::spawn(consumer(&pair).run());
    publish(&pair.producer, "test.a", json!({"note": "late"}), true).await;
    let started = Instant::now();
    while effects(&pair.consumer).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(effects(&pair.consumer).await, ["late"]);
    running.abort();
}

#[tokio::test]
async fn readers_woken_by_one_commit_read_the_outbox_once() {
    use comb_contracts::events::v1 as proto;
    use comb_contracts::events::v1::event_feed_client::EventFeedClient;
    let producer_db = TestDatabase::sqlite();
    let producer = Database::connect(&producer_db.url).await.unwrap();
    producer.migrate(&NO_MIGRATIONS).await.unwrap();
    // A feed name of its own: the counter is the process's, shared with other tests.
    let source = "single-flight-feed";
    let server = TestServer::start(events::feed_routes(Router::new(), &producer, source)).await;
    let feed = Upstream::new(source, &[server.url()], Duration::from_secs(10)).unwrap();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = EventFeedClient::new(feed.untraced_channel());
        readers.spawn(async move {
            client
                .read(proto::ReadRequest {
                    after: 0,
                    limit: 10,
                    wait_ms: 8_000,
                })
                .await
                .map(|answer| answer.into_inner().events.len())
        });
    }
    // Every reader is waiting once the feed has answered a later read that found nothing.
    let mut probe = EventFeedClient::new(feed.untraced_channel());
    probe
        .read(proto::ReadRequest {
            after: 0,
            limit: 10,
            wait_ms: 1,
        })
        .await
        .unwrap();
    let mut tx = producer.begin_write().await.unwrap();
    let event = Event::new(source, "test.a", "subject-1", &json!({"note": "one"})).unwrap();
    events::publish(&producer, &mut tx, &event).await.unwrap();
    events::commit(&producer, tx).await.unwrap();
    while let Some(read) = readers.join_next().await {
        assert_eq!(read.unwrap().unwrap(), 1, "every reader gets the event");
    }
    let metrics = comb_kit::telemetry::render_metrics();
    let reads: f64 = metrics
        .lines()
        .find(|line| line.starts_with("comb_feed_outbox_reads_total") && line.contains(source))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no outbox reads counted: {metrics}"));
    assert_eq!(reads, 1.0, "one read of the outbox served all eight");
}

/// JetStream for a test, under a prefix of its own; `None` (with the reason printed) when
/// no server answers outside CI.
async fn nats_or_skip() -> Option<(comb_kit::nats::Nats, String)> {
    let url =
        std::env::var("COMB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!(
        "T{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase()
    );
    match comb_kit::nats::Nats::connect(&url, &prefix).await {
        Ok(nats) => Some((nats, prefix)),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping a NATS test: {error}; set COMB_TEST_NATS_URL");
            None
        }
        Err(error) => panic!("CI=true requires NATS: {error}"),
    }
}

#[tokio::test]
async fn events_flow_once_through_nats_jetstream() {
    let Some((nats, prefix)) = nats_or_skip().await else {
        return;
    };
    let (producer_db, consumer_db) = (TestDatabase::sqlite(), TestDatabase::sqlite());
    let producer = Database::connect(&producer_db.url).await.unwrap();
    producer.migrate(&NO_MIGRATIONS).await.unwrap();
    let consumer_store = Database::connect(&consumer_db.url).await.unwrap();
    consumer_store.migrate(&CONSUMER_MIGRATIONS).await.unwrap();

    publish(&producer, "test.a", json!({"note": "one"}), true).await;
    publish(&producer, "test.a", json!({"note": "rolled back"}), false).await;
    publish(&producer, "other.kind", json!({"note": "not wanted"}), true).await;
    publish(&producer, "test.b", json!({"note": "two"}), true).await;
    assert_eq!(nats.relay_once(&producer, "producer").await.unwrap(), 3);
    assert_eq!(
        nats.relay_once(&producer, "producer").await.unwrap(),
        0,
        "the relay remembers"
    );
    // A relay that dies after publishing but before storing its position publishes again:
    // JetStream keeps one copy of each (message id = event id).
    sql::query("DELETE FROM feed_positions")
        .execute(&producer)
        .await
        .unwrap();
    assert_eq!(nats.relay_once(&producer, "producer").await.unwrap(), 3);

    let mut reader = Consumer::nats(
        consumer_store.clone(),
        &nats,
        "producer",
        "test-consumer",
        Arc::new(Recorder),
    )
    .await
    .unwrap();
    reader.wait = Duration::from_millis(500);
    reader.attempts = 2;
    assert_eq!(
        reader.poll_once().await.unwrap(),
        3,
        "three stored, not six"
    );
    assert_eq!(effects(&consumer_store).await, ["one", "two"]);
    assert_eq!(
        reader.poll_once().await.unwrap(),
        0,
        "acked events are not delivered again"
    );

    let poison = publish(&producer, "test.c", json!({"poison": true}), true).await;
    publish(&producer, "test.c", json!({"note": "three"}), true).await;
    assert_eq!(nats.relay_once(&producer, "producer").await.unwrap(), 2);
    assert_eq!(reader.poll_once().await.unwrap(), 2);
    assert_eq!(effects(&consumer_store).await, ["one", "three", "two"]);
    let parked = events::parked(&consumer_store).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, poison.id);

    let client = async_nats::connect(
        std::env::var("COMB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
    )
    .await
    .unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(comb_kit::nats::stream_name(&prefix, "producer"))
        .await;
}
