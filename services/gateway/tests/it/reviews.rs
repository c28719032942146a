//! Reviews: verified purchasers only, once per product, rating 1 to 5; the catalog's
//! rating summary follows.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checkout::{GOOD_CARD, add, checkout, checkout_body, customer, final_order, products};
use crate::{Options, System, nats_reachable, problem};

async fn post(system: &System, token: &str, product_id: &str, body: Value) -> reqwest::Response {
    system
        .http
        .post(system.url(&format!("/api/v1/products/{product_id}/reviews")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_buyers_review_once_with_a_rating_from_one_to_five() {
    only_buyers_review_once_with_a_rating_from_one_to_five_with(Options::default()).await;
}

#[tokio::test]
async fn only_buyers_review_once_with_a_rating_from_one_to_five_on_postgres_over_nats() {
    if nats_reachable().await {
        only_buyers_review_once_with_a_rating_from_one_to_five_with(Options {
            nats: true,
            postgres: true,
            ..Options::default()
        })
        .await;
    }
}

async fn only_buyers_review_once_with_a_rating_from_one_to_five_with(options: Options) {
    let system = System::start_with(options).await;
    let buyer = customer(&system, "reviewer@example.com").await;
    let stranger = customer(&system, "stranger@example.com").await;
    let items = products(&system, 1).await;
    let product = items[0].0.as_str();
    let review = json!({"rating": 4, "title": "Worth it", "body": "Read it twice."});

    problem(post(&system, &stranger, product, review.clone()).await, 403).await;
    add(&system, &buyer, product, 1).await;
    let placed = checkout(&system, &buyer, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(
        final_order(&system, &buyer, placed).await["status"],
        "CONFIRMED"
    );

    // The purchase reaches reviews as an event: until then the buyer is a stranger too.
    let started = Instant::now();
    let posted = loop {
        let response = post(&system, &buyer, product, review.clone()).await;
        if response.status() == 201 {
            break response.json::<Value>().await.unwrap();
        }
        assert_eq!(response.status(), 403);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the purchase never reached reviews"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        (posted["rating"].as_i64(), posted["author_name"].as_str()),
        (Some(4), Some("Customer"))
    );

    let again = post(&system, &buyer, product, review.clone()).await;
    problem(again, 409).await;
    for rating in [0, 6] {
        let body = problem(
            post(
                &system,
                &buyer,
                product,
                json!({"rating": rating, "title": "x"}),
            )
            .await,
            422,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "rating");
    }
    let untitled = problem(
        post(&system, &buyer, product, json!({"rating": 3, "title": ""})).await,
        422,
    )
    .await;
    assert_eq!(untitled["errors"][0]["field"], "title");
    let anonymous = system
        .http
        .post(system.url(&format!("/api/v1/products/{product}/reviews")))
        .json(&review)
        .send()
        .await
        .unwrap();
    problem(anonymous, 401).await;

    let listed = system
        .json(&format!("/api/v1/products/{product}/reviews"))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["title"], "Worth it");

    let started = Instant::now();
    loop {
        let page = system.json(&format!("/api/v1/products/{product}")).await;
        if !page["rating"].is_null() {
            assert_eq!(page["rating"], json!({"average": 4.0, "count": 1}));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the catalog never learned the rating"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_guest_cannot_review_even_what_it_bought() {
    let system = System::start().await;
    let items = products(&system, 1).await;
    let product = items[0].0.as_str();
    let review = json!({"rating": 5, "title": "Loved it"});
    let guest = crate::checkout::guest(&system).await;
    add(&system, &guest, product, 1).await;
    let placed = checkout(
        &system,
        &guest,
        checkout_body(GOOD_CARD, Some("guest@example.com")),
        None,
    )
    .await;
    assert_eq!(
        final_order(&system, &guest, placed).await["status"],
        "CONFIRMED"
    );
    // A customer's later purchase reaching reviews means the guest's has too.
    let buyer = customer(&system, "after-the-guest@example.com").await;
    add(&system, &buyer, product, 1).await;
    let placed = checkout(&system, &buyer, checkout_body(GOOD_CARD, None), None).await;
    assert_eq!(
        final_order(&system, &buyer, placed).await["status"],
        "CONFIRMED"
    );
    let started = Instant::now();
    while post(&system, &buyer, product, review.clone())
        .await
        .status()
        != 201
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the purchase never reached reviews"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = problem(post(&system, &guest, product, review).await, 403).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("guests"),
        "{refused}"
    );
}
