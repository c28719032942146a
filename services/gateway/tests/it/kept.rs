//! The gateway keeps the catalog's, reviews' and recommendations' answers while their data
//! versions stand: a page read again costs the services nothing, and a change (through the
//! gateway or not) is seen.

use std::time::{Duration, Instant};

use comb_contracts::catalog::v1 as proto;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use serde_json::json;

use crate::System;
use crate::checkout::{admin, products};

/// How many calls of `method` the catalog has answered (all statuses).
async fn catalog_calls(system: &System, method: &str) -> u64 {
    let text = system
        .http
        .get(format!("{}/metrics", system.catalog.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let route = format!("route=\"/comb.catalog.v1.Catalog/{method}\"");
    text.lines()
        .filter(|line| line.starts_with("http_server_requests_total") && line.contains(&route))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Reads `path` until reading it again does not reach the catalog's `method`.
async fn until_kept(system: &System, path: &str, method: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = || async {
        let response = system.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
    };
    loop {
        read().await;
        let before = catalog_calls(system, method).await;
        for _ in 0..5 {
            read().await;
        }
        if catalog_calls(system, method).await == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} kept calling the catalog's {method}"
        );
    }
}

#[tokio::test]
async fn pages_read_again_cost_the_catalog_nothing_and_changes_are_seen() {
    let system = System::start().await;
    let (id, sku) = products(&system, 1).await.remove(0);
    let path = format!("/api/v1/products/{id}");
    until_kept(&system, &path, "GetProduct").await;
    until_kept(
        &system,
        "/api/v1/products?kind=book&limit=5",
        "ListProducts",
    )
    .await;
    until_kept(&system, "/", "ListProducts").await;
    until_kept(&system, &format!("/shop/products/{id}"), "GetProduct").await;

    // A change through the gateway is read back at once.
    let before = system.json(&path).await;
    let admin = admin(&system).await;
    let mut product = json!({
        "sku": sku,
        "kind": before["kind"],
        "title": "Retitled Through the Gateway",
        "creators": before["creators"],
        "category": before["category"],
        "price": before["price"],
    });
    let updated = system
        .http
        .put(system.url(&path.replace("/products/", "/admin/products/")))
        .bearer_auth(&admin)
        .json(&product)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200, "{}", updated.text().await.unwrap());
    let read = system.json(&path).await;
    assert_eq!(read["title"], "Retitled Through the Gateway", "{read}");
    let listed = system.json("/api/v1/products?kind=book&limit=5").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["title"] == "Retitled Through the Gateway"),
        "{listed}"
    );

    // A change the gateway did not make (straight to the catalog) is seen soon.
    until_kept(&system, &path, "GetProduct").await;
    product["title"] = json!("Retitled Behind the Gateway's Back");
    let upstream =
        comb_kit::client::Upstream::new("catalog", &[system.catalog.url()], Duration::from_secs(5))
            .unwrap();
    let mut catalog = CatalogClient::new(upstream.channel());
    catalog
        .update_product(proto::UpdateProductRequest {
            id: id.clone(),
            product: Some(proto::ProductDraft {
                sku: sku.clone(),
                kind: proto::ProductKind::Book as i32,
                title: "Retitled Behind the Gateway's Back".into(),
                creators: serde_json::from_value(before["creators"].clone()).unwrap(),
                description: String::new(),
                category: before["category"].as_str().unwrap().to_owned(),
                tags: Vec::new(),
                price: Some(proto::Money {
                    amount_minor: before["price"]["amount_minor"].as_i64().unwrap(),
                    currency: before["price"]["currency"].as_str().unwrap().to_owned(),
                }),
            }),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let read = system.json(&path).await;
        if read["title"] == "Retitled Behind the Gateway's Back" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway kept serving the old product: {read}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_product_answer_carries_its_stock_as_it_is_now() {
    let system = System::start().await;
    let (id, _) = products(&system, 1).await.remove(0);
    let admin = admin(&system).await;
    let path = format!("/api/v1/products/{id}");
    for available in [7, 3] {
        let set = system
            .http
            .put(system.url(&format!("/api/v1/admin/stock/{id}")))
            .bearer_auth(&admin)
            .json(&json!({ "available": available }))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200);
        let product = system.json(&path).await;
        assert_eq!(
            product["stock"],
            json!({ "available": available }),
            "{product}"
        );
        assert!(
            !product["unavailable"]
                .as_array()
                .unwrap()
                .contains(&json!("stock")),
            "{product}"
        );
    }
}
