//! The checkout saga across real processes: an orders instance killed while sagas are in
//! flight, and what its restart makes of them.

use std::time::{Duration, Instant};

use comb_kit::storage::Database;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::media::first_product;
use crate::{Comb, eventually, repo_topology, trace_id};
use comb_kit::storage::sql;

fn signal(pid: u64, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
}

/// The status of each order's reservation and payment, as their own services store them.
async fn ledgers(comb: &Comb, ids: &[String]) -> Vec<(String, Option<String>, Option<String>)> {
    let databases = comb.databases().await;
    let inventory = Database::connect(&databases["inventory"]).await.unwrap();
    let payments = Database::connect(&databases["payments"]).await.unwrap();
    let mut rows = Vec::new();
    for id in ids {
        let reservation = sql::query("SELECT status FROM reservations WHERE order_id = $1")
            .bind(id.as_str())
            .fetch_optional(&inventory)
            .await
            .unwrap()
            .map(|row| row.try_get::<String, _>("status").unwrap());
        let payment = sql::query("SELECT status FROM payments WHERE payment_id = $1")
            .bind(id.as_str())
            .fetch_optional(&payments)
            .await
            .unwrap()
            .map(|row| row.try_get::<String, _>("status").unwrap());
        rows.push((id.clone(), reservation, payment));
    }
    inventory.close().await;
    payments.close().await;
    rows
}

/// A guest's token.
async fn guest(comb: &Comb) -> String {
    let guest: Value = comb
        .http
        .post(format!("{}/api/v1/auth/guest", comb.gateway()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    guest["token"].as_str().unwrap().to_owned()
}

/// Puts `quantity` of `product` in the cart of `token`.
async fn add(comb: &Comb, token: &str, product: &str, quantity: u32) {
    let added = comb
        .http
        .post(format!("{}/api/v1/cart/items", comb.gateway()))
        .bearer_auth(token)
        .json(&json!({"product_id": product, "quantity": quantity}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
}

/// Checks out the cart of `token`, to be shipped, paid with a good card.
async fn place(comb: &Comb, token: &str, email: &str) -> reqwest::Response {
    comb.http
        .post(format!("{}/api/v1/orders", comb.gateway()))
        .bearer_auth(token)
        .json(&json!({
            "email": email,
            "shipping_address": {"name": "A", "line1": "1 Way", "city": "Town", "postal_code": "1000", "country": "US"},
            "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_in_flight_when_orders_is_killed_all_finish_without_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let topology = std::fs::read_to_string(repo_topology()).unwrap().replace(
        "calls = [\"cart\", \"inventory\", \"payments\", \"shipping\"]",
        "calls = [\"cart\", \"inventory\", \"payments\", \"shipping\"]\nsettings = { saga_deadline_ms = \"10000\", call_timeout_ms = \"500\", saga_abandoned_after_ms = \"1000\" }",
    );
    assert!(topology.contains("saga_deadline_ms"));
    let path = dir.path().join("comb.toml");
    std::fs::write(&path, topology).unwrap();
    let Some(comb) = Comb::system(&path) else {
        return;
    };
    let gateway = comb.gateway();
    let http = &comb.http;

    let product = first_product(&comb, "music").await;

    // Payments frozen: authorizations hang until their deadline, so sagas stay in flight.
    let payments = comb.instance("payments-1")["pid"].as_u64().unwrap();
    signal(payments, Signal::SIGSTOP);
    let mut shoppers = Vec::new();
    let mut traces = Vec::new();
    for n in 0..6 {
        let token = guest(&comb).await;
        add(&comb, &token, &product, 1).await;
        let placed = place(&comb, &token, &format!("shopper{n}@example.com")).await;
        assert_eq!(
            placed.status(),
            202,
            "payments is frozen, so the order waits"
        );
        traces.push(trace_id(&placed));
        let order: Value = placed.json().await.unwrap();
        shoppers.push((token, order["id"].as_str().unwrap().to_owned()));
    }

    let orders = comb.instance("orders-1")["pid"].as_u64().unwrap();
    signal(orders, Signal::SIGKILL);
    signal(payments, Signal::SIGCONT);
    eventually("orders restarted", Duration::from_secs(30), || async {
        let instance = comb.instance("orders-1");
        (instance["restarts"] == 1 && instance["health"] == "ready").then_some(())
    })
    .await;

    let mut finals = Vec::new();
    for (token, id) in &shoppers {
        let started = Instant::now();
        loop {
            let order: Value = http
                .get(format!("{gateway}/api/v1/orders/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if order["status"] != "PENDING" {
                finals.push(order);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "order {id} stayed PENDING: {order}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ids: Vec<String> = shoppers.iter().map(|(_, id)| id.clone()).collect();
    // Compensations may still be landing: wait until every ledger is settled.
    let started = Instant::now();
    loop {
        let rows = ledgers(&comb, &ids).await;
        let leaks: Vec<String> = rows
            .iter()
            .zip(&finals)
            .filter_map(|((id, reservation, payment), order)| {
                let confirmed = order["status"] == "CONFIRMED";
                let settled = if confirmed {
                    reservation.as_deref() == Some("committed")
                        && payment.as_deref() == Some("captured")
                } else {
                    // A saga cancelled once authorization had been tried owes a void, and
                    // it must have landed.
                    matches!(reservation.as_deref(), Some("released" | "expired"))
                        && matches!(
                            payment.as_deref(),
                            None | Some("voided" | "declined" | "refunded")
                        )
                        && (order["cancel_reason"] != "payment_failed"
                            || payment.as_deref() == Some("voided"))
                };
                (!settled).then(|| {
                    format!(
                        "{id} {}: reservation {reservation:?}, payment {payment:?}",
                        order["status"]
                    )
                })
            })
            .collect();
        if leaks.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "leaks: {leaks:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each saga the restarted instance resumed went on in its checkout's trace.
    for trace_id in &traces {
        eventually(
            &format!("the resumed saga in trace {trace_id}"),
            Duration::from_secs(20),
            || async {
                comb.trace(trace_id)
                    .await?
                    .iter()
                    .any(|span| span["service"] == "orders" && span["name"] == "resumed saga")
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_refunded_order_keeps_the_ledgers_reconciled() {
    let Some(comb) = Comb::system_with_env(&repo_topology(), &crate::media::ADMIN) else {
        return;
    };
    let gateway = comb.gateway();
    let http = &comb.http;
    let book = first_product(&comb, "book").await;
    let token = guest(&comb).await;
    add(&comb, &token, &book, 2).await;
    let order: Value = place(&comb, &token, "reader@example.com")
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    eventually("the order confirmed", Duration::from_secs(30), || async {
        let order: Value = http
            .get(format!("{gateway}/api/v1/orders/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (order["status"] == "CONFIRMED").then_some(())
    })
    .await;
    let admin = crate::media::admin_token(&comb).await;
    let refunded: Value = http
        .post(format!("{gateway}/api/v1/admin/orders/{id}/refund"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refunded["cancel_reason"], "refunded", "{refunded}");
    assert_eq!(refunded["payment"]["status"], "refunded", "{refunded}");
    // Paid back, the books still sold, its confirmation still counted once: every
    // invariant holds.
    let check = comb.run(&["chaos", "check", "--settle", "30s", "--json"]);
    let verdicts: Vec<Value> =
        serde_json::from_slice(&check.stdout).unwrap_or_else(|_| panic!("{}", crate::text(&check)));
    assert!(
        check.status.success() && verdicts.iter().all(|v| v["ok"] == true),
        "{verdicts:#?}"
    );
}
