//! The orders service: checkout of a cart through the order saga (see [`saga`]), and
//! order history. It owns orders and saga state; stock, money, shipments and carts belong
//! to the services it orchestrates over gRPC.

pub mod api;
pub mod saga;
pub mod store;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use axum::Router;
use comb_contracts::orders::v1::orders_server::OrdersServer;
use comb_kit::ServiceConfig;
use comb_kit::events::Transport;
use comb_kit::grpc::Upstream;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};
use comb_kit::{events, server};

use crate::api::OrdersApi;
use comb_kit::clock::now_ms;

use crate::saga::{Saga, Timing, Upstreams};
use crate::store::OrderStore;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "orders",
            sql: include_str!("../migrations/sqlite/0001_orders.sql"),
        },
        Migration {
            version: 2,
            description: "traceparent",
            sql: include_str!("../migrations/sqlite/0002_traceparent.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "orders",
            sql: include_str!("../migrations/postgres/0001_orders.sql"),
        },
        Migration {
            version: 2,
            description: "traceparent",
            sql: include_str!("../migrations/postgres/0002_traceparent.sql"),
        },
    ],
};

/// How often an instance looks for abandoned sagas.
const RESUME_EVERY: Duration = Duration::from_secs(1);

/// An orders instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    // A saga untouched this long is taken as abandoned (its instance died) and resumed.
    let abandoned_after = config.millis("saga_abandoned_after_ms", Duration::from_secs(15))?;
    let (api, saga, store) = open(&config).await?;
    let transport = Transport::from_config(&config).await?;
    Ok(Service::new(routes(api, &store))
        .producing(&transport, store.database(), "orders")
        .task(
            "saga resumption",
            resume_sagas(store, saga, abandoned_after),
        ))
}

/// Opens the database and the channels to the services the saga calls.
pub async fn open(config: &ServiceConfig) -> anyhow::Result<(OrdersApi, Arc<Saga>, OrderStore)> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let store = OrderStore::new(db);
    let upstream = |name: &str| -> anyhow::Result<Arc<Upstream>> {
        Ok(Arc::new(Upstream::from_config(config, name)?))
    };
    let upstreams = Upstreams {
        cart: upstream("cart")?,
        inventory: upstream("inventory")?,
        payments: upstream("payments")?,
        shipping: upstream("shipping")?,
    };
    let timing = Timing {
        deadline: config.millis("saga_deadline_ms", Duration::from_secs(30))?,
        reservation_margin: config.millis("reservation_margin_ms", Duration::from_secs(300))?,
    };
    let saga = Saga::new(store.clone(), upstreams.clone(), timing);
    let inline_wait = config.millis("checkout_wait_ms", Duration::from_secs(2))?;
    let api = OrdersApi::new(store.clone(), Arc::clone(&saga), upstreams, inline_wait);
    Ok((api, saga, store))
}

/// For as long as the instance runs, resumes every unfinished saga whose driver has been
/// quiet for `abandoned_after` (its instance died, or this one restarted). A saga being
/// driven writes a heartbeat at every retry, so a live instance's sagas are left alone.
pub async fn resume_sagas(store: OrderStore, saga: Arc<Saga>, abandoned_after: Duration) {
    loop {
        let idle_since = now_ms() - i64::try_from(abandoned_after.as_millis()).unwrap_or(0);
        match store.unfinished(idle_since).await {
            Ok(unfinished) => {
                for (id, traceparent) in unfinished
                    .into_iter()
                    .filter(|(id, _)| !saga.is_driving(id))
                {
                    tracing::info!(order = %id, "resuming an unfinished saga");
                    // The saga goes on in the trace of the checkout that placed the order.
                    let span = tracing::info_span!("saga", otel.name = "resumed saga", order = %id);
                    comb_kit::trace::follow(&span, &traceparent);
                    tokio::spawn(Arc::clone(&saga).drive(id).instrument(span));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot look for unfinished sagas; will retry"),
        }
        tokio::time::sleep(RESUME_EVERY).await;
    }
}

/// The orders API and the feed of the events orders publishes.
pub fn routes(api: OrdersApi, store: &OrderStore) -> Router {
    events::feed_routes(
        server::add_grpc(Router::new(), OrdersServer::new(api)),
        store.database(),
        "orders",
    )
}
