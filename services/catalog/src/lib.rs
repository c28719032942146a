//! The catalog service: the products comb sells (books, music, video), their categories
//! and prices, and full-text search over them. It owns its database and answers over gRPC;
//! the gateway puts it on the public REST API.

pub mod api;
pub mod cache;
pub mod domain;
pub mod media;
pub mod ratings;
pub mod store;

use anyhow::Context;
use axum::Router;
use comb_contracts::catalog::v1::catalog_server::CatalogServer;
use std::sync::Arc;
use tracing::Instrument;

use comb_kit::ServiceConfig;
use comb_kit::events::{Consumer, Transport};
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};

use crate::api::CatalogApi;
use crate::ratings::Ratings;
use crate::store::{CatalogStore, Seed};

/// The catalog's schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "catalog",
            sql: include_str!("../migrations/sqlite/0001_catalog.sql"),
        },
        Migration {
            version: 2,
            description: "ratings",
            sql: include_str!("../migrations/sqlite/0002_ratings.sql"),
        },
        Migration {
            version: 3,
            description: "media",
            sql: include_str!("../migrations/sqlite/0003_media.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "catalog",
            sql: include_str!("../migrations/postgres/0001_catalog.sql"),
        },
        Migration {
            version: 2,
            description: "ratings",
            sql: include_str!("../migrations/postgres/0002_ratings.sql"),
        },
        Migration {
            version: 3,
            description: "media",
            sql: include_str!("../migrations/postgres/0003_media.sql"),
        },
    ],
};

/// A catalog instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let store = open_store(&config).await?;
    let transport = Transport::from_config(&config).await?;
    let mut service =
        Service::new(routes(store.clone())).producing(&transport, store.database(), "catalog");
    if config.calls("reviews") || matches!(transport, Transport::Nats(_)) {
        let ratings = ratings_consumer(&config, &store, &transport).await?;
        service = service.task("ratings consumer", ratings.run());
    } else {
        tracing::info!("no reviews service configured: products carry no rating summary");
    }
    if config.calls("media") || matches!(transport, Transport::Nats(_)) {
        let media = transport
            .consumer(
                &config,
                store.database(),
                "media",
                Arc::new(media::MediaShown),
            )
            .await?;
        service = service.task("media consumer", media.run());
    }
    Ok(service)
}

/// Opens (and migrates) the catalog's database and, unless the `seed` setting is false,
/// loads the bundled catalog into it when it is empty.
pub async fn open_store(config: &ServiceConfig) -> anyhow::Result<CatalogStore> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let store = CatalogStore::new(db);
    if config.flag("seed", true)? {
        let seed = Seed::bundled().context("the bundled seed catalog is broken")?;
        // One trace for the whole seed: its announcements and what the readers do with
        // them, instead of a trace per seeded product.
        let span = tracing::info_span!("seed catalog", otel.kind = "internal");
        let added = store
            .seed_if_empty(&seed)
            .instrument(span)
            .await
            .context("seeding the catalog")?;
        if added > 0 {
            tracing::info!(products = added, "seeded an empty catalog");
        }
    }
    Ok(store)
}

/// The reader of the reviews' events, which keeps each product's rating summary.
pub async fn ratings_consumer(
    config: &ServiceConfig,
    store: &CatalogStore,
    transport: &Transport,
) -> anyhow::Result<Consumer> {
    Ok(transport
        .consumer(config, store.database(), "reviews", Arc::new(Ratings))
        .await?)
}

/// The catalog's gRPC API, the feed of its product events, and the watch of its data
/// version (the gateway keeps its answers while it stands).
pub fn routes(store: CatalogStore) -> Router {
    let db = store.database().clone();
    let api = server::add_grpc(Router::new(), CatalogServer::new(CatalogApi::new(store)));
    comb_kit::versions::version_routes(comb_kit::events::feed_routes(api, &db, "catalog"), &db)
}
