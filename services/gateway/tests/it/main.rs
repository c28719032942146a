//! The gateway over HTTP in front of real services on random ports: the REST contract,
//! its errors, authentication, and what happens when a service is down or stuck.

#![allow(clippy::unwrap_used)]

mod accounts;
mod cart;
mod catalog_down;
mod contract;

use std::collections::BTreeMap;

use comb_gateway::GatewayState;
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};

pub const ADMIN_EMAIL: &str = "admin@comb.example";
pub const ADMIN_PASSWORD: &str = "admin password for tests";

/// The catalog (with its seed data) and users, each with its own database, and a gateway
/// in front of them.
pub struct System {
    pub gateway: TestServer,
    pub catalog: TestServer,
    pub cart: TestServer,
    pub users: TestServer,
    pub http: reqwest::Client,
    pub users_database: TestDatabase,
    _catalog_database: TestDatabase,
    _cart_database: TestDatabase,
}

impl System {
    pub async fn start() -> Self {
        let catalog_database = TestDatabase::sqlite();
        let catalog_config = ServiceConfig::resolve(
            "catalog",
            BTreeMap::new(),
            [("COMB_DATABASE_URL", catalog_database.url.clone())],
        )
        .unwrap();
        let store = comb_catalog::open_store(&catalog_config).await.unwrap();
        let catalog = TestServer::start(comb_catalog::routes(store)).await;

        let users_database = TestDatabase::sqlite();
        let users_config = ServiceConfig::resolve(
            "users",
            BTreeMap::new(),
            [
                ("COMB_DATABASE_URL", users_database.url.clone()),
                ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
                ("COMB_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ],
        )
        .unwrap();
        let users = TestServer::start(comb_users::routes(
            comb_users::open(&users_config).await.unwrap(),
        ))
        .await;

        let cart_database = TestDatabase::sqlite();
        let cart_config = ServiceConfig::resolve(
            "cart",
            BTreeMap::new(),
            [
                ("COMB_DATABASE_URL", cart_database.url.clone()),
                ("COMB_UPSTREAM_CATALOG", catalog.url()),
            ],
        )
        .unwrap();
        let cart = TestServer::start(comb_cart::routes(
            comb_cart::open(&cart_config).await.unwrap(),
        ))
        .await;

        let gateway = gateway_for(
            &Upstreams {
                catalog: catalog.url(),
                users: users.url(),
                cart: cart.url(),
            },
            2_000,
        )
        .await;
        Self {
            gateway,
            catalog,
            cart,
            _cart_database: cart_database,
            users,
            http: reqwest::Client::new(),
            users_database,
            _catalog_database: catalog_database,
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

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A request with a JSON body and a bearer token.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// Where the gateway finds the services it calls.
pub struct Upstreams {
    pub catalog: String,
    pub users: String,
    pub cart: String,
}

impl Upstreams {
    /// Every service at one address.
    pub fn all_at(url: &str) -> Self {
        Self {
            catalog: url.to_owned(),
            users: url.to_owned(),
            cart: url.to_owned(),
        }
    }
}

/// A gateway in front of these services, with calls failing after `call_timeout_ms`.
pub async fn gateway_for(upstreams: &Upstreams, call_timeout_ms: u64) -> TestServer {
    let env = [
        ("COMB_UPSTREAM_CATALOG", upstreams.catalog.clone()),
        ("COMB_UPSTREAM_USERS", upstreams.users.clone()),
        ("COMB_UPSTREAM_CART", upstreams.cart.clone()),
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
