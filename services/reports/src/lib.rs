//! The reports service: sales per day, top products and cancellations by reason, built
//! only from the orders feed (it calls no other service). Every event it uses is archived
//! as it came, so the figures can be thrown away and rebuilt by replaying the archive.

use std::sync::Arc;

use axum::Router;
use comb_contracts::events::{self as contract, OrderCancelled, OrderConfirmed};
use comb_contracts::reports::v1 as proto;
use comb_contracts::reports::v1::reports_server::{Reports, ReportsServer};
use comb_kit::ServiceConfig;
use comb_kit::events::{Event, Handler, HandlerError, Transport};
use comb_kit::grpc::invalid_argument;
use comb_kit::problem::FieldError;
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::sql;
use comb_kit::storage::{Database, Migration, Migrations};
use tonic::{Request, Response, Status};

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "reports",
        sql: include_str!("../migrations/sqlite/0001_reports.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "reports",
        sql: include_str!("../migrations/postgres/0001_reports.sql"),
    }],
};

const TOP_PRODUCTS: i64 = 10;

/// A reports instance, for `comb_kit::service::run`: its database, and the reader of the
/// orders feed (archiving order events and adding them to the figures).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let transport = Transport::from_config(&config).await?;
    let orders = transport
        .consumer(&config, &db, "orders", Arc::new(Figures))
        .await?;
    Ok(Service::new(routes(db)).task("orders consumer", orders.run()))
}

/// Archives order events and adds them to the figures.
struct Figures;

#[tonic::async_trait]
impl Handler for Figures {
    fn wants(&self, kind: &str) -> bool {
        matches!(kind, contract::ORDER_CONFIRMED | contract::ORDER_CANCELLED)
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        apply(tx, &event.kind, &event.data).await?;
        sql::query(
            "INSERT INTO archive (event_id, producer, seq, type, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.id.as_str())
        .bind(event.source.as_str())
        .bind(event.seq)
        .bind(event.kind.as_str())
        .bind(event.data.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// The UTC day of an RFC 3339 time.
fn day_of(time: &str) -> Result<String, HandlerError> {
    time.get(..10)
        .filter(|day| is_day(day))
        .map(str::to_owned)
        .ok_or_else(|| HandlerError::Poison(format!("{time:?} is not an RFC 3339 time")))
}

fn is_day(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
}

/// Adds one event to the figures.
async fn apply(tx: &mut sql::Transaction, kind: &str, data: &str) -> Result<(), HandlerError> {
    let unreadable =
        |error: serde_json::Error| HandlerError::Poison(format!("{kind} data: {error}"));
    match kind {
        contract::ORDER_CONFIRMED => {
            let order: OrderConfirmed = serde_json::from_str(data).map_err(unreadable)?;
            let day = day_of(&order.placed_at)?;
            sql::query(
                "INSERT INTO day_sales (day, orders, revenue_minor) VALUES ($1, 1, $2)
                 ON CONFLICT (day) DO UPDATE SET orders = day_sales.orders + 1,
                 revenue_minor = day_sales.revenue_minor + excluded.revenue_minor",
            )
            .bind(day.as_str())
            .bind(order.total_minor)
            .execute(&mut **tx)
            .await?;
            for line in &order.lines {
                sql::query(
                    "INSERT INTO product_sales (day, product_id, title, quantity, revenue_minor) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (day, product_id) DO UPDATE SET quantity = product_sales.quantity + excluded.quantity,
                     revenue_minor = product_sales.revenue_minor + excluded.revenue_minor, title = excluded.title",
                )
                .bind(day.as_str())
                .bind(line.product_id.as_str())
                .bind(line.title.as_str())
                .bind(line.quantity.get())
                .bind(line.line_total_minor)
                .execute(&mut **tx)
                .await?;
            }
        }
        contract::ORDER_CANCELLED => {
            let order: OrderCancelled = serde_json::from_str(data).map_err(unreadable)?;
            let day = day_of(&order.placed_at)?;
            sql::query(
                "INSERT INTO cancellations (day, reason, orders) VALUES ($1, $2, 1)
                 ON CONFLICT (day, reason) DO UPDATE SET orders = cancellations.orders + 1",
            )
            .bind(day.as_str())
            .bind(order.reason.as_str())
            .execute(&mut **tx)
            .await?;
        }
        other => {
            return Err(HandlerError::Poison(format!(
                "reports does not handle {other}"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct ReportsApi {
    db: Database,
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "reports storage failed");
    Status::internal("reports cannot be read")
}

#[tonic::async_trait]
impl Reports for ReportsApi {
    async fn sales(
        &self,
        request: Request<proto::SalesRequest>,
    ) -> Result<Response<proto::SalesReport>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        for (field, value) in [("from", &request.from), ("to", &request.to)] {
            if !value.is_empty() && !is_day(value) {
                errors.push(FieldError::new(field, "must be a date as YYYY-MM-DD"));
            }
        }
        if errors.is_empty()
            && !request.from.is_empty()
            && !request.to.is_empty()
            && request.from > request.to
        {
            errors.push(FieldError::new("to", "must not be before from"));
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let from = if request.from.is_empty() {
            "0000-00-00".to_owned()
        } else {
            request.from
        };
        let to = if request.to.is_empty() {
            "9999-99-99".to_owned()
        } else {
            request.to
        };
        let days = sql::query(
            "SELECT day, orders, revenue_minor FROM day_sales WHERE day >= $1 AND day <= $2 ORDER BY day",
        )
        .bind(from.as_str())
        .bind(to.as_str())
        .fetch_all(&self.db)
        .await
        .map_err(internal)?
        .iter()
        .map(|row| {
            Ok(proto::Day {
                date: row.try_get("day")?,
                orders: row.try_get("orders")?,
                revenue_minor: row.try_get("revenue_minor")?,
            })
        })
        .collect::<Result<Vec<_>, sql::DbError>>()
        .map_err(internal)?;
        let top_products = sql::query(
            "SELECT product_id, MAX(title) AS title, CAST(SUM(quantity) AS BIGINT) AS quantity,
                    CAST(SUM(revenue_minor) AS BIGINT) AS revenue_minor
             FROM product_sales WHERE day >= $1 AND day <= $2
             GROUP BY product_id ORDER BY SUM(quantity) DESC, product_id LIMIT CAST($3 AS BIGINT)",
        )
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(TOP_PRODUCTS)
        .fetch_all(&self.db)
        .await
        .map_err(internal)?
        .iter()
        .map(|row| {
            Ok(proto::TopProduct {
                product_id: row.try_get("product_id")?,
                title: row.try_get("title")?,
                quantity: row.try_get("quantity")?,
                revenue_minor: row.try_get("revenue_minor")?,
            })
        })
        .collect::<Result<Vec<_>, sql::DbError>>()
        .map_err(internal)?;
        let cancellations = sql::query(
            "SELECT reason, CAST(SUM(orders) AS BIGINT) AS orders FROM cancellations WHERE day >= $1 AND day <= $2
             GROUP BY reason ORDER BY reason",
        )
        .bind(from.as_str())
        .bind(to.as_str())
        .fetch_all(&self.db)
        .await
        .map_err(internal)?
        .iter()
        .map(|row| {
            Ok(proto::Cancellation {
                reason: row.try_get("reason")?,
                count: row.try_get("orders")?,
            })
        })
        .collect::<Result<Vec<_>, sql::DbError>>()
        .map_err(internal)?;
        Ok(Response::new(proto::SalesReport {
            days,
            top_products,
            cancellations,
            currency: "USD".into(),
        }))
    }

    async fn rebuild(
        &self,
        _request: Request<proto::RebuildRequest>,
    ) -> Result<Response<proto::RebuildResponse>, Status> {
        let events = rebuild(&self.db).await.map_err(internal)?;
        tracing::info!(events, "figures rebuilt from the archive");
        Ok(Response::new(proto::RebuildResponse { events }))
    }
}

/// Throws the figures away and replays the archive into them, in one transaction.
pub async fn rebuild(db: &Database) -> Result<i64, HandlerError> {
    let mut tx = db.begin_write().await?;
    for table in ["day_sales", "product_sales", "cancellations"] {
        sql::query(format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    let archived = sql::query("SELECT type, data FROM archive ORDER BY producer, seq")
        .fetch_all(&mut *tx)
        .await?;
    for row in &archived {
        let kind: String = row.try_get("type")?;
        let data: String = row.try_get("data")?;
        apply(&mut tx, &kind, &data).await?;
    }
    tx.commit().await?;
    Ok(i64::try_from(archived.len()).unwrap_or(i64::MAX))
}

/// How many times each order confirmation event was archived, by event id, for audits
/// (`comb chaos check`: exactly once each).
pub async fn archived_confirmations(
    db: &Database,
) -> Result<std::collections::HashMap<String, i64>, sql::DbError> {
    comb_kit::events::count_per_event(
        db,
        sql::query("SELECT event_id FROM archive WHERE type = $1").bind(contract::ORDER_CONFIRMED),
    )
    .await
}

/// How many orders the daily sales count in all, for audits.
pub async fn orders_in_sales(db: &Database) -> Result<i64, sql::DbError> {
    sql::query_scalar("SELECT CAST(COALESCE(SUM(orders), 0) AS BIGINT) FROM day_sales")
        .fetch_one(db)
        .await
}

pub fn routes(db: Database) -> Router {
    server::add_grpc(Router::new(), ReportsServer::new(ReportsApi { db }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_recognised() {
        assert!(is_day("2026-11-23"));
        assert!(!is_day("2026-1-23"));
        assert!(!is_day("23/11/2026"));
        assert_eq!(
            day_of("2026-11-23T07:00:00Z").ok(),
            Some("2026-11-23".to_owned())
        );
        assert!(day_of("yesterday").is_err());
    }
}
