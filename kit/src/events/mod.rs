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
//!
//! The parts: [`outbox`] (publishing in the caller's transaction), [`feed`] (the outbox
//! served to consumers), [`consumer`] (the inbox side: handling, positions, parking) and
//! [`transport`] (the embedded feeds or NATS JetStream).

mod consumer;
mod feed;
mod outbox;
mod transport;

pub use self::consumer::{
    BATCH_WAIT, Consumer, Handler, HandlerError, ParkedEvent, count_per_event, parked, position,
    set_position,
};
pub use self::feed::feed_routes;
pub use self::outbox::{commit, publish, read_outbox};
pub use self::transport::{Transport, TransportError};

use comb_contracts::events::v1 as proto;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::now_rfc3339;

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
