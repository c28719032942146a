//! Stock and reservations in the service's own database. Every change of stock happens in
//! one write transaction with the reservation it belongs to, and takes stock with
//! `UPDATE ... WHERE available >= quantity`, so concurrent reservations can never take
//! more than there is.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use comb_contracts::events as contract;
use comb_kit::events::{self, Event};
use comb_kit::storage::{Database, sql};
use serde::Deserialize;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("out of stock: {}", .0.join(", "))]
    OutOfStock(Vec<String>),
    #[error("the reservation of order {order_id} is {status}")]
    NotReserved { order_id: String, status: Status },
    #[error("order {0} has no reservation")]
    Unknown(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Reserved,
    Committed,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "reserved" => Ok(Self::Reserved),
            "committed" => Ok(Self::Committed),
            "released" => Ok(Self::Released),
            "expired" => Ok(Self::Expired),
            other => Err(StoreError::Corrupt(format!("reservation status {other:?}"))),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub status: Status,
    pub lines: Vec<Line>,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct InventoryStore {
    db: Database,
    levels: Arc<Levels>,
}

/// How long a stock level read is kept. Changes made through this instance are seen at
/// once; changes another instance makes to a shared database within this time (the same
/// bound as `comb_kit::changes`). A level shown is advice: a reservation always takes stock
/// in the database.
const KEEP_LEVELS_FOR: Duration = comb_kit::changes::POLL_EVERY;

/// Stock levels kept at most this many SKUs (past that the cache starts over).
const MAX_LEVELS: usize = 10_000;

/// Stock levels read lately, with how many stock changes this instance had committed
/// when each was read: a level is kept only while no change has been committed since.
#[derive(Debug, Default)]
struct Levels {
    changes: AtomicU64,
    kept: Mutex<HashMap<String, Level>>,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    changes: u64,
    read_at: Instant,
    available: i64,
}

impl Levels {
    fn kept(&self) -> MutexGuard<'_, HashMap<String, Level>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl InventoryStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            levels: Arc::default(),
        }
    }

    /// Every reservation with its lines, for audits (`comb chaos check` reconciles them
    /// with confirmed orders).
    pub async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let rows = sql::query(
            "SELECT r.order_id, r.status, r.expires_at_ms, l.sku, l.quantity FROM reservations r
             LEFT JOIN reservation_lines l ON l.order_id = r.order_id ORDER BY r.order_id, l.sku",
        )
        .fetch_all(&self.db)
        .await?;
        let mut reservations: Vec<Reservation> = Vec::new();
        for row in &rows {
            let order_id: String = row.try_get("order_id")?;
            if reservations
                .last()
                .is_none_or(|last| last.order_id != order_id)
            {
                reservations.push(Reservation {
                    order_id,
                    status: Status::parse(&row.try_get::<String, _>("status")?)?,
                    lines: Vec::new(),
                    expires_at_ms: row.try_get("expires_at_ms")?,
                });
            }
            let sku: Option<String> = row.try_get("sku")?;
            let quantity: Option<i64> = row.try_get("quantity")?;
            if let (Some(sku), Some(quantity), Some(reservation)) =
                (sku, quantity, reservations.last_mut())
            {
                reservation.lines.push(Line { sku, quantity });
            }
        }
        Ok(reservations)
    }

    /// How many SKUs have less than nothing available (an oversell), for audits.
    pub async fn skus_below_zero(&self) -> Result<i64, StoreError> {
        Ok(
            sql::query_scalar("SELECT COUNT(*) FROM stock WHERE available < 0")
                .fetch_one(&self.db)
                .await?,
        )
    }

    /// Commits a transaction that may have changed stock: levels read before it are not
    /// served again.
    async fn commit_stock(&self, tx: sql::Transaction) -> Result<(), sql::DbError> {
        tx.commit().await?;
        self.levels.changes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The same, for a transaction that published events.
    async fn commit_stock_and_events(&self, tx: sql::Transaction) -> Result<(), StoreError> {
        events::commit(&self.db, tx).await?;
        self.levels.changes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sql::query(
            "INSERT INTO stock (sku, available, updated_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (sku) DO UPDATE SET available = excluded.available, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(sku)
        .bind(available)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        announce_level(&self.db, &mut tx, sku).await?;
        self.commit_stock_and_events(tx).await?;
        Ok(())
    }

    /// Adds a SKU with nothing to sell yet (a new product); an existing one is left alone.
    pub async fn add_sku(
        &self,
        tx: &mut sql::Transaction,
        sku: &str,
        now_ms: i64,
    ) -> Result<(), sql::DbError> {
        sql::query("INSERT INTO stock (sku, available, updated_at_ms) VALUES ($1, 0, $2) ON CONFLICT (sku) DO NOTHING")
            .bind(sku)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The service's database, whose outbox is its event feed.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// How many of each SKU can be sold; SKUs with no stock row have 0.
    pub async fn available(&self, skus: &[String]) -> Result<Vec<Line>, StoreError> {
        let mut levels = Vec::with_capacity(skus.len());
        for sku in skus {
            let changes = self.levels.changes.load(Ordering::Acquire);
            let kept = self.levels.kept().get(sku).copied().filter(|level| {
                level.changes == changes && level.read_at.elapsed() < KEEP_LEVELS_FOR
            });
            let quantity = match kept {
                Some(level) => level.available,
                None => {
                    let read_at = Instant::now();
                    let available: Option<i64> =
                        sql::query_scalar("SELECT available FROM stock WHERE sku = $1")
                            .bind(sku.as_str())
                            .fetch_optional(&self.db)
                            .await?;
                    let available = available.unwrap_or(0);
                    // A change committed meanwhile may or may not be in what was read.
                    if self.levels.changes.load(Ordering::Acquire) == changes {
                        let mut kept = self.levels.kept();
                        if kept.len() >= MAX_LEVELS {
                            kept.clear();
                        }
                        kept.insert(
                            sku.clone(),
                            Level {
                                changes,
                                read_at,
                                available,
                            },
                        );
                    }
                    available
                }
            };
            levels.push(Line {
                sku: sku.clone(),
                quantity,
            });
        }
        Ok(levels)
    }

    /// Reserves every line for `order_id`, or nothing. An order that already has a
    /// reservation (in any state) gets that one back unchanged.
    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[Line],
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<Reservation, StoreError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(existing) = reservation(&mut tx, order_id, self.db.lock_rows()).await? {
            return Ok(existing);
        }
        // One line per SKU, taken in SKU order: concurrent reservations lock rows in the
        // same order and cannot deadlock.
        let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
        for line in lines {
            *merged.entry(line.sku.as_str()).or_default() += line.quantity;
        }
        let mut short = Vec::new();
        for (sku, quantity) in &merged {
            let taken = sql::query(
                "UPDATE stock SET available = available - $2, updated_at_ms = $3 WHERE sku = $1 AND available >= $2",
            )
            .bind(*sku)
            .bind(*quantity)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                short.push((*sku).to_owned());
            }
        }
        if !short.is_empty() {
            tx.rollback().await?;
            return Err(StoreError::OutOfStock(short));
        }
        insert_reservation(&mut tx, order_id, Status::Reserved, now_ms, expires_at_ms).await?;
        for (sku, quantity) in &merged {
            sql::query(
                "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
            )
            .bind(order_id)
            .bind(*sku)
            .bind(*quantity)
            .execute(&mut *tx)
            .await?;
        }
        self.commit_stock(tx).await?;
        Ok(Reservation {
            order_id: order_id.to_owned(),
            status: Status::Reserved,
            lines: merged
                .into_iter()
                .map(|(sku, quantity)| Line {
                    sku: sku.to_owned(),
                    quantity,
                })
                .collect(),
            expires_at_ms,
        })
    }

    /// Makes a reservation final. Committing twice is fine; committing a released or
    /// expired one is not.
    pub async fn commit(&self, order_id: &str, now_ms: i64) -> Result<Reservation, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let found = reservation(&mut tx, order_id, self.db.lock_rows())
            .await?
            .ok_or_else(|| StoreError::Unknown(order_id.to_owned()))?;
        match found.status {
            Status::Committed => Ok(found),
            Status::Reserved if found.expires_at_ms > now_ms => {
                set_status(&mut tx, order_id, Status::Committed, now_ms).await?;
                // A sale: what is left of each SKU is news.
                for line in &found.lines {
                    announce_level(&self.db, &mut tx, &line.sku).await?;
                }
                self.commit_stock_and_events(tx).await?;
                Ok(Reservation {
                    status: Status::Committed,
                    ..found
                })
            }
            Status::Reserved => {
                // Due but not swept yet: expire it now rather than commit stale stock.
                give_back(&mut tx, &found, Status::Expired, now_ms).await?;
                self.commit_stock(tx).await?;
                Err(StoreError::NotReserved {
                    order_id: order_id.to_owned(),
                    status: Status::Expired,
                })
            }
            status @ (Status::Released | Status::Expired) => Err(StoreError::NotReserved {
                order_id: order_id.to_owned(),
                status,
            }),
        }
    }

    /// Gives a reservation's stock back. Releasing twice is fine; releasing an order with
    /// no reservation records a released one with no lines, so a late reserve takes
    /// nothing.
    pub async fn release(&self, order_id: &str, now_ms: i64) -> Result<Reservation, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let Some(found) = reservation(&mut tx, order_id, self.db.lock_rows()).await? else {
            insert_reservation(&mut tx, order_id, Status::Released, now_ms, now_ms).await?;
            self.commit_stock(tx).await?;
            return Ok(Reservation {
                order_id: order_id.to_owned(),
                status: Status::Released,
                lines: Vec::new(),
                expires_at_ms: now_ms,
            });
        };
        match found.status {
            Status::Released | Status::Expired => Ok(found),
            Status::Committed => Err(StoreError::NotReserved {
                order_id: order_id.to_owned(),
                status: Status::Committed,
            }),
            Status::Reserved => {
                give_back(&mut tx, &found, Status::Released, now_ms).await?;
                self.commit_stock(tx).await?;
                Ok(Reservation {
                    status: Status::Released,
                    ..found
                })
            }
        }
    }

    /// Expires reservations held past their time, giving their stock back. Returns how
    /// many expired.
    pub async fn expire_due(&self, now_ms: i64, batch: i64) -> Result<usize, StoreError> {
        let due: Vec<String> = sql::query_scalar(
            "SELECT order_id FROM reservations WHERE status = 'reserved' AND expires_at_ms <= $1 LIMIT CAST($2 AS BIGINT)",
        )
        .bind(now_ms)
        .bind(batch)
        .fetch_all(&self.db)
        .await?;
        let mut expired = 0;
        for order_id in due {
            let mut tx = self.db.begin_write().await?;
            // Checked again inside the transaction: it may have been committed meanwhile.
            if let Some(found) = reservation(&mut tx, &order_id, self.db.lock_rows()).await?
                && found.status == Status::Reserved
                && found.expires_at_ms <= now_ms
            {
                give_back(&mut tx, &found, Status::Expired, now_ms).await?;
                self.commit_stock(tx).await?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
        let mut tx = self.db.begin().await?;
        let found = reservation(&mut tx, order_id, "").await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Loads the bundled stock list into an empty stock table; returns the SKUs added.
    pub async fn seed_if_empty(&self, seed: &Seed, now_ms: i64) -> Result<usize, StoreError> {
        let count: i64 = sql::query_scalar("SELECT COUNT(*) FROM stock")
            .fetch_one(&self.db)
            .await?;
        if count > 0 {
            return Ok(0);
        }
        let mut tx = self.db.begin_write().await?;
        let mut added = 0;
        for (sku, available) in &seed.stock {
            let result = sql::query(
                "INSERT INTO stock (sku, available, updated_at_ms) VALUES ($1, $2, $3) ON CONFLICT (sku) DO NOTHING",
            )
            .bind(sku.as_str())
            .bind(*available)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            added += result.rows_affected() as usize;
        }
        self.commit_stock(tx).await?;
        Ok(added)
    }
}

/// The stock a new inventory starts with.
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub stock: BTreeMap<String, i64>,
}

impl Seed {
    pub fn bundled() -> Result<Self, StoreError> {
        serde_json::from_str(include_str!("../seed/stock.json"))
            .map_err(|error| StoreError::Corrupt(format!("seed stock: {error}")))
    }
}

async fn reservation(
    tx: &mut sql::Transaction,
    order_id: &str,
    lock_rows: &str,
) -> Result<Option<Reservation>, StoreError> {
    // The reservation and its lines in one read; on PostgreSQL only the reservation's row
    // is locked (the lines' side of the join may be empty).
    let lock = if lock_rows.is_empty() {
        ""
    } else {
        " FOR UPDATE OF r"
    };
    let rows = sql::query(format!(
        "SELECT r.status, r.expires_at_ms, l.sku, l.quantity FROM reservations r
         LEFT JOIN reservation_lines l ON l.order_id = r.order_id
         WHERE r.order_id = $1 ORDER BY l.sku{lock}"
    ))
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let status = Status::parse(&first.try_get::<String, _>("status")?)?;
    let expires_at_ms: i64 = first.try_get("expires_at_ms")?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let sku: Option<String> = row.try_get("sku")?;
        let quantity: Option<i64> = row.try_get("quantity")?;
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            lines.push(Line { sku, quantity });
        }
    }
    Ok(Some(Reservation {
        order_id: order_id.to_owned(),
        status,
        lines,
        expires_at_ms,
    }))
}

/// Below this many, a SKU is running out (LowStock).
pub const LOW_STOCK: i64 = 3;

/// Publishes a SKU's level (StockChanged), and LowStock when it is low, in `tx`.
async fn announce_level(
    db: &Database,
    tx: &mut sql::Transaction,
    sku: &str,
) -> Result<(), StoreError> {
    let available: i64 = sql::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(sku)
        .fetch_one(&mut **tx)
        .await?;
    let level = contract::StockLevel {
        sku: sku.into(),
        available,
    };
    let mut kinds = vec![contract::STOCK_CHANGED];
    if available <= LOW_STOCK {
        kinds.push(contract::LOW_STOCK);
    }
    for kind in kinds {
        let event = Event::new("inventory", kind, sku, &level)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        events::publish(db, tx, &event).await?;
    }
    Ok(())
}

async fn insert_reservation(
    tx: &mut sql::Transaction,
    order_id: &str,
    status: Status,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    sql::query(
        "INSERT INTO reservations (order_id, status, expires_at_ms, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(order_id)
    .bind(status.as_str())
    .bind(expires_at_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut sql::Transaction,
    order_id: &str,
    status: Status,
    now_ms: i64,
) -> Result<(), StoreError> {
    sql::query("UPDATE reservations SET status = $2, updated_at_ms = $3 WHERE order_id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Returns a reservation's quantities to stock and closes it with `status`.
async fn give_back(
    tx: &mut sql::Transaction,
    found: &Reservation,
    status: Status,
    now_ms: i64,
) -> Result<(), StoreError> {
    for line in &found.lines {
        sql::query(
            "UPDATE stock SET available = available + $2, updated_at_ms = $3 WHERE sku = $1",
        )
        .bind(line.sku.as_str())
        .bind(line.quantity)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    set_status(tx, &found.order_id, status, now_ms).await
}
