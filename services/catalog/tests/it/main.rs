//! The catalog on SQLite and PostgreSQL: the store's behaviours (seeding, paging, filters,
//! search, creating and updating products, the events each change announces) in
//! `store.rs`, and the gRPC API of the service as `comb serve` builds it (listing, refusals,
//! admin writes, answers a caller already holds, one instance's write reaching another's
//! cache) in `grpc.rs`. What both use is here.

#![allow(clippy::unwrap_used)]

mod grpc;
mod store;

use comb_catalog::store::{CatalogStore, Seed};
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_testkit::{TestDatabase, TestService};
use tonic::transport::Channel;

fn config(database: &TestDatabase) -> comb_kit::ServiceConfig {
    comb_testkit::config("catalog", &[("COMB_DATABASE_URL", database.url.clone())])
}

/// The store over `database` as the service opens it: migrated, and seeded with the
/// bundled catalog when empty.
async fn seeded_store(database: &TestDatabase) -> CatalogStore {
    comb_catalog::open_store(&config(database)).await.unwrap()
}

/// How many products the bundled seed holds.
fn seed_size() -> usize {
    Seed::bundled().unwrap().products.len()
}

/// An instance of the catalog service over `database` (seeded when empty), and a client.
/// Starting a second one on the same database is a second instance of the same service.
struct Catalog {
    client: CatalogClient<Channel>,
    _service: TestService,
}

async fn start(database: &TestDatabase) -> Catalog {
    let service = TestService::start(comb_catalog::build(config(database)).await.unwrap()).await;
    Catalog {
        client: CatalogClient::new(service.channel().await),
        _service: service,
    }
}
