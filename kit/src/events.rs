//! Events between services: a transactional outbox on the producing side, an inbox on the
//! consuming side, and the embedded transport that moves events between them.
//!
//! A producer writes each event with [`publish`] in the same database transaction as the
//! change it announces, so an event exists exactly when its change does. Its outbox is
//! served as a feed ([`feed_routes`]): consumers read it from their last stored position
//! with a long poll. A [`Consumer`] handles each event in one transaction with the record
//! of having handled it (the inbox) and its new position, so redelivery is harmless: the
//! effect happens once. An event its handler cannot take is retried with backoff, then
//! parked with the reason, and the events after it flow on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comb_contracts::events::v1 as proto;
use comb_contracts::events::v1::event_feed_client::EventFeedClient;
use comb_contracts::events::v1::event_feed_server::{EventFeed, EventFeedServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::clock::{now_ms, now_rfc3339};
use crate::grpc::Upstream;
use crate::server::add_grpc;
use crate::storage::{Backend, Database, sql};

/// Why an event could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event data cannot be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("event {id} ({kind}) has data this service cannot read: {source}")]
    Decode {
        id: String,
        kind: String,
        source: serde_json::Error,
    },
}

/// One event: a CloudEvents 1.0 envelope and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position in the producer's feed (0 until stored).
    pub seq: i64,
    pub id: String,
    /// The producing service.
    pub source: String,
    /// Its type, e.g. `comb.order.confirmed`.
    pub kind: String,
    /// What it is about, e.g. an order id.
    pub subject: String,
    /// RFC 3339.
    pub time: String,
    pub traceparent: String,
    /// JSON.
    pub data: String,
}

impl Event {
    pub fn new(
        source: &str,
        kind: &str,
        subject: &str,
        data: &impl Serialize,
    ) -> Result<Self, EventError> {
        Ok(Self {
            seq: 0,
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_owned(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            time: now_rfc3339(),
            // Consumers continue the trace of the change that published the event.
            traceparent: crate::trace::traceparent(&tracing::Span::current()),
            data: serde_json::to_string(data).map_err(EventError::Encode)?,
        })
    }

    /// The event's data as `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, EventError> {
        serde_json::from_str(&self.data).map_err(|source| EventError::Decode {
            id: self.id.clone(),
            kind: self.kind.clone(),
            source,
        })
    }

    /// The CloudEvents 1.0 JSON form.
    pub fn to_cloudevent(&self) -> serde_json::Value {
        let data: serde_json::Value =
            serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.kind,
            "subject": self.subject,
            "time": self.time,
            "traceparent": self.traceparent,
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    /// Reads the CloudEvents 1.0 JSON form back; `seq` is its place in the stream it came
    /// from.
    pub fn from_cloudevent(json: &[u8], seq: i64) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|error| format!("not a CloudEvents JSON document: {error}"))?;
        let text = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let required = |key: &str| text(key).ok_or_else(|| format!("the event has no {key}"));
        Ok(Self {
            seq,
            id: required("id")?,
            source: required("source")?,
            kind: required("type")?,
            subject: text("subject").unwrap_or_default(),
            time: text("time").unwrap_or_default(),
            traceparent: text("traceparent").unwrap_or_default(),
            data: value
                .get("data")
                .map(serde_json::Value::to_string)
                .unwrap_or_else(|| "null".to_owned()),
        })
    }

    fn to_proto(&self) -> proto::Envelope {
        proto::Envelope {
            seq: self.seq,
            id: self.id.clone(),
            source: self.source.clone(),
            r#type: self.kind.clone(),
            subject: self.subject.clone(),
            time: self.time.clone(),
            traceparent: self.traceparent.clone(),
            data: self.data.clone(),
        }
    }

    fn from_proto(envelope: proto::Envelope) -> Self {
        Self {
            seq: envelope.seq,
            id: envelope.id,
            source: envelope.source,
            kind: envelope.r#type,
            subject: envelope.subject,
            time: envelope.time,
            traceparent: envelope.traceparent,
            data: envelope.data,
        }
    }
}

/// An arbitrary constant: the advisory lock that orders outbox writes on PostgreSQL.
const OUTBOX_LOCK: i64 = 0x636f_6d62;

/// Writes `event` to the outbox in the caller's transaction: it is published exactly when
/// the transaction commits.
pub async fn publish(
    db: &Database,
    tx: &mut sql::Transaction,
    event: &Event,
) -> Result<(), sql::DbError> {
    if db.backend() == Backend::Postgres {
        // Held until commit: outbox rows commit in seq order, so a feed reader that has
        // seen seq N can never later find a smaller seq appear.
        sql::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    sql::query(
        "INSERT INTO outbox (id, type, subject, time, traceparent, data) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.id.as_str())
    .bind(event.kind.as_str())
    .bind(event.subject.as_str())
    .bind(event.time.as_str())
    .bind(event.traceparent.as_str())
    .bind(event.data.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Outbox events after `after`, oldest first.
pub async fn read_outbox(
    db: &Database,
    source: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, sql::DbError> {
    let rows = sql::query(
        "SELECT seq, id, type, subject, time, traceparent, data FROM outbox WHERE seq > $1 ORDER BY seq LIMIT CAST($2 AS BIGINT)",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Event {
                seq: row.try_get("seq")?,
                id: row.try_get("id")?,
                source: source.to_owned(),
                kind: row.try_get("type")?,
                subject: row.try_get("subject")?,
                time: row.try_get("time")?,
                traceparent: row.try_get("traceparent")?,
                data: row.try_get("data")?,
            })
        })
        .collect()
}

const MAX_READ: u32 = 500;
const MAX_WAIT_MS: u32 = 30_000;

/// The position of the newest event in the outbox (0 when empty).
async fn outbox_head(db: &Database) -> Result<i64, sql::DbError> {
    let head: Option<i64> = sql::query_scalar("SELECT MAX(seq) FROM outbox")
        .fetch_one(db)
        .await?;
    Ok(head.unwrap_or(0))
}

/// Commits a transaction that published events, and tells the service's feed and caches
/// at once (instead of at their next look).
pub async fn commit(db: &Database, tx: sql::Transaction) -> Result<(), sql::DbError> {
    tx.commit().await?;
    db.changed();
    Ok(())
}

/// The outbox events read last, kept so that every consumer of a new event is served it
/// from memory after the first one read it from the database. Holds every event with a
/// position in `(after, through]`.
#[derive(Debug, Default)]
struct RecentEvents {
    after: i64,
    through: i64,
    events: VecDeque<Event>,
}

/// Events kept in memory per feed.
const RECENT_EVENTS: usize = 256;

impl RecentEvents {
    /// The events after `after`, at most `limit`, if everything up to `known` is here.
    fn read(&self, after: i64, limit: usize, known: i64) -> Option<Vec<Event>> {
        if self.events.is_empty() || after < self.after || self.through < known.max(after + 1) {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|event| event.seq > after)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Keeps what a read of the database after `after` returned.
    fn keep(&mut self, after: i64, read: &[Event]) {
        let Some(last) = read.last() else {
            return;
        };
        if self.events.is_empty() || after != self.through {
            // Not a continuation of what is kept: start over from this read.
            self.events.clear();
            self.after = after;
        }
        self.events.extend(read.iter().cloned());
        self.through = last.seq;
        while self.events.len() > RECENT_EVENTS {
            if let Some(dropped) = self.events.pop_front() {
                self.after = dropped.seq;
            }
        }
    }
}

/// Serves a service's outbox as a feed.
#[derive(Debug, Clone)]
struct Feed {
    db: Database,
    source: String,
    recent: Arc<Mutex<RecentEvents>>,
    /// Held while the outbox is read: the readers one commit wakes together wait for the
    /// first one's read and are served what it kept, instead of each reading the outbox.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Feed {
    /// The events after `after`: from memory when the last read has them, else from the
    /// database.
    async fn events_after(&self, after: i64, limit: i64, known: i64) -> Result<Vec<Event>, Status> {
        let size = usize::try_from(limit).unwrap_or(0);
        if let Some(events) = self.recent().read(after, size, known) {
            return Ok(events);
        }
        let _reading = self.reading.lock().await;
        if let Some(events) = self.recent().read(after, size, known) {
            return Ok(events);
        }
        metrics::counter!("comb_feed_outbox_reads_total", "feed" => self.source.clone())
            .increment(1);
        let events = read_outbox(&self.db, &self.source, after, limit)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading the outbox failed");
                Status::unavailable("the outbox cannot be read right now")
            })?;
        self.recent().keep(after, &events);
        Ok(events)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEvents> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl EventFeed for Feed {
    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let draining = crate::server::Draining::of(request.extensions());
        let request = request.into_inner();
        let limit = i64::from(request.limit.clamp(1, MAX_READ));
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(MAX_WAIT_MS)));
        let deadline = tokio::time::Instant::now() + wait;
        let mut versions = self.db.watch_data_version();
        loop {
            // What this instance knows of the outbox: it is read only when it has moved past
            // the reader, so a reader that is up to date costs nothing while it waits.
            // (What another instance commits is known within the version's poll.)
            let known = versions.borrow_and_update().outbox;
            let events = if known > request.after {
                self.events_after(request.after, limit, known).await?
            } else {
                Vec::new()
            };
            let out_of_time = tokio::time::Instant::now() >= deadline;
            if !events.is_empty() || out_of_time {
                let head = match events.last() {
                    Some(last) => last.seq.max(known),
                    None => outbox_head(&self.db).await.map_err(|error| {
                        tracing::error!(%error, "reading the outbox failed");
                        Status::unavailable("the outbox cannot be read right now")
                    })?,
                };
                return Ok(Response::new(proto::ReadResponse {
                    events: events.iter().map(Event::to_proto).collect(),
                    head,
                }));
            }
            // Nothing new: wait until the outbox moves past both the reader and what was
            // known when it was read, or the wait ends.
            let past = known.max(request.after);
            tokio::select! {
                _ = tokio::time::timeout_at(deadline, versions.wait_for(|version| version.outbox > past)) => {}
                // A draining instance answers what it has, so the read does not hold the
                // drain until its deadline.
                () = draining.started() => {
                    return Ok(Response::new(proto::ReadResponse { events: Vec::new(), head: known }));
                }
            }
        }
    }
}

/// Adds the feed of this service's outbox to its routes.
pub fn feed_routes(router: axum::Router, db: &Database, source: &str) -> axum::Router {
    add_grpc(
        router,
        EventFeedServer::new(Feed {
            db: db.clone(),
            source: source.to_owned(),
            recent: Arc::default(),
            reading: Arc::default(),
        }),
    )
}

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

/// Why the event transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("setting events_transport (COMB_EVENTS_TRANSPORT) is {0:?}: use embedded or nats")]
    Unknown(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Upstream(#[from] crate::grpc::UpstreamError),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
}

/// A feed read waits this long for events, so its call deadline must be longer.
const LONG_POLL: Duration = Duration::from_secs(15);

/// How a service's events travel, from its settings: `events_transport` is `embedded`
/// (the default: each producer serves its own feed) or `nats` (JetStream at `nats_url`,
/// default `nats://127.0.0.1:4222`, streams named with `nats_prefix`, default `COMB`).
#[derive(Debug, Clone)]
pub enum Transport {
    Embedded,
    Nats(Box<crate::nats::Nats>),
}

impl Transport {
    pub async fn from_config(config: &crate::ServiceConfig) -> Result<Self, TransportError> {
        match config.setting("events_transport").unwrap_or("embedded") {
            "embedded" => Ok(Self::Embedded),
            "nats" => {
                let url = config
                    .setting("nats_url")
                    .unwrap_or("nats://127.0.0.1:4222");
                let prefix = config.setting("nats_prefix").unwrap_or("COMB");
                Ok(Self::Nats(Box::new(
                    crate::nats::Nats::connect(url, prefix).await?,
                )))
            }
            other => Err(TransportError::Unknown(other.to_owned())),
        }
    }

    /// What a producer runs besides its feed route: with NATS, the relay of its outbox to
    /// JetStream (the embedded transport needs nothing).
    pub fn relay(
        &self,
        db: &Database,
        producer: &str,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match self {
            Self::Nats(nats) => Some(nats.as_ref().clone().relay(db.clone(), producer.to_owned())),
            Self::Embedded => None,
        }
    }

    /// A consumer, for this service, of `producer`'s events.
    pub async fn consumer(
        &self,
        config: &crate::ServiceConfig,
        db: &Database,
        producer: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Consumer, TransportError> {
        let mut consumer = match self {
            Self::Embedded => {
                let feed = Upstream::from_config_with_timeout(
                    config,
                    producer,
                    config.call_timeout.max(LONG_POLL),
                )?;
                Consumer::new(db.clone(), Arc::new(feed), handler)
            }
            Self::Nats(nats) => {
                Consumer::nats(db.clone(), nats, producer, &config.service, handler).await?
            }
        };
        consumer.batch_wait = config.millis("events_batch_wait_ms", BATCH_WAIT)?;
        Ok(consumer)
    }
}
