//! What happens after a checkout, through events: messages in the mailbox, exactly once,
//! whoever was down when.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::System;
use crate::checkout::{
    GOOD_CARD, add, checkout, checkout_body, customer, final_order, products, set_stock,
};

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
    let system = System::start().await;
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
    let mut system = System::start().await;
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

    system.start_consumers();
    let confirmed = until_messages(
        &system,
        &token,
        "order_confirmed",
        100,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(confirmed.len(), 100);

    // Every event delivered again (a lost position): nothing is sent twice.
    system.stop_consumers().await;
    sqlx::query("DELETE FROM feed_positions")
        .execute(system.notifications_database.pool())
        .await
        .unwrap();
    system.start_consumers();
    let started = Instant::now();
    loop {
        let position = comb_kit::events::position(&system.notifications_database, "orders")
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
}

#[tokio::test]
async fn an_event_committed_before_its_producer_died_is_delivered_after_the_restart() {
    let mut system = System::start().await;
    let token = customer(&system, "survivor@example.com").await;
    until_messages(&system, &token, "welcome", 1, Duration::from_secs(5)).await;
    let items = products(&system, 1).await;
    system.stop_consumers().await;
    let order = buy(&system, &token, &items[0].0).await;
    assert_eq!(order["status"], "CONFIRMED");

    // The producer goes away with the event committed but not yet read; the reader comes
    // back first and finds nobody to read from; then the producer returns.
    system.orders.stop().await;
    system.start_consumers();
    assert!(
        messages(&system, &token)
            .await
            .iter()
            .all(|m| m["kind"] != "order_confirmed")
    );
    system.restart_orders().await;
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
    let system = System::start().await;
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
