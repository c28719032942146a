//! The producing side: events written to the outbox in the transaction of the change they
//! announce, and read back in order.

use super::Event;
use crate::storage::{Backend, Database, sql};

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

pub(super) const MAX_READ: u32 = 500;
pub(super) const MAX_WAIT_MS: u32 = 30_000;

/// The position of the newest event in the outbox (0 when empty).
pub(super) async fn outbox_head(db: &Database) -> Result<i64, sql::DbError> {
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
