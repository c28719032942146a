//! The gateway over HTTP in front of a real catalog on random ports: the REST contract,
//! its errors, and what happens when the catalog is down or stuck.

#![allow(clippy::unwrap_used)]

mod catalog_down;
mod contract;

use std::collections::BTreeMap;

use comb_gateway::GatewayState;
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};

/// A catalog with the seed data and a gateway in front of it.
pub struct System {
    pub gateway: TestServer,
    pub catalog: TestServer,
    pub http: reqwest::Client,
    _database: TestDatabase,
}

impl System {
    pub async fn start() -> Self {
        let database = TestDatabase::sqlite();
        let catalog_config = ServiceConfig::resolve(
            "catalog",
            BTreeMap::new(),
            [("COMB_DATABASE_URL", database.url.clone())],
        )
        .unwrap();
        let store = comb_catalog::open_store(&catalog_config).await.unwrap();
        let catalog = TestServer::start(comb_catalog::routes(store)).await;
        let gateway = gateway_for(&catalog.url(), 2_000).await;
        Self {
            gateway,
            catalog,
            http: reqwest::Client::new(),
            _database: database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }
}

/// A gateway whose catalog is at `catalog_url`, with calls failing after `call_timeout_ms`.
pub async fn gateway_for(catalog_url: &str, call_timeout_ms: u64) -> TestServer {
    let env = [
        ("COMB_UPSTREAM_CATALOG", catalog_url.to_owned()),
        ("COMB_CALL_TIMEOUT_MS", call_timeout_ms.to_string()),
    ];
    let config = ServiceConfig::resolve("gateway", BTreeMap::new(), env).unwrap();
    let state = GatewayState::connect(&config).unwrap();
    TestServer::start(comb_gateway::routes(state)).await
}

/// Asserts a problem+json answer with this status and returns its body.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    assert!(
        !body["detail"].as_str().unwrap().is_empty(),
        "a detail says what went wrong"
    );
    body
}
