//! The inventory service: how many of each SKU can be sold, and reservations that hold
//! stock for an order until it is confirmed (commit), abandoned (release) or left too
//! long (expiry). Reservations are all-or-nothing and idempotent per order, and
//! concurrent ones never take more than there is.

pub mod api;
pub mod store;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use comb_contracts::inventory::v1::inventory_server::InventoryServer;
use std::sync::Arc;

use comb_contracts::events as contract;
use comb_kit::ServiceConfig;
use comb_kit::events::{Consumer, Event, Handler, HandlerError, Transport};
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};

use comb_kit::clock::now_ms;

use crate::api::InventoryApi;
use crate::store::{InventoryStore, Seed};
use comb_kit::storage::sql;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "inventory",
        sql: include_str!("../migrations/sqlite/0001_inventory.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "inventory",
        sql: include_str!("../migrations/postgres/0001_inventory.sql"),
    }],
};

/// An inventory instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let sweep_every = config.millis("reservation_sweep_ms", Duration::from_secs(1))?;
    let ttl = config.seconds("reservation_ttl_secs", Duration::from_secs(15 * 60))?;
    let store = open_store(&config).await?;
    let transport = Transport::from_config(&config).await?;
    let new_products = new_products(&config, &store, &transport).await?;
    Ok(
        Service::new(routes(InventoryApi::new(store.clone(), ttl), &store))
            .producing(&transport, store.database(), "inventory")
            .task("new products consumer", new_products.run())
            .task(
                "reservation expiry",
                expire_reservations(store.clone(), sweep_every),
            ),
    )
}

/// Opens (and migrates) the database and, unless `seed` is false, loads the bundled stock
/// list into an empty one.
pub async fn open_store(config: &ServiceConfig) -> anyhow::Result<InventoryStore> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let store = InventoryStore::new(db);
    if config.flag("seed", true)? {
        let seed = Seed::bundled().context("the bundled stock list is broken")?;
        let added = store
            .seed_if_empty(&seed, now_ms())
            .await
            .context("seeding stock")?;
        if added > 0 {
            tracing::info!(skus = added, "seeded empty stock");
        }
    }
    Ok(store)
}

/// Gives back the stock of reservations held past their time, for as long as the
/// instance runs.
pub async fn expire_reservations(store: InventoryStore, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.expire_due(now_ms(), 100).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired reservations released their stock"),
            Err(error) => tracing::warn!(%error, "expiring reservations failed; will retry"),
        }
    }
}

/// The reader of the catalog's events: a new product gets a stock line (nothing to sell yet).
pub async fn new_products(
    config: &ServiceConfig,
    store: &InventoryStore,
    transport: &Transport,
) -> anyhow::Result<Consumer> {
    Ok(transport
        .consumer(
            config,
            store.database(),
            "catalog",
            Arc::new(NewProducts {
                store: store.clone(),
            }),
        )
        .await?)
}

struct NewProducts {
    store: InventoryStore,
}

#[tonic::async_trait]
impl Handler for NewProducts {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::PRODUCT_CREATED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let product: contract::ProductChanged = event.data()?;
        self.store
            .add_sku(tx, product.sku.as_str(), now_ms())
            .await?;
        Ok(())
    }
}

/// The inventory API and the feed of its stock events.
pub fn routes(api: InventoryApi, store: &InventoryStore) -> Router {
    comb_kit::events::feed_routes(
        server::add_grpc(Router::new(), InventoryServer::new(api)),
        store.database(),
        "inventory",
    )
}
