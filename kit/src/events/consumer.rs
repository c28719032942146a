//! The consuming side: each event handled in one transaction with the record of having
//! handled it (the inbox) and the new position, retried with backoff, then parked.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comb_contracts::events::v1 as proto;
use comb_contracts::events::v1::event_feed_client::EventFeedClient;
use tonic::Status;
use tracing::Instrument;

use super::outbox::{MAX_WAIT_MS, commit};
use super::{Event, EventError};
use crate::clock::now_ms;
use crate::grpc::Upstream;
use crate::storage::{Database, sql};

/// Why a handler did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// It can never be handled (malformed, impossible): park it at once.
    #[error("{0}")]
    Poison(String),
    /// It may be handled later (a database hiccup): retry, then park.
    #[error("{0}")]
    Retry(String),
}

impl From<sql::DbError> for HandlerError {
    fn from(error: sql::DbError) -> Self {
        Self::Retry(error.to_string())
    }
}

impl From<EventError> for HandlerError {
    fn from(error: EventError) -> Self {
        Self::Poison(error.to_string())
    }
}

/// Why a delivery did not complete: the handler's verdict, or the consumer's own storage.
#[derive(Debug)]
enum Delivery {
    Handler(HandlerError),
    Storage(sql::DbError),
}

impl From<sql::DbError> for Delivery {
    fn from(error: sql::DbError) -> Self {
        Self::Storage(error)
    }
}

/// What a consuming service does with the events of one producer.
#[tonic::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Whether it handles events of this type; others only move the position on.
    fn wants(&self, kind: &str) -> bool;

    /// Applies the event's effect in `tx`, which also records it as handled.
    async fn handle(
        &self,
        db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError>;
}

/// An event set aside, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event_id: String,
    pub producer: String,
    pub kind: String,
    pub reason: String,
}

/// The events this service has parked, oldest first.
pub async fn parked(db: &Database) -> Result<Vec<ParkedEvent>, sql::DbError> {
    let rows = sql::query("SELECT event_id, producer, type, reason FROM parked_events ORDER BY parked_at_ms, event_id")
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ParkedEvent {
                event_id: row.try_get("event_id")?,
                producer: row.try_get("producer")?,
                kind: row.try_get("type")?,
                reason: row.try_get("reason")?,
            })
        })
        .collect()
}

/// The position this service has read a producer's feed to.
pub async fn position(db: &Database, producer: &str) -> Result<i64, sql::DbError> {
    let seq: Option<i64> = sql::query_scalar("SELECT seq FROM feed_positions WHERE producer = $1")
        .bind(producer)
        .fetch_optional(db)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// How many rows `query` returns for each event id (its `event_id` column): an audit of
/// effects that must happen once per event.
pub async fn count_per_event(
    db: &Database,
    query: sql::Query<'_>,
) -> Result<std::collections::HashMap<String, i64>, sql::DbError> {
    let mut counts = std::collections::HashMap::new();
    for row in query.fetch_all(db).await? {
        *counts
            .entry(row.try_get::<String, _>("event_id")?)
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// Stores a position outside any other transaction (the NATS relay's).
pub async fn set_position(db: &Database, key: &str, seq: i64) -> Result<(), sql::DbError> {
    let mut tx = db.begin_write().await?;
    advance(&mut tx, key, seq).await?;
    tx.commit().await
}

async fn advance(tx: &mut sql::Transaction, producer: &str, seq: i64) -> Result<(), sql::DbError> {
    sql::query(
        "INSERT INTO feed_positions (producer, seq) VALUES ($1, $2)
         ON CONFLICT (producer) DO UPDATE SET seq = excluded.seq WHERE feed_positions.seq < excluded.seq",
    )
    .bind(producer)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records `event` as handled, in `tx`; false when it was handled already (a redelivery).
async fn record_handled(
    tx: &mut sql::Transaction,
    event: &Event,
    producer: &str,
) -> Result<bool, sql::DbError> {
    let recorded = sql::query(
        "INSERT INTO inbox (event_id, producer, handled_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.id.as_str())
    .bind(producer)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Where a consumer reads events from.
enum Source {
    /// The producer's own feed (the embedded transport).
    Feed(Arc<Upstream>),
    /// A durable pull consumer on the producer's JetStream stream.
    Nats(Box<PullConsumer>),
}

type PullConsumer =
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>;

/// Reads one producer's events and hands each to a handler, effectively once.
pub struct Consumer {
    db: Database,
    producer: String,
    source: Source,
    handler: Arc<dyn Handler>,
    /// Attempts before an event that keeps failing is parked.
    pub attempts: u32,
    /// How long one read waits for new events.
    pub wait: Duration,
    /// How long to let events gather after a read that found some, before reading again
    /// (`events_batch_wait_ms`). Under load the next read then takes many events in one
    /// transaction instead of one each; a first event after a quiet spell still arrives
    /// at once, because the read waiting for it answers as soon as it is written.
    pub batch_wait: Duration,
    /// The feed position this consumer has reached, once read from its database.
    position: Mutex<Option<i64>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

/// The most events one read of a feed or stream takes.
const READ_LIMIT: usize = 100;

/// What `events_batch_wait_ms` is unless set: at a few hundred orders a second each read
/// then takes several orders' events, and an event waits at most this long behind another.
pub const BATCH_WAIT: Duration = Duration::from_millis(25);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)).min(2_000))
}

impl Consumer {
    /// A consumer of `feed` (the producer's instances), handling with `handler` into `db`.
    pub fn new(db: Database, feed: Arc<Upstream>, handler: Arc<dyn Handler>) -> Self {
        Self {
            db,
            producer: feed.service().to_owned(),
            source: Source::Feed(feed),
            handler,
            attempts: 5,
            wait: Duration::from_secs(10),
            batch_wait: Duration::ZERO,
            position: Mutex::new(None),
        }
    }

    /// A consumer of `producer`'s JetStream stream, as the durable consumer `name`.
    pub async fn nats(
        db: Database,
        nats: &crate::nats::Nats,
        producer: &str,
        name: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, crate::nats::NatsError> {
        let consumer = nats.pull_consumer(producer, name).await?;
        Ok(Self {
            db,
            producer: producer.to_owned(),
            source: Source::Nats(Box::new(consumer)),
            handler,
            attempts: 5,
            wait: Duration::from_secs(10),
            batch_wait: Duration::ZERO,
            position: Mutex::new(None),
        })
    }

    /// Reads and handles events for as long as the instance runs.
    pub async fn run(self) {
        let mut failures = 0;
        loop {
            match self.poll_once().await {
                Ok(count) => {
                    failures = 0;
                    if count > 0 && count < READ_LIMIT && !self.batch_wait.is_zero() {
                        tokio::time::sleep(self.batch_wait).await;
                    }
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(producer = %self.producer, %error, "cannot read the event feed; will retry");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// One read of the feed and the handling of what it returned; how many events came.
    pub async fn poll_once(&self) -> Result<usize, Status> {
        let feed = match &self.source {
            Source::Feed(feed) => feed,
            Source::Nats(consumer) => {
                let mut batch = crate::nats::batch(consumer, READ_LIMIT, self.wait)
                    .await
                    .map_err(|error| Status::unavailable(error.to_string()))?;
                let mut count = 0;
                // Each message is handled as it arrives, not when the batch closes.
                while let Some(message) = crate::nats::next(&mut batch).await {
                    let message =
                        message.map_err(|error| Status::unavailable(error.to_string()))?;
                    count += 1;
                    if let Ok(info) = message.info() {
                        self.record_lag(info.pending);
                    }
                    match crate::nats::event_of(&message) {
                        Ok(event) => self.deliver(event).await,
                        Err(reason) => {
                            tracing::warn!(%reason, "an unreadable message on the stream; dropped")
                        }
                    }
                    if let Err(error) = message.ack().await {
                        // Not acked: JetStream delivers it again, and the inbox skips it.
                        tracing::warn!(%error, "cannot ack a handled event");
                    }
                }
                return Ok(count);
            }
        };
        let known = *self.position.lock().unwrap_or_else(PoisonError::into_inner);
        let after = match known {
            Some(after) => after,
            None => position(&self.db, &self.producer)
                .await
                .map_err(|error| Status::unavailable(format!("position: {error}")))?,
        };
        let read = EventFeedClient::new(feed.untraced_channel())
            .read(proto::ReadRequest {
                after,
                limit: READ_LIMIT as u32,
                wait_ms: u32::try_from(self.wait.as_millis()).unwrap_or(MAX_WAIT_MS),
            })
            .await?
            .into_inner();
        let count = read.events.len();
        let events: Vec<Event> = read.events.into_iter().map(Event::from_proto).collect();
        let reached = match events.last() {
            Some(last) => last.seq,
            None => after,
        };
        self.record_lag(u64::try_from(read.head - reached).unwrap_or(0));
        if !events.is_empty() {
            for event in &events {
                metrics::counter!("comb_events_received_total", "producer" => self.producer.clone(), "type" => event.kind.clone())
                    .increment(1);
            }
            // Usually the whole read commits as one transaction; if any event of it is not
            // handled at once, each is delivered on its own, with retries and parking.
            if events.len() == 1 || !self.try_deliver_all(&events).await {
                for event in events {
                    self.deliver_counted(event).await;
                }
            }
        }
        *self.position.lock().unwrap_or_else(PoisonError::into_inner) = Some(reached);
        Ok(count)
    }

    /// How many of the producer's events this consumer has still to handle.
    fn record_lag(&self, behind: u64) {
        metrics::gauge!("comb_events_consumer_lag", "producer" => self.producer.clone())
            .set(behind as f64);
    }

    /// Handles one event: its effect, its inbox record and the new position commit
    /// together, or not at all. An event the handler wants is handled in a consumer span
    /// that continues the publisher's trace.
    async fn deliver(&self, event: Event) {
        metrics::counter!("comb_events_received_total", "producer" => self.producer.clone(), "type" => event.kind.clone())
            .increment(1);
        self.deliver_counted(event).await;
    }

    /// Delivers an event already counted as received, in its consumer span when the
    /// handler wants it.
    async fn deliver_counted(&self, event: Event) {
        if !self.handler.wants(&event.kind) {
            return self.deliver_untraced(event).await;
        }
        let span = self.span(&event);
        self.deliver_untraced(event).instrument(span).await;
    }

    /// The consumer span of handling `event`, in the trace of the span that published it.
    fn span(&self, event: &Event) -> tracing::Span {
        let span = tracing::info_span!(
            "event",
            otel.name = %format!("process {}", event.kind),
            otel.kind = "consumer",
            messaging.system = match self.source { Source::Feed(_) => "comb", Source::Nats(_) => "nats" },
            messaging.operation.type = "process",
            messaging.message.id = %event.id,
            messaging.source.name = %self.producer,
            event.subject = %event.subject,
        );
        crate::trace::follow(&span, &event.traceparent);
        span
    }

    async fn deliver_untraced(&self, event: Event) {
        let mut attempt = 0;
        let mut storage_failures: u32 = 0;
        loop {
            match self.try_deliver(&event).await {
                Ok(()) => return,
                // The consumer's own database is away (a restart, a busy file): the event
                // is not at fault, so it waits for the database instead of being parked.
                Err(Delivery::Storage(error)) => {
                    storage_failures += 1;
                    if storage_failures == 1 || storage_failures.is_multiple_of(20) {
                        tracing::warn!(event = %event.id, %error, "cannot record a handled event; will retry");
                    }
                    tokio::time::sleep(backoff(storage_failures)).await;
                }
                Err(Delivery::Handler(HandlerError::Retry(reason)))
                    if attempt + 1 < self.attempts =>
                {
                    attempt += 1;
                    tracing::debug!(event = %event.id, %reason, attempt, "event not handled yet; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(Delivery::Handler(
                    HandlerError::Retry(reason) | HandlerError::Poison(reason),
                )) => {
                    self.park(&event, &reason).await;
                    return;
                }
            }
        }
    }

    async fn try_deliver(&self, event: &Event) -> Result<(), Delivery> {
        let mut tx = self.db.begin_write().await?;
        if self.handler.wants(&event.kind) && record_handled(&mut tx, event, &self.producer).await?
        {
            self.handler
                .handle(&self.db, &mut tx, event)
                .await
                .map_err(Delivery::Handler)?;
        }
        advance(&mut tx, &self.producer, event.seq).await?;
        commit(&self.db, tx).await?;
        Ok(())
    }

    /// Handles every event of one read in one transaction, each in its consumer span.
    /// False (and nothing written) when any of them was not handled at once.
    async fn try_deliver_all(&self, events: &[Event]) -> bool {
        let delivered: Result<(), Delivery> = async {
            let mut tx = self.db.begin_write().await?;
            for event in events {
                if !self.handler.wants(&event.kind) {
                    continue;
                }
                let handled = async {
                    if record_handled(&mut tx, event, &self.producer).await? {
                        self.handler
                            .handle(&self.db, &mut tx, event)
                            .await
                            .map_err(Delivery::Handler)?;
                    }
                    Ok::<(), Delivery>(())
                };
                handled.instrument(self.span(event)).await?;
            }
            if let Some(last) = events.last() {
                advance(&mut tx, &self.producer, last.seq).await?;
            }
            commit(&self.db, tx).await?;
            Ok(())
        }
        .await;
        delivered.is_ok()
    }

    /// Sets an event aside with its reason and moves past it. Retried until it is
    /// recorded: an event is never dropped silently.
    async fn park(&self, event: &Event, reason: &str) {
        metrics::counter!("comb_events_parked_total", "producer" => self.producer.clone())
            .increment(1);
        tracing::warn!(event = %event.id, kind = %event.kind, producer = %self.producer, %reason, "event parked");
        let mut attempt = 0;
        loop {
            let parked: Result<(), sql::DbError> = async {
                let mut tx = self.db.begin_write().await?;
                sql::query(
                    "INSERT INTO parked_events (event_id, producer, type, reason, envelope, parked_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(event.id.as_str())
                .bind(self.producer.as_str())
                .bind(event.kind.as_str())
                .bind(reason)
                .bind(event.to_cloudevent().to_string())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                advance(&mut tx, &self.producer, event.seq).await?;
                tx.commit().await
            }
            .await;
            match parked {
                Ok(()) => return,
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(event = %event.id, %error, "cannot park the event; will retry");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
}
