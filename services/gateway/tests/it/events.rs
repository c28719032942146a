//! What happens after a checkout, through events: messages in the mailbox, exactly once,
//! whoever was down when.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::checkout::{
    GOOD_CARD, add, admin, checkout, checkout_body, customer, final_order, products, set_stock,
};
use crate::{Options, System, nats_reachable};
use comb_kit::storage::sql;

async fn messages(system: &System, token: &str) -> Vec<Value> {
    let list: Value = system
        .get_as("/api/v1/messages", token)
        .await
        .json()
        .await
        .unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Polls the mailbox until `count` messages of `kind` are there.
async fn until_messages(
    system: &System,
    token: &str,
    kind: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let of_kind: Vec<Value> = messages(system, token)
            .await
            .into_iter()
            .filter(|m| m["kind"] == kind)
            .collect();
        if of_kind.len() >= count {
            return of_kind;
        }
        assert!(
            started.elapsed() < timeout,
            "{} of {count} {kind} messages after {timeout:?}",
            of_kind.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn buy(system: &System, token: &str, product_id: &str) -> Value {
    add(system, token, product_id, 1).await;
    final_order(
        system,
        token,
        checkout(system, token, checkout_body(GOOD_CARD, None), None).await,
    )
    .await
}

#[tokio::test]
async fn a_welcome_and_a_confirmation_arrive_after_checkout() {
    a_welcome_and_a_confirmation_arrive_after_checkout_with(Options::default()).await;
}

#[tokio::test]
async fn a_welcome_and_a_confirmation_arrive_after_checkout_on_postgres_over_nats() {
    if nats_reachable().await {
        a_welcome_and_a_confirmation_arrive_after_checkout_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn a_welcome_and_a_confirmation_arrive_after_checkout_with(options: Options) {
    let system = System::start_with(options).await;
    let token = customer(&system, "mail@example.com").await;
    let welcome = until_messages(&system, &token, "welcome", 1, Duration::from_secs(5)).await;
    assert_eq!(welcome[0]["subject"], "Welcome to comb");

    let items = products(&system, 1).await;
    let order = buy(&system, &token, &items[0].0).await;
    assert_eq!(order["status"], "CONFIRMED");
    let confirmed = until_messages(
        &system,
        &token,
        "order_confirmed",
        1,
        Duration::from_secs(5),
    )
    .await;
    let body = confirmed[0]["body"].as_str().unwrap();
    let title = order["items"][0]["title"].as_str().unwrap();
    assert!(body.contains(&format!("1 × {title}")), "{body}");
    assert!(body.contains("Total: $"), "{body}");
    assert!(
        body.contains(order["shipment"]["tracking_id"].as_str().unwrap()),
        "{body}"
    );
    let shipped = until_messages(
        &system,
        &token,
        "shipment_shipped",
        1,
        Duration::from_secs(5),
    )
    .await;
    let tracking = order["shipment"]["tracking_id"].as_str().unwrap();
    assert!(
        shipped[0]["body"].as_str().unwrap().contains(tracking),
        "{}",
        shipped[0]
    );

    let other = customer(&system, "nosy@example.com").await;
    let theirs = until_messages(&system, &other, "welcome", 1, Duration::from_secs(5)).await;
    assert_eq!(theirs.len(), 1, "a mailbox holds only its owner's messages");
    assert!(
        messages(&system, &other)
            .await
            .iter()
            .all(|m| m["kind"] == "welcome")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_down_while_100_orders_are_placed_sends_each_confirmation_once() {
    a_consumer_down_while_100_orders_are_placed_sends_each_confirmation_once_with(Options {
        // One customer places all 100, faster than a customer may by default.
        checkouts_per_account: Some(1_000),
        ..Options::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_down_while_100_orders_are_placed_sends_each_confirmation_once_on_postgres_over_nats()
 {
    if nats_reachable().await {
        a_consumer_down_while_100_orders_are_placed_sends_each_confirmation_once_with(Options {
            nats: true,
            postgres: true,
            checkouts_per_account: Some(1_000),
            ..Options::default()
        })
        .await;
    }
}

async fn a_consumer_down_while_100_orders_are_placed_sends_each_confirmation_once_with(
    options: Options,
) {
    let mut system = System::start_with(options).await;
    let token = customer(&system, "busy@example.com").await;
    let items = products(&system, 3).await;
    for (_, sku) in &items {
        set_stock(&system, sku, 1_000).await;
    }
    system.stop_consumers().await;
    for n in 0..100 {
        let order = buy(&system, &token, &items[n % 3].0).await;
        assert_eq!(order["status"], "CONFIRMED", "order {n}");
    }
    assert!(
        messages(&system, &token)
            .await
            .iter()
            .all(|m| m["kind"] != "order_confirmed"),
        "nothing is sent while notifications is down"
    );

    system.start_consumers().await;
    let confirmed = until_messages(
        &system,
        &token,
        "order_confirmed",
        100,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(confirmed.len(), 100);
    let admin = admin(&system).await;
    assert_eq!(
        orders_reported(&system, &admin, 100).await,
        100,
        "reports count every order once"
    );

    // Every event delivered again (a lost position): nothing is sent twice.
    system.stop_consumers().await;
    system.forget_positions().await;
    system.start_consumers().await;
    let notifications = system.connect("notifications").await;
    let started = Instant::now();
    loop {
        let position = comb_kit::events::position(&notifications, "orders")
            .await
            .unwrap();
        if position >= 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the feed was not read again"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let all = messages(&system, &token).await;
    assert_eq!(
        all.iter()
            .filter(|m| m["kind"] == "order_confirmed")
            .count(),
        100
    );
    assert_eq!(all.iter().filter(|m| m["kind"] == "welcome").count(), 1);
    let report: Value = system
        .get_as("/api/v1/admin/reports/sales", &admin)
        .await
        .json()
        .await
        .unwrap();
    let counted: i64 = report["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["orders"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 100, "a redelivery counts nothing twice: {report}");
}

#[tokio::test]
async fn an_event_committed_before_its_producer_died_is_delivered_after_the_restart() {
    an_event_committed_before_its_producer_died_is_delivered_after_the_restart_with(
        Options::default(),
    )
    .await;
}

#[tokio::test]
async fn an_event_committed_before_its_producer_died_is_delivered_after_the_restart_on_postgres_over_nats()
 {
    if nats_reachable().await {
        an_event_committed_before_its_producer_died_is_delivered_after_the_restart_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn an_event_committed_before_its_producer_died_is_delivered_after_the_restart_with(
    options: Options,
) {
    let mut system = System::start_with(options).await;
    let token = customer(&system, "survivor@example.com").await;
    until_messages(&system, &token, "welcome", 1, Duration::from_secs(5)).await;
    let items = products(&system, 1).await;
    system.stop_consumers().await;
    // With NATS, the event leaves through the relay: it must be down at the commit.
    system.stop_producers().await;
    let order = buy(&system, &token, &items[0].0).await;
    assert_eq!(order["status"], "CONFIRMED");

    // The producer goes away with the event committed but not yet read; the reader comes
    // back first and finds nobody to read from; then the producer returns.
    system.orders.stop().await;
    system.start_consumers().await;
    assert!(
        messages(&system, &token)
            .await
            .iter()
            .all(|m| m["kind"] != "order_confirmed")
    );
    system.orders.restart().await;
    let confirmed = until_messages(
        &system,
        &token,
        "order_confirmed",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        confirmed[0]["subject"]
            .as_str()
            .unwrap()
            .contains("is confirmed")
    );
}

#[tokio::test]
async fn products_bought_together_are_recommended() {
    products_bought_together_are_recommended_with(Options::default()).await;
}

#[tokio::test]
async fn products_bought_together_are_recommended_on_postgres_over_nats() {
    if nats_reachable().await {
        products_bought_together_are_recommended_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn products_bought_together_are_recommended_with(options: Options) {
    let system = System::start_with(options).await;
    let token = customer(&system, "together@example.com").await;
    let items = products(&system, 3).await;
    add(&system, &token, &items[0].0, 1).await;
    add(&system, &token, &items[1].0, 2).await;
    let placed = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(
        final_order(&system, &token, placed).await["status"],
        "CONFIRMED"
    );
    let started = Instant::now();
    loop {
        let found = system
            .json(&format!("/api/v1/products/{}/recommendations", items[0].0))
            .await;
        let ids: Vec<&str> = found["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        if !ids.is_empty() {
            assert_eq!(ids, [items[1].0.as_str()], "only what was bought with it");
            assert!(
                found["items"][0]["title"].is_string(),
                "full product summaries"
            );
            let page = system
                .json(&format!("/api/v1/products/{}", items[0].0))
                .await;
            assert_eq!(
                page["recommendations"][0]["id"],
                items[1].0.as_str(),
                "the product page includes them"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recommendation appeared"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let none = system
        .json(&format!("/api/v1/products/{}/recommendations", items[2].0))
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());
}

/// Polls the sales report until it counts `expected` orders (or the time runs out), and
/// returns what it counts.
async fn orders_reported(system: &System, admin: &str, expected: i64) -> i64 {
    let started = Instant::now();
    loop {
        let report: Value = system
            .get_as("/api/v1/admin/reports/sales", admin)
            .await
            .json()
            .await
            .unwrap();
        let counted: i64 = report["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["orders"].as_i64().unwrap())
            .sum();
        if counted >= expected || started.elapsed() > Duration::from_secs(30) {
            return counted;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn reports_count_sales_and_cancellations_and_rebuild_to_the_same_figures() {
    reports_count_sales_and_cancellations_and_rebuild_to_the_same_figures_with(Options::default())
        .await;
}

#[tokio::test]
async fn reports_count_sales_and_cancellations_and_rebuild_to_the_same_figures_on_postgres_over_nats()
 {
    if nats_reachable().await {
        reports_count_sales_and_cancellations_and_rebuild_to_the_same_figures_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn reports_count_sales_and_cancellations_and_rebuild_to_the_same_figures_with(
    options: Options,
) {
    let system = System::start_with(options).await;
    let admin = admin(&system).await;
    let token = customer(&system, "reported@example.com").await;
    let items = products(&system, 1).await;
    let confirmed = buy(&system, &token, &items[0].0).await;
    assert_eq!(confirmed["status"], "CONFIRMED");
    add(&system, &token, &items[0].0, 1).await;
    let declined = checkout(
        &system,
        &token,
        checkout_body(crate::checkout::DECLINED_CARD, None),
        None,
    )
    .await;
    assert_eq!(
        final_order(&system, &token, declined).await["status"],
        "CANCELLED"
    );
    assert_eq!(orders_reported(&system, &admin, 1).await, 1);

    let started = Instant::now();
    let report = loop {
        let report: Value = system
            .get_as("/api/v1/admin/reports/sales", &admin)
            .await
            .json()
            .await
            .unwrap();
        if report["cancellations"]["payment_declined"] == 1 {
            break report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cancellation is not counted: {report}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let today = &report["days"][0];
    assert_eq!(
        today["date"].as_str().unwrap(),
        &confirmed["created_at"].as_str().unwrap()[..10]
    );
    assert_eq!(
        today["revenue"]["amount_minor"],
        confirmed["total"]["amount_minor"]
    );
    assert_eq!(report["top_products"][0]["product_id"], items[0].0.as_str());
    assert_eq!(report["top_products"][0]["quantity"], 1);

    let csv = system
        .get_as("/api/v1/admin/reports/sales.csv", &admin)
        .await;
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("date,orders,revenue_minor,currency\n"),
        "{csv}"
    );
    let line = format!(
        "{},1,{},USD",
        today["date"].as_str().unwrap(),
        today["revenue"]["amount_minor"]
    );
    assert!(csv.contains(&line), "{csv}");

    // Rebuilt from scratch by replaying the archive: the same figures.
    let replayed = comb_reports::rebuild(&system.connect("reports").await)
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    let rebuilt: Value = system
        .get_as("/api/v1/admin/reports/sales", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rebuilt, report);

    let bad = system
        .get_as("/api/v1/admin/reports/sales?from=yesterday", &admin)
        .await;
    let body = crate::problem(bad, 422).await;
    assert_eq!(body["errors"][0]["field"], "from");
    let customer_view = system.get_as("/api/v1/admin/reports/sales", &token).await;
    crate::problem(customer_view, 403).await;
}

#[tokio::test]
async fn a_new_product_gets_a_stock_line_from_its_event() {
    let system = System::start().await;
    let admin = admin(&system).await;
    let created = system
        .http
        .post(system.url("/api/v1/admin/products"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"sku": "BK-8888", "kind": "book", "title": "Fresh Off the Press",
            "creators": ["N. Author"], "category": "non-fiction", "price": {"amount_minor": 1500, "currency": "USD"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let inventory = comb_kit::storage::Database::connect(&system.database("inventory").url)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let line: Option<i64> =
            sql::query_scalar("SELECT available FROM stock WHERE sku = 'BK-8888'")
                .fetch_optional(&inventory)
                .await
                .unwrap();
        if let Some(available) = line {
            assert_eq!(available, 0, "nothing to sell until an admin says so");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ProductCreated never reached inventory"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_product_page_without_recommendations_still_answers() {
    let mut system = System::start().await;
    let items = products(&system, 1).await;
    system.recommendations.stop().await;
    let started = Instant::now();
    let page = system
        .json(&format!("/api/v1/products/{}", items[0].0))
        .await;
    assert!(
        page["recommendations"].is_null(),
        "marked unavailable: {page}"
    );
    assert_eq!(page["id"], items[0].0.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "and quickly: {:?}",
        started.elapsed()
    );
}
