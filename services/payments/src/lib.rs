//! The payments service: a card payment sandbox. It checks cards (Luhn, expiry, CVC),
//! authorizes, captures, voids and refunds, idempotently per payment id, and keeps only
//! the last four digits of a card. The test cards are listed in `comb_contracts::cards`.

pub mod api;
pub mod store;

use axum::Router;
use comb_contracts::payments::v1::payments_server::PaymentsServer;
use comb_kit::ServiceConfig;
use comb_kit::events::{self, Transport};
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};

use crate::api::PaymentsApi;
use crate::store::PaymentStore;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "payments",
        sql: include_str!("../migrations/sqlite/0001_payments.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "payments",
        sql: include_str!("../migrations/postgres/0001_payments.sql"),
    }],
};

/// A payments instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let api = open(&config).await?;
    let transport = Transport::from_config(&config).await?;
    let db = api.store().database().clone();
    Ok(Service::new(routes(api)).producing(&transport, &db, "payments"))
}

pub async fn open(config: &ServiceConfig) -> anyhow::Result<PaymentsApi> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    Ok(PaymentsApi::new(PaymentStore::new(db)))
}

/// The payments API and the feed of its payment events.
pub fn routes(api: PaymentsApi) -> Router {
    let db = api.store().database().clone();
    events::feed_routes(
        server::add_grpc(Router::new(), PaymentsServer::new(api)),
        &db,
        "payments",
    )
}
