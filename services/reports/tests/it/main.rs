//! The reports service as `comb serve` builds it, following an orders feed: the sales
//! report's days, top products and cancellations summed over its figures (sums over BIGINT
//! columns are NUMERIC on PostgreSQL, which the report must bring back to integers), and a
//! confirmed order on the feed counted in its day. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use comb_contracts::reports::v1 as proto;
use comb_contracts::reports::v1::reports_client::ReportsClient;
use comb_kit::storage::{Database, sql};
use comb_testkit::{TestDatabase, TestFeed, TestService, order_confirmed};
use tonic::transport::Channel;

struct Reports {
    client: ReportsClient<Channel>,
    orders: TestFeed,
    _service: TestService,
}

async fn start(database: &TestDatabase) -> Reports {
    let orders = TestFeed::start("orders").await;
    let config = comb_testkit::config(
        "reports",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_UPSTREAM_ORDERS", orders.url()),
        ],
    );
    let service = TestService::start(comb_reports::build(config).await.unwrap()).await;
    Reports {
        client: ReportsClient::new(service.channel().await),
        orders,
        _service: service,
    }
}

/// Figures over two days, as the events would have left them, written straight into the
/// service's database.
async fn two_days_of_figures(database: &TestDatabase) {
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
}

impl Reports {
    /// The report over every day.
    async fn sales(&mut self) -> proto::SalesReport {
        self.client
            .sales(proto::SalesRequest {
                from: String::new(),
                to: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

async fn the_report_has_one_line_per_day(database: TestDatabase) {
    let mut reports = start(&database).await;
    two_days_of_figures(&database).await;

    let report = reports.sales().await;

    assert_eq!(report.days.len(), 2, "{:?}", report.days);
}

async fn top_products_sum_their_days_best_first(database: TestDatabase) {
    let mut reports = start(&database).await;
    two_days_of_figures(&database).await;

    let report = reports.sales().await;

    let top: Vec<(&str, i64, i64)> = report
        .top_products
        .iter()
        .map(|p| (p.product_id.as_str(), p.quantity, p.revenue_minor))
        .collect();
    assert_eq!(top, [("p1", 3, 3000), ("p2", 1, 1000)]);
}

async fn cancellations_sum_their_days_per_reason(database: TestDatabase) {
    let mut reports = start(&database).await;
    two_days_of_figures(&database).await;

    let report = reports.sales().await;

    let cancellations: Vec<(&str, i64)> = report
        .cancellations
        .iter()
        .map(|c| (c.reason.as_str(), c.count))
        .collect();
    assert_eq!(cancellations, [("out_of_stock", 3)]);
}

async fn a_confirmed_order_on_the_feed_counts_in_its_day(database: TestDatabase) {
    let mut reports = start(&database).await;

    reports
        .orders
        .publish(&order_confirmed("o-1", "u-1", &["p-1", "p-2"]))
        .await;

    // The feed is read in the background: wait for the figures, at most ten seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = reports.sales().await;
        if !report.days.is_empty() || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let days: Vec<(&str, i64, i64)> = report
        .days
        .iter()
        .map(|day| (day.date.as_str(), day.orders, day.revenue_minor))
        .collect();
    assert_eq!(days, [("2026-01-01", 1, 2000)]);
}

comb_testkit::on_each_backend!(
    the_report_has_one_line_per_day,
    top_products_sum_their_days_best_first,
    cancellations_sum_their_days_per_reason,
    a_confirmed_order_on_the_feed_counts_in_its_day,
);
