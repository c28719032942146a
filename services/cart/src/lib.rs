//! The cart service: each shopper's cart, kept per owner (a customer's user id or a
//! guest's id), checked against the catalog when a product is added and priced from it
//! when read. A guest's cart merges into their account's when they sign in.

pub mod api;
pub mod store;

use std::sync::Arc;

use axum::Router;
use comb_contracts::cart::v1::cart_server::CartServer;
use comb_kit::ServiceConfig;
use comb_kit::grpc::Upstream;
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};

use crate::api::CartApi;
use crate::store::CartStore;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "cart",
        sql: include_str!("../migrations/sqlite/0001_cart.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "cart",
        sql: include_str!("../migrations/postgres/0001_cart.sql"),
    }],
};

/// A cart instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let api = open(&config).await?;
    Ok(Service::new(routes(api)))
}

/// Opens (and migrates) the database and the channel to the catalog.
pub async fn open(config: &ServiceConfig) -> anyhow::Result<CartApi> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let catalog = Upstream::from_config(config, "catalog")?;
    Ok(CartApi::new(CartStore::new(db), Arc::new(catalog)))
}

pub fn routes(api: CartApi) -> Router {
    server::add_grpc(Router::new(), CartServer::new(api))
}
