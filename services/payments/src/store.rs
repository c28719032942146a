//! Payments in the service's own database.

use comb_contracts::events as contract;
use comb_kit::events::{self, Event};
use comb_kit::storage::{Database, sql};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("payment {payment_id} is {status}, so it cannot be {wanted}")]
    WrongState {
        payment_id: String,
        status: Status,
        wanted: &'static str,
    },
    #[error("there is no payment {0}")]
    Unknown(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Authorized,
    Declined,
    Captured,
    Voided,
    Refunded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Captured => "captured",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "authorized" => Self::Authorized,
            "declined" => Self::Declined,
            "captured" => Self::Captured,
            "voided" => Self::Voided,
            "refunded" => Self::Refunded,
            other => return Err(StoreError::Corrupt(format!("payment status {other:?}"))),
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub status: Status,
    pub amount_minor: i64,
    pub currency: String,
    pub last4: String,
    pub decline_reason: String,
}

#[derive(Debug, Clone)]
pub struct PaymentStore {
    db: Database,
}

const COLUMNS: &str = "payment_id, status, amount_minor, currency, last4, decline_reason";

impl PaymentStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The service's database, whose outbox is its event feed.
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn publish(
        &self,
        tx: &mut sql::Transaction,
        kind: &str,
        payment: &Payment,
    ) -> Result<(), StoreError> {
        let data = contract::PaymentEvent {
            payment_id: payment.payment_id.clone(),
            amount_minor: payment.amount_minor,
            currency: payment.currency.clone(),
            last4: payment.last4.clone(),
            decline_reason: payment.decline_reason.clone(),
        };
        let event = Event::new("payments", kind, &payment.payment_id, &data)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        events::publish(&self.db, tx, &event).await?;
        Ok(())
    }

    /// Every payment, for audits (`comb chaos check` reconciles them with orders).
    pub async fn all(&self) -> Result<Vec<Payment>, StoreError> {
        let rows = sql::query(format!("SELECT {COLUMNS} FROM payments"))
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(payment_from_row).collect()
    }

    pub async fn get(&self, payment_id: &str) -> Result<Option<Payment>, StoreError> {
        let row = sql::query(format!(
            "SELECT {COLUMNS} FROM payments WHERE payment_id = $1"
        ))
        .bind(payment_id)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// Records `payment` unless one with its id exists; either way answers with the
    /// payment stored under that id.
    pub async fn record(&self, payment: &Payment, now_ms: i64) -> Result<Payment, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let inserted = sql::query(
            "INSERT INTO payments (payment_id, status, amount_minor, currency, last4, decline_reason, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(payment.payment_id.as_str())
        .bind(payment.status.as_str())
        .bind(payment.amount_minor)
        .bind(payment.currency.as_str())
        .bind(payment.last4.as_str())
        .bind(payment.decline_reason.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let kind = match payment.status {
                Status::Authorized => Some(contract::PAYMENT_AUTHORIZED),
                Status::Declined => Some(contract::PAYMENT_DECLINED),
                _ => None,
            };
            if let Some(kind) = kind {
                self.publish(&mut tx, kind, payment).await?;
            }
            events::commit(&self.db, tx).await?;
            // What was written is what is stored.
            return Ok(payment.clone());
        }
        tx.rollback().await?;
        self.get(&payment.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("payment {} vanished", payment.payment_id)))
    }

    /// Moves a payment from one of `from` to `to`; a payment already in `to` is answered
    /// as it is.
    pub async fn transition(
        &self,
        payment_id: &str,
        from: &[Status],
        to: Status,
        wanted: &'static str,
        now_ms: i64,
    ) -> Result<Payment, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row = sql::query(format!(
            "SELECT {COLUMNS} FROM payments WHERE payment_id = $1{}",
            self.db.lock_rows()
        ))
        .bind(payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        let current = row
            .as_ref()
            .map(payment_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::Unknown(payment_id.to_owned()))?;
        if current.status == to {
            return Ok(current);
        }
        if !from.contains(&current.status) {
            return Err(StoreError::WrongState {
                payment_id: payment_id.to_owned(),
                status: current.status,
                wanted,
            });
        }
        sql::query("UPDATE payments SET status = $2, updated_at_ms = $3 WHERE payment_id = $1")
            .bind(payment_id)
            .bind(to.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if to == Status::Refunded {
            self.publish(&mut tx, contract::PAYMENT_REFUNDED, &current)
                .await?;
        }
        events::commit(&self.db, tx).await?;
        Ok(Payment {
            status: to,
            ..current
        })
    }
}

fn payment_from_row(row: &sql::Row) -> Result<Payment, StoreError> {
    Ok(Payment {
        payment_id: row.try_get("payment_id")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        last4: row.try_get("last4")?,
        decline_reason: row.try_get("decline_reason")?,
    })
}
