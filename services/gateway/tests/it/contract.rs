use std::collections::HashSet;

use crate::{System, problem};

#[tokio::test]
async fn products_page_through_the_whole_seeded_catalog() {
    let system = System::start().await;
    let first = system.json("/api/v1/products").await;
    assert_eq!(
        first["items"].as_array().unwrap().len(),
        20,
        "default page size"
    );
    let product = &first["items"][0];
    for field in [
        "id",
        "sku",
        "kind",
        "title",
        "creators",
        "description",
        "category",
        "tags",
        "price",
    ] {
        assert!(!product[field].is_null(), "product has {field}: {product}");
    }
    assert!(product["price"]["amount_minor"].is_i64());
    assert_eq!(product["price"]["currency"], "USD");

    let mut seen = HashSet::new();
    let mut path = "/api/v1/products?limit=25".to_owned();
    loop {
        let page = system.json(&path).await;
        for item in page["items"].as_array().unwrap() {
            assert!(
                seen.insert(item["id"].as_str().unwrap().to_owned()),
                "no product twice"
            );
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/products?limit=25&cursor={cursor}"),
            None => break,
        }
    }
    assert!(
        seen.len() >= 60,
        "the seeded catalog has {} products",
        seen.len()
    );
}

#[tokio::test]
async fn filters_search_and_categories() {
    let system = System::start().await;
    let books = system.json("/api/v1/products?kind=book&limit=100").await;
    let books = books["items"].as_array().unwrap();
    assert!(books.len() >= 20 && books.iter().all(|p| p["kind"] == "book"));

    let categories = system.json("/api/v1/categories").await;
    let categories = categories["items"].as_array().unwrap();
    assert_eq!(categories.len(), 12);
    let jazz = categories.iter().find(|c| c["slug"] == "jazz").unwrap();
    assert_eq!(jazz["kind"], "music");
    let in_jazz = system
        .json("/api/v1/products?category=jazz&limit=100")
        .await;
    assert_eq!(
        in_jazz["items"].as_array().unwrap().len() as u64,
        jazz["product_count"].as_u64().unwrap()
    );

    let found = system.json("/api/v1/search?q=austen").await;
    let found = found["items"].as_array().unwrap();
    assert!(
        found.iter().any(|p| p["creators"][0] == "Jane Austen"),
        "{found:?}"
    );
    let mut one = system
        .json(&format!(
            "/api/v1/products/{}",
            found[0]["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        one["recommendations"].is_array(),
        "a product page carries its recommendations: {one}"
    );
    assert!(one["reviews"].is_array(), "and its newest reviews: {one}");
    assert_eq!(one["unavailable"], serde_json::json!([]), "{one}");
    assert!(
        one["stock"]["available"].is_i64(),
        "and its stock, as shared/api.md promises: {one}"
    );
    for part in ["recommendations", "reviews", "unavailable", "stock"] {
        one.as_object_mut().unwrap().remove(part);
    }
    assert_eq!(one, found[0]);
    let syntax = system.json("/api/v1/search?q=%22%20OR%20*%20NEAR(").await;
    assert!(
        syntax["items"].is_array(),
        "search syntax in the query is taken as text"
    );
}

#[tokio::test]
async fn bad_input_gets_a_problem_that_names_the_field() {
    let system = System::start().await;
    for limit in ["-1", "abc", "0", "101", "1.5"] {
        let body = problem(
            system.get(&format!("/api/v1/products?limit={limit}")).await,
            400,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "limit", "limit={limit}");
        assert!(
            body["detail"].as_str().unwrap().contains("1 to 100"),
            "{body}"
        );
    }
    let body = problem(
        system.get("/api/v1/products?kind=vinyl&limit=abc").await,
        400,
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["limit", "kind"], "every bad field at once");
    // What the catalog refuses is 422; what the gateway cannot read (above) is 400.
    let body = problem(
        system.get("/api/v1/products?cursor=not-a-cursor").await,
        422,
    )
    .await;
    assert_eq!(
        body["errors"][0]["field"], "cursor",
        "the catalog's verdict keeps its field: {body}"
    );
    let body = problem(
        system.get("/api/v1/products?category=Not%20A%20Slug").await,
        400,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "category");

    let body = problem(system.get("/api/v1/search").await, 400).await;
    assert_eq!(body["errors"][0]["field"], "q");
    let huge = "a".repeat(10 * 1024);
    let body = problem(system.get(&format!("/api/v1/search?q={huge}")).await, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("at most 200"),
        "{body}"
    );
    assert!(
        body.to_string().len() < 1024,
        "a huge value is not echoed back"
    );

    let body = problem(system.get("/api/v1/products/no-such-product").await, 404).await;
    assert!(
        body["detail"].as_str().unwrap().contains("no-such-product"),
        "{body}"
    );
    let long_id = "x".repeat(5000);
    problem(
        system.get(&format!("/api/v1/products/{long_id}")).await,
        404,
    )
    .await;
    problem(system.get("/api/v1/nothing-here").await, 404).await;
    let response = system
        .http
        .delete(system.url("/api/v1/products"))
        .send()
        .await
        .unwrap();
    problem(response, 405).await;
    problem(system.get("/api/v1/products?limit=%ZZ").await, 400).await;
    for undecodable in ["%FF", "%00", "a%00b", "..%2F..%2Fetc"] {
        problem(
            system.get(&format!("/api/v1/products/{undecodable}")).await,
            404,
        )
        .await;
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let system = System::start().await;
    let response = system.get("/api/v1/categories").await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!generated.is_empty());
    let response = system
        .http
        .get(system.url("/api/v1/products/missing"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "trace-me-42",
        "the caller's id is kept"
    );
}

#[tokio::test]
async fn openapi_document_describes_every_route_that_is_served() {
    let system = System::start().await;
    let document = system.json("/api/openapi.json").await;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/products", "get"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}/recommendations", "get"),
        ("/api/v1/products/{id}/reviews", "get"),
        ("/api/v1/products/{id}/reviews", "post"),
        ("/api/v1/search", "get"),
        ("/api/v1/categories", "get"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/guest", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/me", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/api/v1/cart", "get"),
        ("/api/v1/cart/items", "post"),
        ("/api/v1/cart/items/{product_id}", "put"),
        ("/api/v1/cart/items/{product_id}", "delete"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/downloads", "get"),
        ("/api/v1/admin/orders/{id}/refund", "post"),
        ("/api/v1/messages", "get"),
        ("/api/v1/admin/products", "post"),
        ("/api/v1/admin/products/{id}", "put"),
        ("/api/v1/admin/stock/{product_id}", "put"),
        ("/api/v1/admin/reports/sales", "get"),
        ("/api/v1/admin/reports/sales.csv", "get"),
        ("/api/v1/admin/products/{id}/media", "post"),
        ("/api/v1/admin/media/jobs", "get"),
        ("/api/v1/admin/media/jobs/{id}", "get"),
        ("/api/v1/admin/media/jobs/{id}/retry", "post"),
        ("/api/v1/admin/media/jobs/{id}/cancel", "post"),
        ("/media/{asset}/{rendition}", "get"),
    ];
    // What a checkout creates links to where it can be read.
    let placed = &paths["/api/v1/orders"]["post"]["responses"]["202"]["links"]["GetOrder"];
    assert_eq!(placed["operationId"], "get_order");
    assert_eq!(placed["parameters"]["id"], "$response.body#/id");
    let described: HashSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        described,
        expected.iter().map(|(path, _)| *path).collect(),
        "the document lists exactly the routes"
    );
    for (path, method) in expected {
        let operation = &paths[path][method];
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents its answer"
        );
        assert!(
            responses.contains_key("503") || responses.contains_key("401"),
            "{method} {path} documents how it fails"
        );
        // Every problem a route answers with is a problem+json document.
        for (status, response) in responses
            .iter()
            .filter(|(s, _)| s.starts_with('4') || s.starts_with('5'))
        {
            assert!(
                response["content"]["application/problem+json"].is_object(),
                "{method} {path} {status} is a problem: {response}"
            );
        }
        if operation.get("security").is_some() {
            assert!(
                responses.contains_key("401"),
                "{method} {path} needs a token and says what happens without one"
            );
        }
        if path.starts_with("/api/v1/admin/") {
            assert!(
                responses.contains_key("403"),
                "{method} {path} is for admins"
            );
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} documents {status}"
                );
            }
        }
        // Each described route is really served: a served route never says "no route".
        let real = system.url(
            &path
                .replace("{id}", "anything")
                .replace("{product_id}", "anything"),
        );
        let request = match method {
            "post" => system.http.post(&real).json(&serde_json::json!({})),
            "put" => system.http.put(&real).json(&serde_json::json!({})),
            "delete" => system.http.delete(&real),
            _ => system.http.get(format!("{real}?q=x")),
        };
        let body = request.send().await.unwrap().text().await.unwrap();
        assert!(
            !body.contains("there is no route") && !body.contains("is not allowed"),
            "{method} {path} is described but not served: {body}"
        );
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(
        paths["/api/v1/me"]["get"]["security"].is_array(),
        "secured routes say so"
    );
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in ["Product", "ProductList", "Category", "Problem", "Money"] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
    let limit = paths["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 100);
}

#[tokio::test]
async fn metrics_count_requests_per_route() {
    let system = System::start().await;
    system.json("/api/v1/categories").await;
    let public = system.get("/metrics").await;
    assert_eq!(public.status(), 404, "no metrics on the public port");
    let text = system
        .http
        .get(format!("{}/metrics", system.gateway.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|line| line.starts_with("http_server_requests_total")
                && line.contains("route=\"/api/v1/categories\"")
                && line.contains("method=\"GET\"")),
        "{text}"
    );
    let catalog_metrics = system
        .http
        .get(format!("{}/metrics", system.catalog.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        catalog_metrics.contains("route=\"/comb.catalog.v1.Catalog/ListCategories\""),
        "gRPC calls are counted per method: {catalog_metrics}"
    );
}
