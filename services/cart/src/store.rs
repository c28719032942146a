//! Cart lines in the service's own database.

use comb_kit::storage::{Database, sql};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("at most {max} of one product in a cart (this cart would hold {would})")]
    TooMany { max: i64, would: i64 },
    #[error("at most {0} different products in a cart")]
    TooManyLines(i64),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

/// One product in a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub quantity: i64,
}

/// The most of one product a cart holds.
pub const MAX_QUANTITY: i64 = 99;
/// The most different products a cart holds.
pub const MAX_LINES: i64 = 50;

#[derive(Debug, Clone)]
pub struct CartStore {
    db: Database,
}

impl CartStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// A cart's lines, oldest first.
    pub async fn lines(&self, owner: &str) -> Result<Vec<Line>, StoreError> {
        let rows = sql::query(
            "SELECT product_id, quantity FROM cart_lines WHERE owner = $1 ORDER BY added_at_ms, product_id",
        )
        .bind(owner)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Line {
                    product_id: row.try_get("product_id")?,
                    quantity: row.try_get("quantity")?,
                })
            })
            .collect()
    }

    /// Adds `quantity` to a line (`add`), or sets it (`!add`); a resulting 0 removes it.
    pub async fn change(
        &self,
        owner: &str,
        product_id: &str,
        quantity: i64,
        add: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if add && quantity > 0 {
            // One statement for the common case: a new line, or more of one, within the
            // limits. When a limit stops it, the transaction below says which.
            let added = sql::query(
                "INSERT INTO cart_lines (owner, product_id, quantity, added_at_ms)
                 SELECT $1, $2, $3, $4
                 WHERE $3 <= $5 AND ((SELECT COUNT(*) FROM cart_lines WHERE owner = $1) < $6
                     OR EXISTS (SELECT 1 FROM cart_lines WHERE owner = $1 AND product_id = $2))
                 ON CONFLICT (owner, product_id) DO UPDATE
                 SET quantity = cart_lines.quantity + excluded.quantity
                 WHERE cart_lines.quantity + excluded.quantity <= $5",
            )
            .bind(owner)
            .bind(product_id)
            .bind(quantity)
            .bind(now_ms)
            .bind(MAX_QUANTITY)
            .bind(MAX_LINES)
            .execute(&self.db)
            .await?;
            if added.rows_affected() == 1 {
                return Ok(());
            }
        }
        let mut tx = self.db.begin_write().await?;
        let current: Option<i64> = sql::query_scalar(
            "SELECT quantity FROM cart_lines WHERE owner = $1 AND product_id = $2",
        )
        .bind(owner)
        .bind(product_id)
        .fetch_optional(&mut *tx)
        .await?;
        let would = if add {
            current.unwrap_or(0) + quantity
        } else {
            quantity
        };
        if would > MAX_QUANTITY {
            return Err(StoreError::TooMany {
                max: MAX_QUANTITY,
                would,
            });
        }
        if would == 0 {
            sql::query("DELETE FROM cart_lines WHERE owner = $1 AND product_id = $2")
                .bind(owner)
                .bind(product_id)
                .execute(&mut *tx)
                .await?;
        } else if current.is_some() {
            sql::query("UPDATE cart_lines SET quantity = $3 WHERE owner = $1 AND product_id = $2")
                .bind(owner)
                .bind(product_id)
                .bind(would)
                .execute(&mut *tx)
                .await?;
        } else {
            let lines: i64 = sql::query_scalar("SELECT COUNT(*) FROM cart_lines WHERE owner = $1")
                .bind(owner)
                .fetch_one(&mut *tx)
                .await?;
            if lines >= MAX_LINES {
                return Err(StoreError::TooManyLines(MAX_LINES));
            }
            sql::query("INSERT INTO cart_lines (owner, product_id, quantity, added_at_ms) VALUES ($1, $2, $3, $4)")
                .bind(owner)
                .bind(product_id)
                .bind(would)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear(&self, owner: &str) -> Result<(), StoreError> {
        sql::query("DELETE FROM cart_lines WHERE owner = $1")
            .bind(owner)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Moves every line of `from` into `to`, adding quantities (capped at the most one
    /// cart holds), and empties `from`.
    pub async fn merge(&self, from: &str, to: &str, now_ms: i64) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        let moving = sql::query("SELECT product_id, quantity FROM cart_lines WHERE owner = $1")
            .bind(from)
            .fetch_all(&mut *tx)
            .await?;
        for row in &moving {
            let product_id: String = row.try_get("product_id")?;
            let quantity: i64 = row.try_get("quantity")?;
            sql::query(
                "INSERT INTO cart_lines (owner, product_id, quantity, added_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (owner, product_id) DO UPDATE
                 SET quantity = CASE WHEN cart_lines.quantity + excluded.quantity > $5 THEN $5
                                     ELSE cart_lines.quantity + excluded.quantity END",
            )
            .bind(to)
            .bind(product_id.as_str())
            .bind(quantity)
            .bind(now_ms)
            .bind(MAX_QUANTITY)
            .execute(&mut *tx)
            .await?;
        }
        sql::query("DELETE FROM cart_lines WHERE owner = $1")
            .bind(from)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
