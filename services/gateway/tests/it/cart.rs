use reqwest::Method;
use serde_json::{Value, json};

use crate::{System, problem};

async fn product_ids(system: &System) -> Vec<String> {
    let page = system.json("/api/v1/products?limit=3").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn guest_token(system: &System) -> String {
    let guest: Value = system
        .post_json("/api/v1/auth/guest", json!({}))
        .await
        .json()
        .await
        .unwrap();
    guest["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_caller_has_a_cart_of_their_own() {
    let system = System::start().await;
    let ids = product_ids(&system).await;
    let guest = guest_token(&system).await;
    let other = guest_token(&system).await;

    let added = system
        .send_as(
            Method::POST,
            "/api/v1/cart/items",
            &guest,
            Some(json!({"product_id": ids[0], "quantity": 2})),
        )
        .await;
    assert_eq!(added.status(), 200);
    let cart: Value = added.json().await.unwrap();
    assert_eq!(cart["items"][0]["quantity"], 2);
    let unit = cart["items"][0]["unit_price"]["amount_minor"]
        .as_i64()
        .unwrap();
    assert_eq!(
        cart["items"][0]["line_total"]["amount_minor"]
            .as_i64()
            .unwrap(),
        2 * unit
    );
    assert_eq!(cart["total"]["amount_minor"].as_i64().unwrap(), 2 * unit);

    let theirs: Value = system
        .get_as("/api/v1/cart", &other)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        theirs["items"].as_array().unwrap().is_empty(),
        "another caller's cart is separate"
    );

    let path = format!("/api/v1/cart/items/{}", ids[0]);
    let set: Value = system
        .send_as(Method::PUT, &path, &guest, Some(json!({"quantity": 5})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(set["items"][0]["quantity"], 5);
    let removed: Value = system
        .send_as(Method::DELETE, &path, &guest, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(removed["items"].as_array().unwrap().is_empty());

    // 400 when the gateway cannot read the body; 422 when the cart refuses what it says.
    for (body, field, status) in [
        (
            json!({"product_id": "00000000-0000-7000-8000-000000000000", "quantity": 1}),
            "product_id",
            422,
        ),
        (
            json!({"product_id": ids[0], "quantity": 0}),
            "quantity",
            422,
        ),
        (
            json!({"product_id": ids[0], "quantity": 1000}),
            "quantity",
            422,
        ),
        (
            json!({"product_id": ids[0], "quantity": "two"}),
            "quantity",
            400,
        ),
        (json!({"quantity": 1}), "product_id", 400),
    ] {
        let refused = system
            .send_as(
                Method::POST,
                "/api/v1/cart/items",
                &guest,
                Some(body.clone()),
            )
            .await;
        let problem = problem(refused, status).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    let unauthenticated = system
        .http
        .get(system.url("/api/v1/cart"))
        .send()
        .await
        .unwrap();
    problem(unauthenticated, 401).await;
}

#[tokio::test]
async fn a_guest_cart_follows_the_guest_into_their_account() {
    let system = System::start().await;
    let ids = product_ids(&system).await;
    let guest = guest_token(&system).await;
    system
        .send_as(
            Method::POST,
            "/api/v1/cart/items",
            &guest,
            Some(json!({"product_id": ids[1], "quantity": 3})),
        )
        .await;

    let registered = system
        .http
        .post(system.url("/api/v1/auth/register"))
        .bearer_auth(&guest)
        .json(&json!({"email": "shopper@example.com", "password": "a long enough secret", "name": "Shopper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let token = registered.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cart: Value = system
        .get_as("/api/v1/cart", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"][0]["product_id"], ids[1].as_str());
    assert_eq!(cart["items"][0]["quantity"], 3);
    let left: Value = system
        .get_as("/api/v1/cart", &guest)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        left["items"].as_array().unwrap().is_empty(),
        "the guest cart moved"
    );

    // Signing in again as a guest who shopped adds to the account's cart.
    let second_guest = guest_token(&system).await;
    system
        .send_as(
            Method::POST,
            "/api/v1/cart/items",
            &second_guest,
            Some(json!({"product_id": ids[1], "quantity": 1})),
        )
        .await;
    let login = system
        .http
        .post(system.url("/api/v1/auth/login"))
        .bearer_auth(&second_guest)
        .json(&json!({"email": "shopper@example.com", "password": "a long enough secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cart: Value = system
        .get_as("/api/v1/cart", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"][0]["quantity"], 4);
}
