//! The sales report answers on every backend: sums over BIGINT columns are NUMERIC on
//! PostgreSQL, which the report must bring back to integers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use comb_contracts::reports::v1::SalesRequest;
use comb_contracts::reports::v1::reports_client::ReportsClient;
use comb_kit::grpc::Upstream;
use comb_kit::storage::Database;
use comb_kit::storage::sql;
use comb_testkit::{TestDatabase, TestServer};

async fn report_sums_sales(database: &TestDatabase) {
    let db = Database::open(&database.url, &comb_reports::MIGRATIONS)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO day_sales (day, orders, revenue_minor) VALUES ('2026-11-01', 2, 3000), ('2026-11-02', 1, 1000)",
        "INSERT INTO product_sales (day, product_id, title, quantity, revenue_minor) VALUES
            ('2026-11-01', 'p1', 'One', 2, 2000), ('2026-11-02', 'p1', 'One', 1, 1000),
            ('2026-11-01', 'p2', 'Two', 1, 1000)",
        "INSERT INTO cancellations (day, reason, orders) VALUES
            ('2026-11-01', 'out_of_stock', 1), ('2026-11-02', 'out_of_stock', 2)",
    ] {
        sql::query(statement).execute(&db).await.unwrap();
    }
    let server = TestServer::start(comb_reports::routes(db)).await;
    let upstream = Upstream::new("reports", &[server.url()], Duration::from_secs(5)).unwrap();
    let report = ReportsClient::new(upstream.channel())
        .sales(SalesRequest {
            from: String::new(),
            to: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.days.len(), 2);
    let top: Vec<(&str, i64, i64)> = report
        .top_products
        .iter()
        .map(|p| (p.product_id.as_str(), p.quantity, p.revenue_minor))
        .collect();
    assert_eq!(top, [("p1", 3, 3000), ("p2", 1, 1000)]);
    let cancellations: Vec<(&str, i64)> = report
        .cancellations
        .iter()
        .map(|c| (c.reason.as_str(), c.count))
        .collect();
    assert_eq!(cancellations, [("out_of_stock", 3)]);
}

#[tokio::test]
async fn the_sales_report_sums_on_sqlite() {
    report_sums_sales(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn the_sales_report_sums_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    report_sums_sales(&database).await;
}
