//! The `nats` event transport: the outbox is relayed to NATS JetStream (one stream per
//! producing service, message id = event id, so a relay that publishes twice stores once),
//! and consumers read with durable pull consumers and explicit acks. The outbox, the inbox
//! and parking work as with the embedded transport; only the way between them differs.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;

use crate::events::{Event, EventError};
use crate::storage::{Database, sql};

/// Why the NATS transport failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot reach NATS at {url}: {message}; start it, or use the embedded transport")]
    Connect { url: String, message: String },
    #[error("JetStream refused: {0}")]
    JetStream(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
    #[error(transparent)]
    Event(#[from] EventError),
}

fn jetstream_error(error: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream(error.to_string())
}

/// The stream that holds a producing service's events.
pub fn stream_name(prefix: &str, producer: &str) -> String {
    format!(
        "{prefix}_{}",
        producer.to_ascii_uppercase().replace('-', "_")
    )
}

fn subject(prefix: &str, producer: &str, kind: &str) -> String {
    format!("{}.{producer}.{kind}", prefix.to_ascii_lowercase())
}

/// A connection to JetStream, with the naming every stream and subject shares.
#[derive(Clone, Debug)]
pub struct Nats {
    context: jetstream::Context,
    /// Prefix of stream names and subjects, e.g. `COMB`; tests use their own.
    prefix: String,
}

impl Nats {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, NatsError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|error| NatsError::Connect {
                url: url.to_owned(),
                message: error.to_string(),
            })?;
        Ok(Self {
            context: jetstream::new(client),
            prefix: prefix.to_owned(),
        })
    }

    /// The producer's stream, created if it does not exist yet.
    async fn stream(&self, producer: &str) -> Result<stream::Stream, NatsError> {
        self.context
            .get_or_create_stream(stream::Config {
                name: stream_name(&self.prefix, producer),
                subjects: vec![format!("{}.{producer}.>", self.prefix.to_ascii_lowercase())],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(jetstream_error)
    }

    /// Publishes the outbox events after the relay's position, waiting for JetStream to
    /// store each, then moves the position on. Returns how many went out.
    pub async fn relay_once(&self, db: &Database, producer: &str) -> Result<usize, NatsError> {
        self.stream(producer).await?;
        let key = format!("relay:nats:{producer}");
        let after = crate::events::position(db, &key).await?;
        let events = crate::events::read_outbox(db, producer, after, 100).await?;
        for event in &events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            let payload = event.to_cloudevent().to_string();
            self.context
                .publish_with_headers(
                    subject(&self.prefix, producer, &event.kind),
                    headers,
                    payload.into(),
                )
                .await
                .map_err(jetstream_error)?
                .await
                .map_err(jetstream_error)?;
            crate::events::set_position(db, &key, event.seq).await?;
        }
        Ok(events.len())
    }

    /// Relays the outbox for as long as the instance runs.
    pub async fn relay(self, db: Database, producer: String) {
        let mut failures = 0u32;
        loop {
            match self.relay_once(&db, &producer).await {
                Ok(0) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(_) => failures = 0,
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(%error, "relaying events to NATS failed; will retry");
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10))))
                        .await;
                }
            }
        }
    }

    /// A durable pull consumer named after the consuming service on a producer's stream.
    pub async fn pull_consumer(
        &self,
        producer: &str,
        consumer: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, NatsError> {
        let stream = self.stream(producer).await?;
        stream
            .get_or_create_consumer(
                consumer,
                pull::Config {
                    durable_name: Some(consumer.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(jetstream_error)
    }
}

/// A pull request for up to `max` messages, waiting up to `wait`; the messages come as a
/// stream, each as soon as it arrives.
pub(crate) async fn batch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    max: usize,
    wait: Duration,
) -> Result<pull::Batch, NatsError> {
    consumer
        .batch()
        .max_messages(max)
        .expires(wait)
        .messages()
        .await
        .map_err(jetstream_error)
}

/// The event a message carries, or why it cannot be read.
pub(crate) fn event_of(message: &jetstream::Message) -> Result<Event, String> {
    let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    Event::from_cloudevent(
        &message.payload,
        i64::try_from(sequence).unwrap_or(i64::MAX),
    )
}

/// The next message of a batch, if any.
pub(crate) async fn next(batch: &mut pull::Batch) -> Option<Result<jetstream::Message, NatsError>> {
    batch
        .next()
        .await
        .map(|message| message.map_err(jetstream_error))
}
