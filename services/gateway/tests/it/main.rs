//! The gateway over HTTP in front of real services on random ports: the REST contract,
//! its errors, authentication, and what happens when a service is down or stuck.
//!
//! Long because it wires every service in-process by hand, so that a test can stop one
//! service's consumers or relay alone; it does not start them through their `build`.

#![allow(clippy::unwrap_used)]

mod accounts;
mod cart;
mod catalog_down;
mod checkout;
mod contract;
mod events;
mod kept;
mod matrix;
mod reviews;
mod storefront;

use std::collections::BTreeMap;

use comb_gateway::GatewayState;
use comb_kit::ServiceConfig;
use comb_kit::events::Transport;
use comb_kit::storage::Database;
use comb_kit::storage::sql;
use comb_testkit::{TestDatabase, TestServer};

pub const ADMIN_EMAIL: &str = "admin@comb.example";
pub const ADMIN_PASSWORD: &str = "admin password for tests";

/// How a test wants the system set up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long an unpaid order may stay PENDING before it is cancelled.
    pub saga_deadline_ms: u64,
    /// How long a checkout call waits for its saga before answering PENDING.
    pub checkout_wait_ms: u64,
    /// Events through NATS JetStream instead of the producers' own feeds.
    pub nats: bool,
    /// Every service on a PostgreSQL database of its own instead of SQLite (SQLite, with a
    /// note, where no server answers outside CI).
    pub postgres: bool,
    /// The gateway's checkouts per account a minute, when a test needs more than the
    /// default.
    pub checkouts_per_account: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            saga_deadline_ms: 20_000,
            checkout_wait_ms: 2_000,
            nats: false,
            postgres: false,
            checkouts_per_account: None,
        }
    }
}

/// Every service, each with its own database, on random ports, and a gateway in front.
pub struct System {
    pub gateway: TestServer,
    pub catalog: TestServer,
    pub cart: TestServer,
    pub users: TestServer,
    pub inventory: TestServer,
    pub payments: TestServer,
    pub shipping: TestServer,
    pub orders: TestServer,
    pub notifications: TestServer,
    pub recommendations: TestServer,
    recommendations_config: ServiceConfig,
    recommendations_database: Database,
    pub reports: TestServer,
    reports_config: ServiceConfig,
    pub reports_database: Database,
    pub reviews: TestServer,
    reviews_config: ServiceConfig,
    reviews_database: Database,
    catalog_store: comb_catalog::store::CatalogStore,
    inventory_config: ServiceConfig,
    inventory_store: comb_inventory::store::InventoryStore,
    catalog_config: ServiceConfig,
    pub notifications_database: Database,
    notifications_config: ServiceConfig,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    transport: Transport,
    nats_prefix: Option<String>,
    producers: Vec<(Database, &'static str)>,
    relays: Vec<tokio::task::JoinHandle<()>>,
    orders_config: ServiceConfig,
    pub http: reqwest::Client,
    pub users_database: TestDatabase,
    pub inventory_database: TestDatabase,
    pub payments_database: TestDatabase,
    payments_config: ServiceConfig,
    _databases: Vec<TestDatabase>,
}

/// A new database for one service, of the kind the options ask for.
async fn database(options: &Options) -> TestDatabase {
    if options.postgres {
        if let Some(database) = TestDatabase::postgres().await {
            return database;
        }
        eprintln!("this PostgreSQL variant runs on SQLite here");
    }
    TestDatabase::sqlite()
}

fn config(service: &str, database: &TestDatabase, extra: &[(&str, String)]) -> ServiceConfig {
    let mut env = vec![("COMB_DATABASE_URL".to_owned(), database.url.clone())];
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone())),
    );
    ServiceConfig::resolve(service, BTreeMap::new(), env).unwrap()
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let nats_prefix = options.nats.then(|| {
            format!(
                "T{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase()
            )
        });
        let transport = match &nats_prefix {
            Some(prefix) => {
                let url = std::env::var("COMB_TEST_NATS_URL")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
                Transport::Nats(Box::new(
                    comb_kit::nats::Nats::connect(&url, prefix).await.unwrap(),
                ))
            }
            None => Transport::Embedded,
        };
        let mut producers = Vec::new();
        let mut databases = Vec::new();
        for _ in 0..4 {
            databases.push(database(&options).await);
        }
        let store = comb_catalog::open_store(&config("catalog", &databases[0], &[]))
            .await
            .unwrap();
        let catalog_store = store.clone();
        producers.push((store.database().clone(), "catalog"));
        let catalog = TestServer::start(comb_catalog::routes(store)).await;

        let users_database = database(&options).await;
        let admin = [
            ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("COMB_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ];
        let users_api = comb_users::open(&config("users", &users_database, &admin))
            .await
            .unwrap();
        producers.push((users_api.store().database().clone(), "users"));
        let users = TestServer::start(comb_users::routes(users_api)).await;

        let cart_config = config(
            "cart",
            &databases[1],
            &[("COMB_UPSTREAM_CATALOG", catalog.url())],
        );
        let cart = TestServer::start(comb_cart::routes(
            comb_cart::open(&cart_config).await.unwrap(),
        ))
        .await;

        let inventory_database = database(&options).await;
        let inventory_config = config(
            "inventory",
            &inventory_database,
            &[("COMB_UPSTREAM_CATALOG", catalog.url())],
        );
        let inventory_store = comb_inventory::open_store(&inventory_config).await.unwrap();
        producers.push((inventory_store.database().clone(), "inventory"));
        let inventory_api = comb_inventory::api::InventoryApi::new(
            inventory_store.clone(),
            std::time::Duration::from_secs(600),
        );
        let inventory =
            TestServer::start(comb_inventory::routes(inventory_api, &inventory_store)).await;

        let payments_database = database(&options).await;
        let payments_config = config("payments", &payments_database, &[]);
        let payments_api = comb_payments::open(&payments_config).await.unwrap();
        producers.push((payments_api.store().database().clone(), "payments"));
        let payments = TestServer::start(comb_payments::routes(payments_api)).await;

        // Shipped at once, so the shipment's announcement follows its order's confirmation.
        let shipping_config = config(
            "shipping",
            &databases[2],
            &[("COMB_SHIP_AFTER_SECS", "0".to_owned())],
        );
        let shipping_api = comb_shipping::open(&shipping_config).await.unwrap();
        producers.push((shipping_api.database().clone(), "shipping"));
        tokio::spawn(comb_shipping::announce_shipments(
            shipping_api.database().clone(),
            shipping_api.clock(),
        ));
        let shipping = TestServer::start(comb_shipping::routes(shipping_api)).await;

        let orders_config = config(
            "orders",
            &databases[3],
            &[
                ("COMB_UPSTREAM_CART", cart.url()),
                ("COMB_UPSTREAM_INVENTORY", inventory.url()),
                ("COMB_UPSTREAM_PAYMENTS", payments.url()),
                ("COMB_UPSTREAM_SHIPPING", shipping.url()),
                (
                    "COMB_SAGA_DEADLINE_MS",
                    options.saga_deadline_ms.to_string(),
                ),
                (
                    "COMB_CHECKOUT_WAIT_MS",
                    options.checkout_wait_ms.to_string(),
                ),
                ("COMB_CALL_TIMEOUT_MS", "2000".to_owned()),
            ],
        );
        let (orders_api, saga, order_store) = comb_orders::open(&orders_config).await.unwrap();
        let orders = TestServer::start(comb_orders::routes(orders_api, &order_store)).await;
        producers.push((order_store.database().clone(), "orders"));
        tokio::spawn(comb_orders::resume_sagas(
            order_store,
            saga,
            std::time::Duration::from_secs(15),
        ));

        let notifications_db = database(&options).await;
        let notifications_config = config(
            "notifications",
            &notifications_db,
            &[
                ("COMB_UPSTREAM_ORDERS", orders.url()),
                ("COMB_UPSTREAM_USERS", users.url()),
                ("COMB_UPSTREAM_SHIPPING", shipping.url()),
            ],
        );
        let notifications_database = comb_notifications::open(&notifications_config)
            .await
            .unwrap();
        let notifications =
            TestServer::start(comb_notifications::routes(notifications_database.clone())).await;
        let recommendations_db = database(&options).await;
        let recommendations_config = config(
            "recommendations",
            &recommendations_db,
            &[("COMB_UPSTREAM_ORDERS", orders.url())],
        );
        let recommendations_database = comb_recommendations::open(&recommendations_config)
            .await
            .unwrap();
        let recommendations = TestServer::start(comb_recommendations::routes(
            recommendations_database.clone(),
        ))
        .await;
        let reports_db = database(&options).await;
        let reports_config = config(
            "reports",
            &reports_db,
            &[("COMB_UPSTREAM_ORDERS", orders.url())],
        );
        let reports_database = comb_reports::open(&reports_config).await.unwrap();
        let reports = TestServer::start(comb_reports::routes(reports_database.clone())).await;
        let reviews_db = database(&options).await;
        let reviews_config = config(
            "reviews",
            &reviews_db,
            &[("COMB_UPSTREAM_ORDERS", orders.url())],
        );
        let reviews_database = comb_reviews::open(&reviews_config).await.unwrap();
        producers.push((reviews_database.clone(), "reviews"));
        let reviews = TestServer::start(comb_reviews::routes(reviews_database.clone())).await;
        let catalog_config = config(
            "catalog",
            &databases[0],
            &[("COMB_UPSTREAM_REVIEWS", reviews.url())],
        );

        let gateway = gateway_with(
            &Upstreams {
                catalog: catalog.url(),
                users: users.url(),
                cart: cart.url(),
                inventory: inventory.url(),
                orders: orders.url(),
                notifications: notifications.url(),
                recommendations: recommendations.url(),
                reports: reports.url(),
                reviews: reviews.url(),
            },
            2_000,
            &options
                .checkouts_per_account
                .map(|n| ("COMB_CHECKOUTS_PER_ACCOUNT", n.to_string()))
                .into_iter()
                .collect::<Vec<_>>(),
        )
        .await;
        let mut system = Self {
            gateway,
            catalog,
            cart,
            users,
            inventory,
            payments,
            shipping,
            orders,
            http: reqwest::Client::new(),
            users_database,
            inventory_database,
            payments_database,
            payments_config,
            notifications,
            recommendations,
            recommendations_config,
            recommendations_database,
            reports,
            reports_config,
            reports_database,
            reviews,
            reviews_config,
            reviews_database,
            catalog_store,
            inventory_config,
            inventory_store,
            catalog_config,
            notifications_database,
            notifications_config,
            consumers: Vec::new(),
            transport,
            nats_prefix,
            producers,
            relays: Vec::new(),
            orders_config,
            _databases: {
                let mut all = databases;
                all.push(notifications_db);
                all.push(recommendations_db);
                all.push(reports_db);
                all.push(reviews_db);
                all
            },
        };
        system.start_producers();
        system.start_consumers().await;
        system
    }

    /// The services behind the gateway, for another gateway in front of them.
    pub fn upstreams(&self) -> Upstreams {
        Upstreams {
            catalog: self.catalog.url(),
            users: self.users.url(),
            cart: self.cart.url(),
            inventory: self.inventory.url(),
            orders: self.orders.url(),
            notifications: self.notifications.url(),
            recommendations: self.recommendations.url(),
            reports: self.reports.url(),
            reviews: self.reviews.url(),
        }
    }

    /// With NATS, starts relaying the producers' outboxes (the embedded feeds need nothing).
    pub fn start_producers(&mut self) {
        if let Transport::Nats(nats) = &self.transport {
            for (db, producer) in &self.producers {
                self.relays.push(tokio::spawn(
                    nats.clone().relay(db.clone(), (*producer).to_owned()),
                ));
            }
        }
    }

    /// Makes notifications and reports forget how far they have read, so every event
    /// reaches them again: positions with the embedded feeds, durable consumers with NATS.
    pub async fn forget_positions(&mut self) {
        for db in [&self.notifications_database, &self.reports_database] {
            sql::query("DELETE FROM feed_positions")
                .execute(db)
                .await
                .unwrap();
        }
        if let Some(prefix) = &self.nats_prefix {
            let url = std::env::var("COMB_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
            let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            for (consumer, producers) in [
                ("notifications", &["orders", "shipping", "users"][..]),
                ("reports", &["orders"][..]),
            ] {
                for producer in producers {
                    let stream = comb_kit::nats::stream_name(prefix, producer);
                    jetstream
                        .delete_consumer_from_stream(consumer, stream)
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// Stops the relays, as if the producers had died before their events left.
    pub async fn stop_producers(&mut self) {
        for relay in self.relays.drain(..) {
            relay.abort();
            let _ = relay.await;
        }
    }

    /// Starts notifications, recommendations and reports reading their feeds.
    pub async fn start_consumers(&mut self) {
        let transport = &self.transport;
        let consumers = comb_notifications::consumers(
            &self.notifications_config,
            &self.notifications_database,
            transport,
        )
        .await
        .unwrap();
        self.consumers = consumers
            .into_iter()
            .map(|consumer| tokio::spawn(consumer.run()))
            .collect();
        let recommendations = comb_recommendations::consumer(
            &self.recommendations_config,
            &self.recommendations_database,
            transport,
        )
        .await
        .unwrap();
        self.consumers.push(tokio::spawn(recommendations.run()));
        let reports =
            comb_reports::consumer(&self.reports_config, &self.reports_database, transport)
                .await
                .unwrap();
        self.consumers.push(tokio::spawn(reports.run()));
        let reviews =
            comb_reviews::consumer(&self.reviews_config, &self.reviews_database, transport)
                .await
                .unwrap();
        self.consumers.push(tokio::spawn(reviews.run()));
        let ratings =
            comb_catalog::ratings_consumer(&self.catalog_config, &self.catalog_store, transport)
                .await
                .unwrap();
        self.consumers.push(tokio::spawn(ratings.run()));
        let new_products =
            comb_inventory::new_products(&self.inventory_config, &self.inventory_store, transport)
                .await
                .unwrap();
        self.consumers.push(tokio::spawn(new_products.run()));
    }

    /// Stops the feed readers (as if their instances were down).
    pub async fn stop_consumers(&mut self) {
        for consumer in self.consumers.drain(..) {
            consumer.abort();
            let _ = consumer.await;
        }
    }

    /// Stops serving the orders API and feed (if it still is), then serves them again
    /// where they were, from the same database (sagas under way keep running in-process).
    pub async fn restart_orders(&mut self) {
        self.orders.stop().await;
        let (api, _saga, store) = comb_orders::open(&self.orders_config).await.unwrap();
        self.orders =
            TestServer::start_on(self.orders.addr, comb_orders::routes(api, &store)).await;
        self.start_producers();
    }

    /// Starts payments again where it was, with the same database.
    pub async fn restart_payments(&mut self) {
        let api = comb_payments::open(&self.payments_config).await.unwrap();
        self.payments = TestServer::start_on(self.payments.addr, comb_payments::routes(api)).await;
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
    pub inventory: String,
    pub orders: String,
    pub notifications: String,
    pub recommendations: String,
    pub reports: String,
    pub reviews: String,
}

impl Upstreams {
    /// Every service at one address.
    pub fn all_at(url: &str) -> Self {
        Self {
            catalog: url.to_owned(),
            users: url.to_owned(),
            cart: url.to_owned(),
            inventory: url.to_owned(),
            orders: url.to_owned(),
            notifications: url.to_owned(),
            recommendations: url.to_owned(),
            reports: url.to_owned(),
            reviews: url.to_owned(),
        }
    }
}

/// A gateway in front of these services, with calls failing after `call_timeout_ms`.
pub async fn gateway_for(upstreams: &Upstreams, call_timeout_ms: u64) -> TestServer {
    gateway_with(upstreams, call_timeout_ms, &[]).await
}

/// The same, with more settings.
pub async fn gateway_with(
    upstreams: &Upstreams,
    call_timeout_ms: u64,
    extra: &[(&str, String)],
) -> TestServer {
    let mut env = vec![
        ("COMB_UPSTREAM_CATALOG", upstreams.catalog.clone()),
        ("COMB_UPSTREAM_USERS", upstreams.users.clone()),
        ("COMB_UPSTREAM_CART", upstreams.cart.clone()),
        ("COMB_UPSTREAM_INVENTORY", upstreams.inventory.clone()),
        ("COMB_UPSTREAM_ORDERS", upstreams.orders.clone()),
        (
            "COMB_UPSTREAM_NOTIFICATIONS",
            upstreams.notifications.clone(),
        ),
        (
            "COMB_UPSTREAM_RECOMMENDATIONS",
            upstreams.recommendations.clone(),
        ),
        ("COMB_UPSTREAM_REPORTS", upstreams.reports.clone()),
        ("COMB_UPSTREAM_REVIEWS", upstreams.reviews.clone()),
        ("COMB_CALL_TIMEOUT_MS", call_timeout_ms.to_string()),
    ];
    env.extend(extra.iter().cloned());
    let config = ServiceConfig::resolve("gateway", BTreeMap::new(), env).unwrap();
    let state = GatewayState::connect(&config).unwrap();
    TestServer::start(comb_gateway::routes(state)).await
}

/// Whether NATS answers (CI=true requires it); tests over NATS return early when not.
pub async fn nats_reachable() -> bool {
    let url =
        std::env::var("COMB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    match async_nats::connect(&url).await {
        Ok(_) => true,
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping a test over NATS: cannot reach {url} ({error})");
            false
        }
        Err(error) => panic!("CI=true requires NATS at {url}: {error}"),
    }
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
