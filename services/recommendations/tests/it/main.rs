//! The recommendations service as `comb serve` builds it, learning from an orders feed:
//! pairs counted from confirmed orders, each order once, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use comb_contracts::recommendations::v1 as proto;
use comb_contracts::recommendations::v1::recommendations_client::RecommendationsClient;
use comb_kit::events;
use comb_kit::storage::{Database, sql};
use comb_testkit::{TestDatabase, TestFeed, TestService, order_confirmed};
use tonic::transport::Channel;

/// A recommendations instance built as `comb serve recommendations` builds it.
struct Recommendations {
    client: RecommendationsClient<Channel>,
    _service: TestService,
}

impl Recommendations {
    async fn start(database: &TestDatabase, orders: &TestFeed) -> Self {
        let config = comb_testkit::config(
            "recommendations",
            &[
                ("COMB_DATABASE_URL", database.url.clone()),
                ("COMB_UPSTREAM_ORDERS", orders.url()),
            ],
        );
        let service = TestService::start(comb_recommendations::build(config).await.unwrap()).await;
        let channel = service.channel().await;
        Self {
            client: RecommendationsClient::new(channel),
            _service: service,
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
    let orders = TestFeed::start("orders").await;
    let mut recommendations = Recommendations::start(&database, &orders).await;
    assert!(recommendations.for_product("p-1").await.is_empty());

    orders
        .publish(&order_confirmed("o-1", "u-1", &["p-1", "p-2", "p-3"]))
        .await;
    orders
        .publish(&order_confirmed("o-2", "u-1", &["p-1", "p-2"]))
        .await;
    orders
        .publish(&order_confirmed("o-3", "u-1", &["p-1", "p-3", "p-3"]))
        .await;
    // An order of one product pairs with nothing.
    orders
        .publish(&order_confirmed("o-4", "u-1", &["p-9"]))
        .await;

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

comb_testkit::on_each_backend!(products_bought_together_are_counted_once_per_order);
