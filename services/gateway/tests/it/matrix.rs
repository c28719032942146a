//! Who may call what: every route against every kind of credential, in one table.

use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use reqwest::Method;
use serde_json::{Value, json};

use crate::System;
use crate::accounts::{forge, now};
use crate::checkout::{GOOD_CARD, add, admin, checkout, checkout_body, customer, products};

/// The credentials each row is tried with, in this order.
const CREDENTIALS: [&str; 6] = [
    "none",
    "expired",
    "bad signature",
    "other customer",
    "customer",
    "admin",
];

#[tokio::test]
async fn every_route_against_every_credential() {
    let system = System::start().await;
    let owner = customer(&system, "owner@example.com").await;
    let other = customer(&system, "other@example.com").await;
    let admin = admin(&system).await;
    let items = products(&system, 2).await;
    add(&system, &owner, &items[0].0, 1).await;
    let order: Value = checkout(&system, &owner, checkout_body(GOOD_CARD, None), None)
        .await
        .json()
        .await
        .unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();
    let expired = forge(
        &system,
        &Claims {
            sub: "someone".into(),
            role: Role::Admin,
            email: None,
            name: None,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: "forged".into(),
            generation: 0,
            iat: now() - 7200,
            exp: now() - 3600,
        },
    )
    .await;
    let bad_signature = {
        let (signed, signature) = owner.rsplit_once('.').unwrap();
        let mut signature = signature.to_owned();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        signature.replace_range(0..1, flipped);
        format!("{signed}.{signature}")
    };
    let guest: Value = system
        .post_json("/api/v1/auth/guest", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let guest = guest["token"].as_str().unwrap().to_owned();
    let tokens = [
        None,
        Some(expired),
        Some(bad_signature),
        Some(guest),
        Some(other),
        Some(owner),
        Some(admin),
    ];

    let product = |sku: &str| {
        json!({"sku": sku, "kind": "book", "title": "Matrix Test", "creators": ["A. Tester"],
               "category": "non-fiction", "price": {"amount_minor": 1000, "currency": "USD"}})
    };
    let book = &items[1].0;
    let book_sku = &items[1].1;
    let rows: Vec<(Method, String, Option<Value>, [u16; 7])> = vec![
        (
            Method::GET,
            "/api/v1/products".into(),
            None,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/me".into(),
            None,
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/cart".into(),
            None,
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::POST,
            "/api/v1/cart/items".into(),
            Some(json!({"product_id": book, "quantity": 1})),
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::PUT,
            format!("/api/v1/cart/items/{book}"),
            Some(json!({"quantity": 2})),
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::DELETE,
            format!("/api/v1/cart/items/{book}"),
            None,
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/orders".into(),
            None,
            [401, 401, 401, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/orders/{order_id}"),
            None,
            [401, 401, 401, 404, 404, 200, 200],
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(json!({})),
            [401, 401, 401, 400, 400, 400, 400],
        ),
        (
            Method::PUT,
            format!("/api/v1/admin/stock/{book}"),
            Some(json!({"available": 50})),
            [401, 401, 401, 403, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/v1/admin/products".into(),
            Some(product("BK-7777")),
            [401, 401, 401, 403, 403, 403, 201],
        ),
        // A non-admin is refused before the body is read: it learns nothing of the schema.
        (
            Method::POST,
            "/api/v1/admin/products".into(),
            Some(json!({})),
            [401, 401, 401, 403, 403, 403, 400],
        ),
        (
            Method::PUT,
            format!("/api/v1/admin/products/{book}"),
            Some(product(book_sku)),
            [401, 401, 401, 403, 403, 403, 200],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (index, token) in tokens.iter().enumerate() {
            let mut request = system.http.request(method.clone(), system.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let status = request.send().await.unwrap().status().as_u16();
            if status != expected[index] {
                failures.push(format!(
                    "{method} {path} as {}: {status}, expected {}",
                    CREDENTIALS[index], expected[index]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
