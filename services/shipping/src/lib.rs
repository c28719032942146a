//! The shipping service: quotes by destination and item count, one shipment per order
//! with a tracking id, and a status that advances created → shipped → delivered on a
//! configurable clock (`ship_after_secs`, `deliver_after_secs`).

pub mod api;
pub mod domain;

use axum::Router;
use comb_contracts::events::{self as contract, ShipmentShipped};
use comb_contracts::shipping::v1::shipping_server::ShippingServer;
use comb_kit::ServiceConfig;
use comb_kit::clock::now_ms;
use comb_kit::events::{self, Event, Transport};
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};

use crate::api::ShippingApi;
use crate::domain::Clock;
use comb_kit::storage::sql;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "shipping",
            sql: include_str!("../migrations/sqlite/0001_shipping.sql"),
        },
        Migration {
            version: 2,
            description: "announcements",
            sql: include_str!("../migrations/sqlite/0002_announcements.sql"),
        },
        Migration {
            version: 3,
            description: "delivered",
            sql: include_str!("../migrations/sqlite/0003_delivered.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "shipping",
            sql: include_str!("../migrations/postgres/0001_shipping.sql"),
        },
        Migration {
            version: 2,
            description: "announcements",
            sql: include_str!("../migrations/postgres/0002_announcements.sql"),
        },
        Migration {
            version: 3,
            description: "delivered",
            sql: include_str!("../migrations/postgres/0003_delivered.sql"),
        },
    ],
};

/// A shipping instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let api = open(&config).await?;
    let transport = Transport::from_config(&config).await?;
    let db = api.database().clone();
    let announcing = announce_shipments(db.clone(), api.clock());
    Ok(Service::new(routes(api))
        .producing(&transport, &db, "shipping")
        .task("shipment announcements", announcing))
}

pub async fn open(config: &ServiceConfig) -> anyhow::Result<ShippingApi> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let millis = |key: &str, default_secs: u64| -> anyhow::Result<i64> {
        let after = config.seconds(key, std::time::Duration::from_secs(default_secs))?;
        Ok(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
    };
    let clock = Clock {
        ship_after_ms: millis("ship_after_secs", 60)?,
        deliver_after_ms: millis("deliver_after_secs", 300)?,
    };
    Ok(ShippingApi::new(db, clock))
}

/// How often shipments are checked for having shipped.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// For as long as the instance runs, publishes ShipmentShipped for each shipment once its
/// clock says it has shipped, exactly once (marked in the same transaction).
pub async fn announce_shipments(db: Database, clock: Clock) {
    loop {
        if let Err(error) = announce_due(&db, clock).await {
            tracing::warn!(%error, "announcing shipments failed; will retry");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// Publishes ShipmentShipped, then ShipmentDelivered, for every shipment whose clock says
/// so and that has not been announced yet.
pub async fn announce_due(db: &Database, clock: Clock) -> Result<(), sql::DbError> {
    announce_due_at(db, clock, now_ms()).await
}

/// [`announce_due`] as of `now` (Unix milliseconds), so that what is due when can be
/// checked without waiting for it.
pub async fn announce_due_at(db: &Database, clock: Clock, now: i64) -> Result<(), sql::DbError> {
    let stages = [
        (
            "shipped_announced",
            clock.ship_after_ms,
            contract::SHIPMENT_SHIPPED,
        ),
        (
            "delivered_announced",
            clock.deliver_after_ms,
            contract::SHIPMENT_DELIVERED,
        ),
    ];
    for (flag, after_ms, kind) in stages {
        let due = sql::query(format!(
            "SELECT order_id, tracking_id, recipient, email FROM shipments
             WHERE {flag} = 0 AND created_at_ms <= $1 ORDER BY created_at_ms LIMIT 100"
        ))
        .bind(now.saturating_sub(after_ms))
        .fetch_all(db)
        .await?;
        for row in due {
            let shipment = ShipmentShipped {
                order_id: row.try_get::<String, _>("order_id")?.into(),
                tracking_id: row.try_get("tracking_id")?,
                recipient: row.try_get("recipient")?,
                email: row.try_get("email")?,
            };
            let mut tx = db.begin_write().await?;
            let marked = sql::query(format!(
                "UPDATE shipments SET {flag} = 1 WHERE order_id = $1 AND {flag} = 0"
            ))
            .bind(shipment.order_id.as_str())
            .execute(&mut *tx)
            .await?;
            if marked.rows_affected() == 1 {
                publish(db, &mut tx, kind, &shipment).await?;
            }
            events::commit(db, tx).await?;
        }
    }
    Ok(())
}

/// Writes a shipment event to the outbox in the caller's transaction.
pub(crate) async fn publish(
    db: &Database,
    tx: &mut sql::Transaction,
    kind: &str,
    shipment: &ShipmentShipped,
) -> Result<(), sql::DbError> {
    match Event::new("shipping", kind, shipment.order_id.as_str(), shipment) {
        Ok(event) => events::publish(db, tx, &event).await,
        Err(error) => {
            tracing::error!(%error, "cannot encode a shipment event");
            Ok(())
        }
    }
}

/// The shipping API and the feed of its shipment events.
pub fn routes(api: ShippingApi) -> Router {
    let db = api.database().clone();
    events::feed_routes(
        server::add_grpc(Router::new(), ShippingServer::new(api)),
        &db,
        "shipping",
    )
}
