//! Checkout end to end through the gateway: the saga's paths (confirmed, declined,
//! out of stock, payments down, deadlines), idempotency, and shoppers racing for stock.
//! Long because each of its tests is one path of the saga, sharing this file's helpers.

use std::time::{Duration, Instant};

use comb_contracts::inventory::v1 as inventory;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_contracts::payments::v1 as payments;
use comb_contracts::payments::v1::payments_client::PaymentsClient;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, System, problem};

pub(crate) const GOOD_CARD: &str = "4242424242424242";
pub(crate) const DECLINED_CARD: &str = "4000000000000002";

async fn token(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

pub(crate) async fn customer(system: &System, email: &str) -> String {
    let registered = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": "a long enough secret", "name": "Customer"}),
        )
        .await;
    assert_eq!(registered.status(), 201);
    token(registered).await
}

pub(crate) async fn admin(system: &System) -> String {
    token(
        system
            .post_json(
                "/api/v1/auth/login",
                json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            )
            .await,
    )
    .await
}

pub(crate) async fn guest(system: &System) -> String {
    token(system.post_json("/api/v1/auth/guest", json!({})).await).await
}

/// The first `n` products of the seeded catalog: (id, sku).
pub(crate) async fn products(system: &System, n: usize) -> Vec<(String, String)> {
    let page = system.json("/api/v1/products?kind=book&limit=20").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["sku"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub(crate) async fn add(system: &System, token: &str, product_id: &str, quantity: i64) {
    let added = system
        .send_as(
            Method::POST,
            "/api/v1/cart/items",
            token,
            Some(json!({"product_id": product_id, "quantity": quantity})),
        )
        .await;
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
}

pub(crate) fn checkout_body(card: &str, email: Option<&str>) -> Value {
    let mut body = json!({
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Engine Way", "city": "London",
                             "postal_code": "N1 9GU", "country": "GB"},
        "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"}
    });
    if let Some(email) = email {
        body["email"] = json!(email);
    }
    body
}

pub(crate) async fn checkout(
    system: &System,
    token: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = system
        .http
        .post(system.url("/api/v1/orders"))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Polls an order until `done` holds for it.
pub(crate) async fn order_until(
    system: &System,
    token: &str,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let order: Value = system
            .get_as(&format!("/api/v1/orders/{id}"), token)
            .await
            .json()
            .await
            .unwrap();
        if done(&order) {
            return order;
        }
        assert!(
            started.elapsed() < timeout,
            "order {id} never got there: {order}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The order a checkout answered with, followed until it is no longer PENDING: under load
/// the saga may outlast the checkout's wait (202) instead of finishing inside it (201).
pub(crate) async fn final_order(system: &System, token: &str, placed: reqwest::Response) -> Value {
    let status = placed.status().as_u16();
    assert!(status == 201 || status == 202, "checkout answered {status}");
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    order_until(system, token, &id, Duration::from_secs(30), |o| {
        o["status"] != "PENDING"
    })
    .await
}

/// Waits until a SKU's stock is `expected` (compensations run after an order is cancelled).
async fn stock_becomes(system: &System, sku: &str, expected: i64) {
    let started = Instant::now();
    while stock(system, sku).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "stock of {sku} never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn inventory_client(system: &System) -> InventoryClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(system.inventory.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    InventoryClient::new(channel)
}

pub(crate) async fn stock(system: &System, sku: &str) -> i64 {
    inventory_client(system)
        .await
        .get_stock(inventory::GetStockRequest {
            skus: vec![sku.to_owned()],
        })
        .await
        .unwrap()
        .into_inner()
        .items[0]
        .available
}

pub(crate) async fn set_stock(system: &System, sku: &str, available: i64) {
    inventory_client(system)
        .await
        .set_stock(inventory::SetStockRequest {
            sku: sku.to_owned(),
            available,
        })
        .await
        .unwrap();
}

/// The payment of an order as payments knows it, if any.
pub(crate) async fn payment(system: &System, order_id: &str) -> Option<payments::PaymentStatus> {
    let channel = tonic::transport::Endpoint::from_shared(system.payments.url())
        .unwrap()
        .connect()
        .await
        .ok()?;
    PaymentsClient::new(channel)
        .get_payment(payments::PaymentRef {
            payment_id: order_id.to_owned(),
        })
        .await
        .ok()
        .map(|reply| payments::PaymentStatus::try_from(reply.into_inner().status).unwrap())
}

#[tokio::test]
async fn a_customer_checks_out_and_everything_follows() {
    a_customer_checks_out_and_everything_follows_with(Options::default()).await;
}

#[tokio::test]
async fn a_customer_checks_out_and_everything_follows_on_postgres_over_nats() {
    if crate::nats_reachable().await {
        a_customer_checks_out_and_everything_follows_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn a_customer_checks_out_and_everything_follows_with(options: Options) {
    let system = System::start_with(options).await;
    let token = customer(&system, "happy@example.com").await;
    let relogged = system
        .post_json(
            "/api/v1/auth/login",
            json!({"email": "happy@example.com", "password": "a long enough secret"}),
        )
        .await;
    let token = if relogged.status() == 200 {
        self::token(relogged).await
    } else {
        token
    };
    let items = products(&system, 2).await;
    let before = (
        stock(&system, &items[0].1).await,
        stock(&system, &items[1].1).await,
    );
    add(&system, &token, &items[0].0, 2).await;
    add(&system, &token, &items[1].0, 1).await;

    let placed = checkout(
        &system,
        &token,
        checkout_body(GOOD_CARD, None),
        Some("first-try"),
    )
    .await;
    assert!(
        placed.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/v1/orders/")
    );
    let order = final_order(&system, &token, placed).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(
        order["email"], "happy@example.com",
        "the account's email by default"
    );
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    let subtotal = order["subtotal"]["amount_minor"].as_i64().unwrap();
    let shipping = order["shipping"]["amount_minor"].as_i64().unwrap();
    assert_eq!(
        order["total"]["amount_minor"].as_i64().unwrap(),
        subtotal + shipping
    );
    assert_eq!(order["payment"]["last4"], "4242");
    assert_eq!(order["payment"]["status"], "captured");
    assert!(
        order["shipment"]["tracking_id"]
            .as_str()
            .unwrap()
            .starts_with("CMB")
    );
    assert!(order.get("cancel_reason").is_none());
    let id = order["id"].as_str().unwrap();

    assert_eq!(
        (
            stock(&system, &items[0].1).await,
            stock(&system, &items[1].1).await
        ),
        (before.0 - 2, before.1 - 1),
        "stock is taken"
    );
    assert_eq!(
        payment(&system, id).await,
        Some(payments::PaymentStatus::Captured)
    );
    let cart: Value = system
        .get_as("/api/v1/cart", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        cart["items"].as_array().unwrap().is_empty(),
        "the cart is emptied"
    );
    let mine: Value = system
        .get_as("/api/v1/orders", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"][0]["id"], id);
    let one: Value = system
        .get_as(&format!("/api/v1/orders/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["status"], "CONFIRMED");
}

#[tokio::test]
async fn a_guest_checks_out_with_an_email() {
    let system = System::start().await;
    let token = guest(&system).await;
    let items = products(&system, 1).await;
    add(&system, &token, &items[0].0, 1).await;
    let refused = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    let body = problem(refused, 422).await;
    assert_eq!(body["errors"][0]["field"], "email");
    let placed = checkout(
        &system,
        &token,
        checkout_body(GOOD_CARD, Some("guest@example.com")),
        None,
    )
    .await;
    let order = final_order(&system, &token, placed).await;
    assert_eq!(
        (order["status"].as_str(), order["email"].as_str()),
        (Some("CONFIRMED"), Some("guest@example.com"))
    );
}

#[tokio::test]
async fn a_declined_card_cancels_and_gives_the_stock_back() {
    a_declined_card_cancels_and_gives_the_stock_back_with(Options::default()).await;
}

#[tokio::test]
async fn a_declined_card_cancels_and_gives_the_stock_back_on_postgres_over_nats() {
    if crate::nats_reachable().await {
        a_declined_card_cancels_and_gives_the_stock_back_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn a_declined_card_cancels_and_gives_the_stock_back_with(options: Options) {
    let system = System::start_with(options).await;
    let token = customer(&system, "declined@example.com").await;
    let items = products(&system, 1).await;
    let before = stock(&system, &items[0].1).await;
    add(&system, &token, &items[0].0, 2).await;
    let placed = checkout(&system, &token, checkout_body(DECLINED_CARD, None), None).await;
    let order = final_order(&system, &token, placed).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "payment_declined");
    assert_eq!(order["payment"]["status"], "declined");
    stock_becomes(&system, &items[0].1, before).await;
    let cart: Value = system
        .get_as("/api/v1/cart", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        cart["items"].as_array().unwrap().len(),
        1,
        "the cart is kept for a retry"
    );
    let retried = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(
        final_order(&system, &token, retried).await["status"],
        "CONFIRMED"
    );
}

#[tokio::test]
async fn out_of_stock_cancels_before_any_payment() {
    out_of_stock_cancels_before_any_payment_with(Options::default()).await;
}

#[tokio::test]
async fn out_of_stock_cancels_before_any_payment_on_postgres_over_nats() {
    if crate::nats_reachable().await {
        out_of_stock_cancels_before_any_payment_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn out_of_stock_cancels_before_any_payment_with(options: Options) {
    let system = System::start_with(options).await;
    let token = customer(&system, "short@example.com").await;
    let items = products(&system, 1).await;
    set_stock(&system, &items[0].1, 1).await;
    add(&system, &token, &items[0].0, 2).await;
    let placed = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    let order = final_order(&system, &token, placed).await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert_eq!(
        payment(&system, &id).await,
        None,
        "no payment was attempted"
    );
    stock_becomes(&system, &items[0].1, 1).await;
}

#[tokio::test]
async fn the_same_idempotency_key_is_the_same_order() {
    let system = System::start().await;
    let token = customer(&system, "twice@example.com").await;
    let items = products(&system, 1).await;
    let before = stock(&system, &items[0].1).await;
    add(&system, &token, &items[0].0, 1).await;
    // Sent twice at once: the second must not become a second order.
    let (first, second) = tokio::join!(
        checkout(
            &system,
            &token,
            checkout_body(GOOD_CARD, None),
            Some("key-1")
        ),
        checkout(
            &system,
            &token,
            checkout_body(GOOD_CARD, None),
            Some("key-1")
        ),
    );
    let first = final_order(&system, &token, first).await;
    let second = final_order(&system, &token, second).await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["status"], "CONFIRMED");
    let mine: Value = system
        .get_as("/api/v1/orders", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "one order");
    assert_eq!(
        stock(&system, &items[0].1).await,
        before - 1,
        "stock taken once"
    );
    assert_eq!(
        payment(&system, first["id"].as_str().unwrap()).await,
        Some(payments::PaymentStatus::Captured)
    );
    let bad_key = checkout(
        &system,
        &token,
        checkout_body(GOOD_CARD, None),
        Some(&"k".repeat(200)),
    )
    .await;
    problem(bad_key, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_shoppers_racing_for_ten_never_oversell() {
    fifty_shoppers_racing_for_ten_never_oversell_with(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_shoppers_racing_for_ten_never_oversell_on_postgres_over_nats() {
    if crate::nats_reachable().await {
        fifty_shoppers_racing_for_ten_never_oversell_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn fifty_shoppers_racing_for_ten_never_oversell_with(options: Options) {
    let system = std::sync::Arc::new(System::start_with(options).await);
    let items = products(&system, 1).await;
    let (product_id, sku) = items[0].clone();
    set_stock(&system, &sku, 10).await;
    let mut shoppers = Vec::new();
    for n in 0..50 {
        let token = guest(&system).await;
        add(&system, &token, &product_id, 1).await;
        shoppers.push((n, token));
    }
    let mut racing = tokio::task::JoinSet::new();
    for (n, token) in shoppers {
        let system = std::sync::Arc::clone(&system);
        racing.spawn(async move {
            let body = checkout_body(GOOD_CARD, Some(&format!("racer{n}@example.com")));
            final_order(&system, &token, checkout(&system, &token, body, None).await).await
        });
    }
    let mut confirmed = 0;
    let mut cancelled = Vec::new();
    while let Some(order) = racing.join_next().await {
        let order = order.unwrap();
        match order["status"].as_str() {
            Some("CONFIRMED") => confirmed += 1,
            _ => {
                assert_eq!(order["cancel_reason"], "out_of_stock", "{order}");
                cancelled.push(order["id"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!((confirmed, cancelled.len()), (10, 40));
    assert_eq!(stock(&system, &sku).await, 0, "all sold, never below zero");
    for id in cancelled {
        assert_ne!(
            payment(&system, &id).await,
            Some(payments::PaymentStatus::Authorized),
            "{id}"
        );
    }
}

#[tokio::test]
async fn with_payments_down_an_order_waits_and_then_completes() {
    let mut system = System::start().await;
    let token = customer(&system, "patient@example.com").await;
    let items = products(&system, 1).await;
    add(&system, &token, &items[0].0, 1).await;
    system.payments.stop().await;
    let placed = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(placed.status(), 202);
    let order: Value = placed.json().await.unwrap();
    assert_eq!(order["status"], "PENDING");
    let id = order["id"].as_str().unwrap().to_owned();
    system.payments.restart().await;
    let order = order_until(&system, &token, &id, Duration::from_secs(15), |o| {
        o["status"] != "PENDING"
    })
    .await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
}

#[tokio::test]
async fn with_payments_down_past_the_deadline_an_order_is_cancelled_and_released() {
    let mut system = System::start_with(Options {
        saga_deadline_ms: 2_500,
        checkout_wait_ms: 300,
        ..Options::default()
    })
    .await;
    let token = customer(&system, "late@example.com").await;
    let items = products(&system, 1).await;
    let before = stock(&system, &items[0].1).await;
    add(&system, &token, &items[0].0, 3).await;
    system.payments.stop().await;
    let placed = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(placed.status(), 202);
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = order_until(&system, &token, &id, Duration::from_secs(15), |o| {
        o["status"] != "PENDING"
    })
    .await;
    assert_eq!(
        (order["status"].as_str(), order["cancel_reason"].as_str()),
        (Some("CANCELLED"), Some("payment_failed"))
    );
    stock_becomes(&system, &items[0].1, before).await;
    // When payments is back, the owed void lands, so no late authorization can take money.
    system.payments.restart().await;
    let voided = Instant::now();
    while payment(&system, &id).await != Some(payments::PaymentStatus::Voided) {
        assert!(
            voided.elapsed() < Duration::from_secs(15),
            "the void reaches payments"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn checkout_refuses_what_it_cannot_use() {
    let system = System::start().await;
    let token = customer(&system, "careful@example.com").await;
    let empty = checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await;
    let body = problem(empty, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("cart is empty"),
        "{body}"
    );
    let items = products(&system, 1).await;
    add(&system, &token, &items[0].0, 1).await;

    let mut bad_card = checkout_body("4242424242424241", None);
    bad_card["payment"]["cvc"] = json!("12");
    let body = problem(checkout(&system, &token, bad_card, None).await, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["payment.card_number", "payment.cvc"]);

    let mut bad_address = checkout_body(GOOD_CARD, None);
    bad_address["shipping_address"]["city"] = json!("");
    bad_address["shipping_address"]["country"] = json!("Narnia");
    let body = problem(checkout(&system, &token, bad_address, None).await, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["shipping_address.city", "shipping_address.country"]
    );

    let mut missing = checkout_body(GOOD_CARD, None);
    missing.as_object_mut().unwrap().remove("shipping_address");
    // A cart with something to ship needs an address (one of downloads alone does not).
    let body = problem(checkout(&system, &token, missing, None).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "shipping_address");
    let mut wrong_type = checkout_body(GOOD_CARD, None);
    wrong_type["payment"]["exp_month"] = json!("December");
    let body = problem(checkout(&system, &token, wrong_type, None).await, 400).await;
    assert_eq!(body["errors"][0]["field"], "payment.exp_month");
    let mine: Value = system
        .get_as("/api/v1/orders", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        mine["items"].as_array().unwrap().is_empty(),
        "no order from a refused checkout"
    );
}

/// The sum of the samples of a metric (all label sets) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn business_metrics_move_when_a_checkout_happens() {
    let system = System::start().await;
    let scrape = || async {
        system
            .http
            .get(format!("{}/metrics", system.orders.admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let token = customer(&system, "counted@example.com").await;
    let items = products(&system, 1).await;
    add(&system, &token, &items[0].0, 1).await;
    let order = final_order(
        &system,
        &token,
        checkout(&system, &token, checkout_body(GOOD_CARD, None), None).await,
    )
    .await;
    assert_eq!(order["status"], "CONFIRMED");
    add(&system, &token, &items[0].0, 1).await;
    let declined = final_order(
        &system,
        &token,
        checkout(&system, &token, checkout_body(DECLINED_CARD, None), None).await,
    )
    .await;
    assert_eq!(declined["status"], "CANCELLED");
    let after = scrape().await;
    for name in [
        "comb_orders_placed_total",
        "comb_orders_confirmed_total",
        "comb_orders_cancelled_total",
        "comb_revenue_minor_total",
        "comb_saga_duration_seconds_count",
    ] {
        assert!(
            metric_sum(&after, name) > metric_sum(&before, name),
            "{name} did not move:\n{after}"
        );
    }
    assert!(
        after.contains("reason=\"payment_declined\""),
        "cancellations by reason:\n{after}"
    );
    assert!(
        after.lines().any(
            |line| line.starts_with("http_server_request_duration_seconds_bucket")
                && line.contains("PlaceOrder")
        ),
        "RED histograms per RPC"
    );
}

#[tokio::test]
async fn an_empty_owner_reads_no_order_and_only_an_admin_reads_anyones() {
    use comb_contracts::orders::v1 as orders;
    use comb_contracts::orders::v1::orders_client::OrdersClient;

    let system = System::start().await;
    let buyer = customer(&system, "owner@example.com").await;
    let items = products(&system, 1).await;
    add(&system, &buyer, &items[0].0, 1).await;
    let placed = checkout(&system, &buyer, checkout_body(GOOD_CARD, None), None).await;
    let order = final_order(&system, &buyer, placed).await;
    let id = order["id"].as_str().unwrap().to_owned();

    let upstream =
        comb_kit::client::Upstream::new("orders", &[system.orders.url()], Duration::from_secs(5))
            .unwrap();
    let mut client = OrdersClient::new(upstream.channel());
    let read = |owner: &str, any_owner: bool| orders::GetOrderRequest {
        order_id: id.clone(),
        owner: owner.to_owned(),
        any_owner,
    };
    let nobody = client.get_order(read("", false)).await.unwrap_err();
    assert_eq!(
        nobody.code(),
        tonic::Code::NotFound,
        "an empty owner is nobody"
    );
    let stranger = client
        .get_order(read("someone-else", false))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::NotFound);
    assert!(
        client.get_order(read("", true)).await.is_ok(),
        "the admin flag"
    );

    // Through the API: the admin reads it, another customer does not find it.
    let admin = admin(&system).await;
    let path = format!("/api/v1/orders/{id}");
    assert_eq!(system.get_as(&path, &admin).await.status(), 200);
    let other = customer(&system, "not-the-owner@example.com").await;
    problem(system.get_as(&path, &other).await, 404).await;
}

#[tokio::test]
async fn a_cart_in_another_currency_than_shipping_is_refused_not_added_up() {
    let system = System::start().await;
    let admin = admin(&system).await;
    let created = system
        .http
        .post(system.url("/api/v1/admin/products"))
        .bearer_auth(&admin)
        .json(
            &json!({"sku": "BK-EURO-1", "kind": "book", "title": "Priced in Euros",
            "creators": ["A. Author"], "category": "non-fiction",
            "price": {"amount_minor": 1500, "currency": "EUR"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let product: Value = created.json().await.unwrap();
    let id = product["id"].as_str().unwrap().to_owned();
    let stocked = system
        .http
        .put(system.url(&format!("/api/v1/admin/stock/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"available": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 200);
    let buyer = customer(&system, "euro@example.com").await;
    add(&system, &buyer, &id, 1).await;
    let refused = checkout(&system, &buyer, checkout_body(GOOD_CARD, None), None).await;
    let body = problem(refused, 409).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("EUR") && detail.contains("USD"), "{body}");
    let orders = system.get_as("/api/v1/orders", &buyer).await;
    let orders: Value = orders.json().await.unwrap();
    assert_eq!(orders["items"], json!([]), "no order was placed");
}
