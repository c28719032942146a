//! Catalog tests over real databases: every store behaviour on SQLite and on PostgreSQL,
//! and the gRPC API over a real connection.

#![allow(clippy::unwrap_used)]

mod grpc;
mod store;

use std::collections::BTreeMap;

use comb_catalog::store::CatalogStore;
use comb_kit::ServiceConfig;
use comb_testkit::TestDatabase;

/// A seeded catalog store over `database`.
async fn seeded_store(database: &TestDatabase) -> CatalogStore {
    let env = [("COMB_DATABASE_URL", database.url.clone())];
    let config = ServiceConfig::resolve("catalog", BTreeMap::new(), env).unwrap();
    comb_catalog::open_store(&config).await.unwrap()
}
