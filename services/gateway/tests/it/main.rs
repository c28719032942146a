//! The gateway over HTTP in front of real services on random ports: the REST contract,
//! its errors, authentication, and what happens when a service is down or stuck.
//!
//! Every service is built by its own `build`, as `comb serve` builds it, on a port bound
//! before anything is built; a test switches a service off and on whole
//! ([`Instance::stop`], [`Instance::restart`]) or only its background work
//! ([`System::stop_consumers`], [`System::stop_producers`]).

#![allow(clippy::unwrap_used)]

/// For each `test(options: Options)`, the tests `test::on_sqlite` (the embedded backends)
/// and `test::on_postgres_over_nats` (the scale-out ones, skipped with a note where NATS
/// does not answer outside CI). A test adds what it needs to the options it is given.
macro_rules! on_each_system {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$test($crate::Options::default()).await;
                }

                #[tokio::test]
                async fn on_postgres_over_nats() {
                    if $crate::nats_reachable().await {
                        super::$test($crate::Options::scale_out()).await;
                    }
                }
            }
        )+
    };
}

mod accounts;
mod cart;
mod catalog_down;
mod checkout;
mod contract;
mod downloads;
mod events;
mod kept;
mod matrix;
mod media;
mod reviews;
mod storefront;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use comb_kit::ServiceConfig;
use comb_kit::service::{Service, Tasks};
use comb_kit::storage::Database;
use comb_kit::storage::sql;
use comb_testkit::{TestDatabase, TestListener, TestServer};

pub const ADMIN_EMAIL: &str = "admin@comb.example";
pub const ADMIN_PASSWORD: &str = "admin password for tests";

/// How a test wants the system set up.
#[derive(Debug, Clone)]
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
    /// How long media's signed download links last, when a test needs them to expire.
    pub download_link_seconds: Option<u64>,
    /// Media's files in this S3-compatible bucket instead of a directory.
    pub bucket: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            saga_deadline_ms: 20_000,
            checkout_wait_ms: 2_000,
            nats: false,
            postgres: false,
            checkouts_per_account: None,
            download_link_seconds: None,
            bucket: None,
        }
    }
}

impl Options {
    /// Every service on PostgreSQL, events through NATS JetStream.
    pub fn scale_out() -> Self {
        Self {
            nats: true,
            postgres: true,
            ..Self::default()
        }
    }
}

type Built = Pin<Box<dyn Future<Output = anyhow::Result<Service>> + Send>>;

/// The service `name` as `comb serve` builds it.
fn build(name: &str, config: ServiceConfig) -> Built {
    match name {
        "catalog" => Box::pin(comb_catalog::build(config)),
        "users" => Box::pin(comb_users::build(config)),
        "cart" => Box::pin(comb_cart::build(config)),
        "inventory" => Box::pin(comb_inventory::build(config)),
        "payments" => Box::pin(comb_payments::build(config)),
        "shipping" => Box::pin(comb_shipping::build(config)),
        "orders" => Box::pin(comb_orders::build(config)),
        "notifications" => Box::pin(comb_notifications::build(config)),
        "recommendations" => Box::pin(comb_recommendations::build(config)),
        "reports" => Box::pin(comb_reports::build(config)),
        "reviews" => Box::pin(comb_reviews::build(config)),
        "media" => Box::pin(comb_media::build(config)),
        "media-worker" => Box::pin(comb_media_worker::build(config)),
        "gateway" => Box::pin(comb_gateway::build(config)),
        other => panic!("no service is called {other}"),
    }
}

/// One instance of a service: its routes served and its background work running.
pub struct Instance {
    name: &'static str,
    config: ServiceConfig,
    server: TestServer,
    tasks: Option<Tasks>,
}

impl Instance {
    /// Builds the service and serves it on the listener already bound for it.
    async fn start(name: &'static str, config: ServiceConfig, listener: TestListener) -> Self {
        let (routes, tasks) = build(name, config.clone()).await.unwrap().start();
        Self {
            name,
            config,
            server: listener.serve(routes),
            tasks: Some(tasks),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The admin listener's base URL (`/metrics`).
    pub fn admin_url(&self) -> String {
        self.server.admin_url()
    }

    /// The instance goes away: its port refuses connections and its background work stops.
    pub async fn stop(&mut self) {
        self.server.stop().await;
        self.stop_background().await;
    }

    /// A new instance in its place (the same settings, database and address), as after a
    /// crash and restart.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TestListener::bind_on(self.server.addr).await;
        *self = Self::start(self.name, self.config.clone(), listener).await;
    }

    /// Stops the background work only (consumers, relay, sweeps); the routes still answer.
    pub async fn stop_background(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            tasks.stop(comb_kit::service::TASKS_STOP_DEADLINE).await;
        }
    }

    /// Starts the background work again, from a fresh build of the service.
    pub async fn start_background(&mut self) {
        if self.tasks.is_none() {
            let (_, tasks) = build(self.name, self.config.clone()).await.unwrap().start();
            self.tasks = Some(tasks);
        }
    }
}

/// The services that read other services' events.
const CONSUMERS: [&str; 6] = [
    "notifications",
    "recommendations",
    "reports",
    "reviews",
    "catalog",
    "inventory",
];

/// The services that publish events.
const PRODUCERS: [&str; 7] = [
    "catalog",
    "users",
    "inventory",
    "payments",
    "shipping",
    "orders",
    "reviews",
];

/// Every service, each with its own database, on random ports, and a gateway in front.
pub struct System {
    pub gateway: Instance,
    pub catalog: Instance,
    pub cart: Instance,
    pub users: Instance,
    pub inventory: Instance,
    pub payments: Instance,
    pub shipping: Instance,
    pub orders: Instance,
    pub notifications: Instance,
    pub recommendations: Instance,
    pub reports: Instance,
    pub reviews: Instance,
    pub media: Instance,
    pub media_worker: Instance,
    pub http: reqwest::Client,
    /// Media's blob store and the workers' scratch space.
    pub media_dir: std::sync::Arc<tempfile::TempDir>,
    nats_prefix: Option<String>,
    databases: BTreeMap<&'static str, TestDatabase>,
    /// Held while this system uses PostgreSQL (see [`POSTGRES_SYSTEMS`]).
    _postgres_turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// PostgreSQL systems run one at a time: each of the 13 services' pools may hold 5
/// connections, and two systems at once could take more than the server's 100.
static POSTGRES_SYSTEMS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));

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

fn nats_url() -> String {
    std::env::var("COMB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Who calls whom, as the topology wires it.
const CALLS: [(&str, &[&str]); 14] = [
    ("catalog", &["reviews", "media"]),
    ("users", &[]),
    ("cart", &["catalog"]),
    ("inventory", &["catalog"]),
    ("payments", &[]),
    ("shipping", &[]),
    ("orders", &["cart", "inventory", "payments", "shipping"]),
    ("notifications", &["orders", "users", "shipping", "media"]),
    ("recommendations", &["orders"]),
    ("reports", &["orders"]),
    ("reviews", &["orders"]),
    ("media", &["catalog", "orders"]),
    ("media-worker", &["media"]),
    (
        "gateway",
        &[
            "catalog",
            "users",
            "cart",
            "inventory",
            "orders",
            "notifications",
            "recommendations",
            "reports",
            "reviews",
            "media",
        ],
    ),
];

impl System {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let postgres_turn = if options.postgres {
            Some(
                std::sync::Arc::clone(&POSTGRES_SYSTEMS)
                    .acquire_owned()
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        let nats_prefix = options.nats.then(|| {
            format!(
                "T{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase()
            )
        });
        let mut listeners = BTreeMap::new();
        for (name, _) in CALLS {
            listeners.insert(name, TestListener::bind().await);
        }
        let urls: BTreeMap<&str, String> = listeners
            .iter()
            .map(|(name, listener)| (*name, listener.url()))
            .collect();
        let mut databases = BTreeMap::new();
        let mut instances = BTreeMap::new();
        let media_dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        for (name, calls) in CALLS {
            let mut settings: Vec<(String, String)> = calls
                .iter()
                .map(|callee| {
                    (
                        format!("COMB_UPSTREAM_{}", callee.to_uppercase()),
                        urls[callee].clone(),
                    )
                })
                .collect();
            settings.extend(
                Self::settings_of(name, &options)
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value)),
            );
            if name.starts_with("media") {
                let directory = media_dir.path();
                let store = match &options.bucket {
                    Some((endpoint, location)) => {
                        settings.push(("COMB_MEDIA_S3_ENDPOINT".into(), endpoint.clone()));
                        settings.push(("COMB_MEDIA_S3_ACCESS_KEY_ID".into(), "test".into()));
                        settings.push(("COMB_MEDIA_S3_SECRET_ACCESS_KEY".into(), "test".into()));
                        location.clone()
                    }
                    None => directory.join("blobs").display().to_string(),
                };
                settings.push(("COMB_MEDIA_STORE".into(), store));
                settings.push((
                    "COMB_DATA_DIR".into(),
                    directory.join(name).display().to_string(),
                ));
            }
            if let Some(prefix) = &nats_prefix {
                settings.push(("COMB_EVENTS_TRANSPORT".into(), "nats".into()));
                settings.push(("COMB_NATS_URL".into(), nats_url()));
                settings.push(("COMB_NATS_PREFIX".into(), prefix.clone()));
            }
            let settings: Vec<(&str, String)> = settings
                .iter()
                .map(|(key, value)| (key.as_str(), value.clone()))
                .collect();
            let database = database(&options).await;
            let service_config = config(name, &database, &settings);
            databases.insert(name, database);
            let listener = listeners.remove(name).unwrap();
            instances.insert(name, Instance::start(name, service_config, listener).await);
        }
        let mut take = |name: &str| instances.remove(name).unwrap();
        Self {
            gateway: take("gateway"),
            catalog: take("catalog"),
            cart: take("cart"),
            users: take("users"),
            inventory: take("inventory"),
            payments: take("payments"),
            shipping: take("shipping"),
            orders: take("orders"),
            notifications: take("notifications"),
            recommendations: take("recommendations"),
            reports: take("reports"),
            reviews: take("reviews"),
            media: take("media"),
            media_worker: take("media-worker"),
            http: reqwest::Client::new(),
            media_dir,
            nats_prefix,
            databases,
            _postgres_turn: postgres_turn,
        }
    }

    /// The settings a service gets besides its upstreams and transport.
    fn settings_of(name: &str, options: &Options) -> Vec<(&'static str, String)> {
        match name {
            "users" => vec![
                ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
                ("COMB_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ],
            // Shipped at once, so the shipment's announcement follows its order's
            // confirmation.
            "shipping" => vec![("COMB_SHIP_AFTER_SECS", "0".to_owned())],
            "orders" => vec![
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
            // Failed jobs come back soon, and a worker that vanished loses its lease soon.
            "media" => {
                let mut settings = vec![("COMB_MEDIA_RETRY_BACKOFF_MS", "200".to_owned())];
                if let Some(seconds) = options.download_link_seconds {
                    settings.push(("COMB_MEDIA_DOWNLOAD_LINK_SECONDS", seconds.to_string()));
                }
                settings
            }
            "media-worker" => vec![
                ("COMB_MEDIA_LEASE_MS", "1500".to_owned()),
                ("COMB_MEDIA_IDLE_POLL_MS", "100".to_owned()),
            ],
            "gateway" => {
                let mut settings = vec![
                    ("COMB_CALL_TIMEOUT_MS", "2000".to_owned()),
                    (
                        "COMB_MEDIA_MAX_UPLOAD_BYTES",
                        (32 * 1024 * 1024).to_string(),
                    ),
                ];
                if let Some(n) = options.checkouts_per_account {
                    settings.push(("COMB_CHECKOUTS_PER_ACCOUNT", n.to_string()));
                }
                settings
            }
            _ => Vec::new(),
        }
    }

    fn instance(&mut self, name: &str) -> &mut Instance {
        match name {
            "catalog" => &mut self.catalog,
            "users" => &mut self.users,
            "cart" => &mut self.cart,
            "inventory" => &mut self.inventory,
            "payments" => &mut self.payments,
            "shipping" => &mut self.shipping,
            "orders" => &mut self.orders,
            "notifications" => &mut self.notifications,
            "recommendations" => &mut self.recommendations,
            "reports" => &mut self.reports,
            "reviews" => &mut self.reviews,
            "media" => &mut self.media,
            "media-worker" => &mut self.media_worker,
            "gateway" => &mut self.gateway,
            other => panic!("no service is called {other}"),
        }
    }

    /// The database of service `name`.
    pub fn database(&self, name: &str) -> &TestDatabase {
        &self.databases[name]
    }

    /// A connection to the database of service `name`, for what a test reads or changes
    /// behind the service's back.
    pub async fn connect(&self, name: &str) -> Database {
        Database::connect(&self.database(name).url).await.unwrap()
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

    /// Stops every reader of events (as if their instances could not reach the feeds).
    pub async fn stop_consumers(&mut self) {
        for name in CONSUMERS {
            self.instance(name).stop_background().await;
        }
    }

    /// Starts the readers of events again, each where it had got to.
    pub async fn start_consumers(&mut self) {
        for name in CONSUMERS {
            self.instance(name).start_background().await;
        }
    }

    /// Stops the producers' background work: with NATS, the relays of their outboxes, as
    /// if the producers had died before their events left.
    pub async fn stop_producers(&mut self) {
        for name in PRODUCERS {
            self.instance(name).stop_background().await;
        }
    }

    /// Makes notifications and reports forget how far they have read, so every event
    /// reaches them again: positions with the embedded feeds, durable consumers with NATS.
    pub async fn forget_positions(&mut self) {
        for name in ["notifications", "reports"] {
            sql::query("DELETE FROM feed_positions")
                .execute(&self.connect(name).await)
                .await
                .unwrap();
        }
        if let Some(prefix) = &self.nats_prefix {
            let jetstream =
                async_nats::jetstream::new(async_nats::connect(&nats_url()).await.unwrap());
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
pub async fn gateway_for(upstreams: &Upstreams, call_timeout_ms: u64) -> Instance {
    gateway_with(upstreams, call_timeout_ms, &[]).await
}

/// The same, with more settings.
pub async fn gateway_with(
    upstreams: &Upstreams,
    call_timeout_ms: u64,
    extra: &[(&str, String)],
) -> Instance {
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
    Instance::start("gateway", config, TestListener::bind().await).await
}

/// Whether NATS answers (CI=true requires it); tests over NATS return early when not.
pub async fn nats_reachable() -> bool {
    let url = nats_url();
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
