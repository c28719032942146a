//! Orders and their saga state in the service's own database.

use comb_kit::events::{self, Event};
use comb_kit::storage::{Database, sql};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

/// Where an order's saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take the stock.
    Reserve,
    /// Authorize the payment.
    Authorize,
    /// Commit the stock, capture the payment, ship, empty the cart.
    Confirm,
    /// Cancelled: give back what was taken.
    Compensate,
    /// Nothing left to do.
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Authorize => "authorize",
            Self::Confirm => "confirm",
            Self::Compensate => "compensate",
            Self::Done => "done",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "reserve" => Self::Reserve,
            "authorize" => Self::Authorize,
            "confirm" => Self::Confirm,
            "compensate" => Self::Compensate,
            "done" => Self::Done,
            other => return Err(StoreError::Corrupt(format!("order step {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "PENDING" => Self::Pending,
            "CONFIRMED" => Self::Confirmed,
            "CANCELLED" => Self::Cancelled,
            other => return Err(StoreError::Corrupt(format!("order status {other:?}"))),
        })
    }
}

/// Where an order's payment stands, as the saga last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Not authorized (yet, or ever).
    None,
    Authorized,
    Captured,
    Declined,
    Voided,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "none" => Self::None,
            "authorized" => Self::Authorized,
            "captured" => Self::Captured,
            "declined" => Self::Declined,
            "voided" => Self::Voided,
            "refunded" => Self::Refunded,
            other => return Err(StoreError::Corrupt(format!("payment status {other:?}"))),
        })
    }
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
    /// Sold as a download: it takes no stock and is not shipped. Absent in orders placed
    /// before downloads were sold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digital: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub owner: String,
    pub idempotency_key: String,
    pub email: String,
    pub status: OrderStatus,
    pub step: Step,
    pub cancel_reason: String,
    pub lines: Vec<Line>,
    pub subtotal_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub address: Address,
    pub payment_last4: String,
    pub payment_status: PaymentStatus,
    pub tracking_id: String,
    pub release_pending: bool,
    pub void_pending: bool,
    pub deadline_at_ms: i64,
    pub created_at_ms: i64,
}

impl Order {
    /// The items to ship: every line's but downloads'.
    pub fn item_count(&self) -> i64 {
        self.physical_lines().map(|line| line.quantity).sum()
    }

    /// The lines that take stock and are shipped.
    pub fn physical_lines(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|line| !line.digital)
    }

    /// Whether anything is shipped (an order of downloads only takes no stock either).
    pub fn ships(&self) -> bool {
        self.physical_lines().next().is_some()
    }
}

#[derive(Debug, Clone)]
pub struct OrderStore {
    db: Database,
}

const COLUMNS: &str = "id, owner, idempotency_key, email, status, step, cancel_reason, lines, subtotal_minor, \
    shipping_minor, total_minor, currency, address, payment_last4, payment_status, tracking_id, release_pending, \
    void_pending, deadline_at_ms, created_at_ms";

impl OrderStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new order, unless the owner already has one with its idempotency key;
    /// answers with the stored order and whether it is the new one. A new order's
    /// `placed` event is published with it.
    pub async fn create(
        &self,
        order: &Order,
        now_ms: i64,
        placed: &Event,
    ) -> Result<(Order, bool), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let result = sql::query(format!(
            "INSERT INTO orders ({COLUMNS}, updated_at_ms, traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20, $21) ON CONFLICT (owner, idempotency_key) DO NOTHING"
        ))
        .bind(order.id.as_str())
        .bind(order.owner.as_str())
        .bind(order.idempotency_key.as_str())
        .bind(order.email.as_str())
        .bind(order.status.as_str())
        .bind(order.step.as_str())
        .bind(order.cancel_reason.as_str())
        .bind(to_json(&order.lines)?)
        .bind(order.subtotal_minor)
        .bind(order.shipping_minor)
        .bind(order.total_minor)
        .bind(order.currency.as_str())
        .bind(to_json(&order.address)?)
        .bind(order.payment_last4.as_str())
        .bind(order.payment_status.as_str())
        .bind(order.tracking_id.as_str())
        .bind(i64::from(order.release_pending))
        .bind(i64::from(order.void_pending))
        .bind(order.deadline_at_ms)
        .bind(now_ms)
        // The placing request's trace context, which the placed event carries too.
        .bind(placed.traceparent.as_str())
        .execute(&mut *tx)
        .await?;
        let created = result.rows_affected() == 1;
        if !created {
            tx.rollback().await?;
        } else {
            events::publish(&self.db, &mut tx, placed).await?;
            events::commit(&self.db, tx).await?;
            return Ok((order.clone(), true));
        }
        let stored = self
            .by_key(&order.owner, &order.idempotency_key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("order {} vanished", order.id)))?;
        Ok((stored, created))
    }

    pub async fn by_key(
        &self,
        owner: &str,
        idempotency_key: &str,
    ) -> Result<Option<Order>, StoreError> {
        let row = sql::query(format!(
            "SELECT {COLUMNS} FROM orders WHERE owner = $1 AND idempotency_key = $2"
        ))
        .bind(owner)
        .bind(idempotency_key)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Every order, for audits (`comb chaos check` reconciles them with payments, stock and
    /// events through this, so a schema change that would break it fails to compile).
    pub async fn all(&self) -> Result<Vec<Order>, StoreError> {
        let rows = sql::query(format!("SELECT {COLUMNS} FROM orders"))
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// The id of the confirmation event published for each confirmed order, by order id,
    /// for audits.
    pub async fn confirmation_events(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let rows = sql::query("SELECT id, subject FROM outbox WHERE type = $1")
            .bind(comb_contracts::events::ORDER_CONFIRMED)
            .fetch_all(&self.db)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("subject")?, row.try_get("id")?)))
            .collect()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let row = sql::query(format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// The owner's orders, newest first.
    pub async fn list(&self, owner: &str, limit: i64) -> Result<Vec<Order>, StoreError> {
        let rows = sql::query(format!(
            "SELECT {COLUMNS} FROM orders WHERE owner = $1 ORDER BY created_at_ms DESC, id DESC LIMIT CAST($2 AS BIGINT)"
        ))
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Writes an order's saga progress, if its step is still `expected`: of two drivers of
    /// one saga, only one moves it on. `event`, if any, is published in the same
    /// transaction, so it exists exactly when the progress does. Returns whether this
    /// driver moved the saga.
    pub async fn advance(
        &self,
        order: &Order,
        expected: Step,
        now_ms: i64,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let result = sql::query(
            "UPDATE orders SET status = $2, step = $3, cancel_reason = $4, payment_status = $5, tracking_id = $6,
             release_pending = $7, void_pending = $8, updated_at_ms = $9 WHERE id = $1 AND step = $10",
        )
        .bind(order.id.as_str())
        .bind(order.status.as_str())
        .bind(order.step.as_str())
        .bind(order.cancel_reason.as_str())
        .bind(order.payment_status.as_str())
        .bind(order.tracking_id.as_str())
        .bind(i64::from(order.release_pending))
        .bind(i64::from(order.void_pending))
        .bind(now_ms)
        .bind(expected.as_str())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        match event {
            Some(event) => {
                events::publish(&self.db, &mut tx, event).await?;
                events::commit(&self.db, tx).await?;
            }
            // A step that publishes nothing leaves the data version as it was: no need to
            // have it read again.
            None => tx.commit().await?,
        }
        Ok(true)
    }

    /// The service's database, whose outbox is its event feed.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Marks a saga as being driven now, so other instances leave it alone.
    pub async fn touch(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sql::query("UPDATE orders SET updated_at_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Sagas with work left whose last progress is older than `idle_since_ms`.
    /// Orders whose saga is unfinished and untouched since `idle_since_ms`, with the trace
    /// context of the checkout that placed each.
    pub async fn unfinished(
        &self,
        idle_since_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sql::query_as(
            "SELECT id, traceparent FROM orders WHERE step <> 'done' AND updated_at_ms <= $1 ORDER BY created_at_ms LIMIT 500",
        )
        .bind(idle_since_ms)
        .fetch_all(&self.db)
        .await?;
        Ok(rows)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn order_from_row(row: &sql::Row) -> Result<Order, StoreError> {
    let lines: String = row.try_get("lines")?;
    let address: String = row.try_get("address")?;
    Ok(Order {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        idempotency_key: row.try_get("idempotency_key")?,
        email: row.try_get("email")?,
        status: OrderStatus::parse(&row.try_get::<String, _>("status")?)?,
        step: Step::parse(&row.try_get::<String, _>("step")?)?,
        cancel_reason: row.try_get("cancel_reason")?,
        lines: serde_json::from_str(&lines)
            .map_err(|error| StoreError::Corrupt(format!("orders.lines: {error}")))?,
        subtotal_minor: row.try_get("subtotal_minor")?,
        shipping_minor: row.try_get("shipping_minor")?,
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        address: serde_json::from_str(&address)
            .map_err(|error| StoreError::Corrupt(format!("orders.address: {error}")))?,
        payment_last4: row.try_get("payment_last4")?,
        payment_status: PaymentStatus::parse(&row.try_get::<String, _>("payment_status")?)?,
        tracking_id: row.try_get("tracking_id")?,
        release_pending: row.try_get::<i64, _>("release_pending")? != 0,
        void_pending: row.try_get::<i64, _>("void_pending")? != 0,
        deadline_at_ms: row.try_get("deadline_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_statuses_are_stored_as_words_and_an_unknown_one_is_corrupt() {
        for status in [
            PaymentStatus::None,
            PaymentStatus::Authorized,
            PaymentStatus::Captured,
            PaymentStatus::Declined,
            PaymentStatus::Voided,
            PaymentStatus::Refunded,
        ] {
            assert_eq!(
                PaymentStatus::parse(status.as_str()).expect("known"),
                status
            );
        }
        assert!(matches!(
            PaymentStatus::parse("pending"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
