//! The recommendations service as `comb serve` builds it, learning from an orders feed:
//! pairs counted from confirmed orders, each order once, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use comb_contracts::events::{self as contract, OrderConfirmed, OrderLine};
use comb_contracts::recommendations::v1 as proto;
use comb_contracts::recommendations::v1::recommendations_client::RecommendationsClient;
use comb_kit::ServiceConfig;
use comb_kit::events::{self, Event};
use comb_kit::service::Tasks;
use comb_kit::storage::{Database, Migrations, sql};
use comb_testkit::{TestDatabase, TestServer};
use tonic::transport::Channel;

/// An orders service reduced to its feed: an outbox and the route that serves it.
struct OrdersFeed {
    db: Database,
    server: TestServer,
    _database: TestDatabase,
}

impl OrdersFeed {
    async fn start() -> Self {
        let database = TestDatabase::sqlite();
        let no_tables = Migrations {
            sqlite: &[],
            postgres: &[],
        };
        let db = Database::open(&database.url, &no_tables).await.unwrap();
        let server =
            TestServer::start(events::feed_routes(axum::Router::new(), &db, "orders")).await;
        Self {
            db,
            server,
            _database: database,
        }
    }

    /// Publishes `event` as orders does: in a transaction of its own.
    async fn publish(&self, event: &Event) {
        let mut tx = self.db.begin().await.unwrap();
        events::publish(&self.db, &mut tx, event).await.unwrap();
        events::commit(&self.db, tx).await.unwrap();
    }
}

fn confirmed(order_id: &str, products: &[&str]) -> Event {
    let order = OrderConfirmed {
        order_id: order_id.into(),
        owner: "u-1".into(),
        email: "shopper@example.com".into(),
        lines: products
            .iter()
            .map(|product| OrderLine {
                product_id: (*product).into(),
                sku: format!("SKU-{product}"),
                title: (*product).into(),
                quantity: 1,
                unit_price_minor: 100,
                line_total_minor: 100,
            })
            .collect(),
        subtotal_minor: 100,
        shipping_minor: 0,
        total_minor: 100,
        currency: "USD".into(),
        tracking_id: "TRK".into(),
        placed_at: "2026-01-01T00:00:00Z".into(),
    };
    Event::new("orders", contract::ORDER_CONFIRMED, order_id, &order).unwrap()
}

/// A recommendations instance built as `comb serve recommendations` builds it.
struct Recommendations {
    client: RecommendationsClient<Channel>,
    _server: TestServer,
    _tasks: Tasks,
}

impl Recommendations {
    async fn start(database: &TestDatabase, orders: &OrdersFeed) -> Self {
        let env = [
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_UPSTREAM_ORDERS", orders.server.url()),
        ];
        let config = ServiceConfig::resolve("recommendations", BTreeMap::new(), env).unwrap();
        let (routes, tasks) = comb_recommendations::build(config).await.unwrap().start();
        let server = TestServer::start(routes).await;
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            client: RecommendationsClient::new(channel),
            _server: server,
            _tasks: tasks,
        }
    }

    async fn for_product(&mut self, product_id: &str) -> Vec<(String, i64)> {
        self.client
            .for_product(proto::ForProductRequest {
                product_id: product_id.into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .map(|item| (item.product_id, item.together))
            .collect()
    }

    /// What it answers for `product_id` once it equals `wanted` (the feed is read in the
    /// background), or the last answer after ten seconds.
    async fn for_product_once(
        &mut self,
        product_id: &str,
        wanted: &[(&str, i64)],
    ) -> Vec<(String, i64)> {
        let wanted: Vec<(String, i64)> = wanted
            .iter()
            .map(|(id, n)| ((*id).to_owned(), *n))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.for_product(product_id).await;
            if answer == wanted || tokio::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn products_bought_together_are_counted_once_per_order(database: TestDatabase) {
    let orders = OrdersFeed::start().await;
    let mut recommendations = Recommendations::start(&database, &orders).await;
    assert!(recommendations.for_product("p-1").await.is_empty());

    orders
        .publish(&confirmed("o-1", &["p-1", "p-2", "p-3"]))
        .await;
    orders.publish(&confirmed("o-2", &["p-1", "p-2"])).await;
    orders
        .publish(&confirmed("o-3", &["p-1", "p-3", "p-3"]))
        .await;
    // An order of one product pairs with nothing.
    orders.publish(&confirmed("o-4", &["p-9"])).await;

    let seen = recommendations
        .for_product_once("p-1", &[("p-2", 2), ("p-3", 2)])
        .await;
    assert_eq!(
        seen,
        [("p-2".to_owned(), 2), ("p-3".to_owned(), 2)],
        "most bought together first"
    );
    assert_eq!(
        recommendations.for_product("p-3").await,
        [("p-1".to_owned(), 2), ("p-2".to_owned(), 1)]
    );
    assert!(recommendations.for_product("p-9").await.is_empty());

    // An instance that reads the whole feed again (its position lost) counts nothing twice.
    drop(recommendations);
    let db = Database::open(&database.url, &comb_recommendations::MIGRATIONS)
        .await
        .unwrap();
    sql::query("DELETE FROM feed_positions")
        .execute(&db)
        .await
        .unwrap();
    let mut recommendations = Recommendations::start(&database, &orders).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events::position(&db, "orders").await.unwrap() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed read again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        recommendations.for_product("p-1").await,
        [("p-2".to_owned(), 2), ("p-3".to_owned(), 2)]
    );

    let refused = recommendations
        .client
        .for_product(proto::ForProductRequest {
            product_id: String::new(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn on_sqlite() {
    products_bought_together_are_counted_once_per_order(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    products_bought_together_are_counted_once_per_order(database).await;
}
