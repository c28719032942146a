//! The shipping service: quotes by destination and item count, one shipment per order
//! with a tracking id, and a status that advances created → shipped → delivered on a
//! configurable clock (`ship_after_secs`, `deliver_after_secs`).

pub mod api;
pub mod domain;

use anyhow::Context;
use axum::Router;
use comb_contracts::shipping::v1::shipping_server::ShippingServer;
use comb_kit::ServiceConfig;
use comb_kit::storage::{Database, Migration, Migrations};
use comb_kit::{server, telemetry};

use crate::api::ShippingApi;
use crate::domain::Clock;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "shipping",
        sql: include_str!("../migrations/sqlite/0001_shipping.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "shipping",
        sql: include_str!("../migrations/postgres/0001_shipping.sql"),
    }],
};

/// Runs a shipping instance until it is told to stop.
pub async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    telemetry::init(&config)?;
    let api = open(&config).await?;
    server::serve(&config, routes(api)).await?;
    Ok(())
}

pub async fn open(config: &ServiceConfig) -> anyhow::Result<ShippingApi> {
    let db = Database::connect(&config.database_url).await?;
    db.migrate(&MIGRATIONS).await?;
    let millis = |key: &str, default_secs: u64| -> anyhow::Result<i64> {
        let secs: u64 = match config.setting(key) {
            Some(text) => text.parse().with_context(|| {
                format!(
                    "setting {key} (COMB_{}) must be a whole number of seconds",
                    key.to_uppercase()
                )
            })?,
            None => default_secs,
        };
        Ok(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    };
    let clock = Clock {
        ship_after_ms: millis("ship_after_secs", 60)?,
        deliver_after_ms: millis("deliver_after_secs", 300)?,
    };
    Ok(ShippingApi::new(db, clock))
}

pub fn routes(api: ShippingApi) -> Router {
    server::add_grpc(Router::new(), ShippingServer::new(api))
}
