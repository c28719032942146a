//! A producer's outbox served as a feed: a long poll that answers as soon as an event is
//! committed, with the newest events kept in memory so a commit's readers share one read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comb_contracts::events::v1 as proto;
use comb_contracts::events::v1::event_feed_server::{EventFeed, EventFeedServer};
use tonic::{Request, Response, Status};

use super::Event;
use super::outbox::{MAX_READ, MAX_WAIT_MS, outbox_head, read_outbox};
use crate::server::add_grpc;
use crate::storage::Database;

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
