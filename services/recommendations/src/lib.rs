//! The recommendations service: "customers who bought this also bought", learned only
//! from OrderConfirmed events (it reads the orders feed; it calls nobody). Each confirmed
//! order counts once for every pair of different products in it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use comb_contracts::events::{self as contract, OrderConfirmed};
use comb_contracts::recommendations::v1 as proto;
use comb_contracts::recommendations::v1::recommendations_server::{
    Recommendations, RecommendationsServer,
};
use comb_kit::ServiceConfig;
use comb_kit::cache::VersionedCache;
use comb_kit::events::{Event, Handler, HandlerError, Transport};
use comb_kit::grpc::check_key;
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::sql;
use comb_kit::storage::{Database, Migration, Migrations};
use tonic::{Request, Response, Status};

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "co-purchases",
        sql: include_str!("../migrations/sqlite/0001_co_purchases.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "co-purchases",
        sql: include_str!("../migrations/postgres/0001_co_purchases.sql"),
    }],
};

const DEFAULT_LIMIT: u32 = 5;
const MAX_LIMIT: u32 = 50;

/// A recommendations instance, for `comb_kit::service::run`: its database, and the reader of the
/// orders feed (counting products bought together).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let transport = Transport::from_config(&config).await?;
    let orders = transport
        .consumer(&config, &db, "orders", Arc::new(CoPurchases))
        .await?;
    Ok(Service::new(routes(db)).task("orders consumer", orders.run()))
}

/// Counts products bought together.
struct CoPurchases;

#[tonic::async_trait]
impl Handler for CoPurchases {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::ORDER_CONFIRMED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let order: OrderConfirmed = event.data()?;
        let products: BTreeSet<&str> = order
            .lines
            .iter()
            .map(|line| line.product_id.as_str())
            .collect();
        for product in &products {
            for other in products.iter().filter(|other| *other != product) {
                sql::query(
                    "INSERT INTO co_purchases (product_id, other_id, together) VALUES ($1, $2, 1)
                     ON CONFLICT (product_id, other_id) DO UPDATE SET together = co_purchases.together + 1",
                )
                .bind(*product)
                .bind(*other)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct RecommendationsApi {
    db: Database,
    /// Answers while the data version stands (it moves with every order counted).
    answers: Arc<VersionedCache<(String, u32), Arc<proto::ForProductResponse>>>,
}

/// Answers kept in memory at once.
const CACHED_ANSWERS: usize = 4096;

#[tonic::async_trait]
impl Recommendations for RecommendationsApi {
    async fn for_product(
        &self,
        request: Request<proto::ForProductRequest>,
    ) -> Result<Response<proto::ForProductResponse>, Status> {
        let request = request.into_inner();
        check_key("product_id", &request.product_id)?;
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        };
        let version = self.db.data_version();
        let key = (request.product_id, limit);
        if let Some(answer) = self.answers.get(version, &key) {
            return Ok(comb_kit::versions::label((*answer).clone(), version));
        }
        let rows = sql::query(
            "SELECT other_id, together FROM co_purchases WHERE product_id = $1 ORDER BY together DESC, other_id LIMIT CAST($2 AS BIGINT)",
        )
        .bind(key.0.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await
        .map_err(|error| {
            tracing::error!(%error, "reading recommendations failed");
            Status::internal("recommendations cannot be read")
        })?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(proto::Recommendation {
                    product_id: row.try_get("other_id")?,
                    together: row.try_get("together")?,
                })
            })
            .collect::<Result<_, sql::DbError>>()
            .map_err(|error| {
                tracing::error!(%error, "a recommendation row cannot be read");
                Status::internal("recommendations cannot be read")
            })?;
        let answer = proto::ForProductResponse { items };
        self.answers.keep(version, key, Arc::new(answer.clone()));
        Ok(comb_kit::versions::label(answer, version))
    }
}

/// The recommendations API and the watch of its data version.
pub fn routes(db: Database) -> Router {
    let api = server::add_grpc(
        Router::new(),
        RecommendationsServer::new(RecommendationsApi {
            db: db.clone(),
            answers: Arc::new(VersionedCache::new(CACHED_ANSWERS)),
        }),
    );
    comb_kit::versions::version_routes(api, &db)
}
