//! Test support for comb: throwaway databases (a SQLite file in a temporary directory, or a
//! fresh PostgreSQL database dropped afterwards) and services served on random ports.
//!
//! PostgreSQL tests run against `COMB_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Where no server answers they are skipped
//! with a message, except under `CI=true`, where a missing server fails the test.
//!
//! `TEST_LOG=1` (or a filter such as `TEST_LOG=comb_orders=debug`) shows the log lines of
//! the services a test starts, as text in the test's own output; without it they are
//! silent.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::str::FromStr;

use axum::Router;
use comb_kit::server::{Readiness, Server, app};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use tokio::sync::oneshot;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
    postgres: Option<(PgConnectOptions, String)>,
}

impl TestDatabase {
    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = comb_kit::config::sqlite_url(&dir.path().join("test.db"));
        Self {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty PostgreSQL database, or `None` (with the reason printed) when no server
    /// answers outside CI.
    pub async fn postgres() -> Option<Self> {
        let admin_url =
            std::env::var("COMB_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let admin = PgConnectOptions::from_str(&admin_url)
            .expect("COMB_TEST_POSTGRES_URL is a PostgreSQL URL");
        let mut connection = match admin.connect().await {
            Ok(connection) => connection,
            Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "skipping a PostgreSQL test: cannot connect to {admin_url} ({error}); set COMB_TEST_POSTGRES_URL"
                );
                return None;
            }
            Err(error) => panic!("CI=true requires PostgreSQL at {admin_url}: {error}"),
        };
        let name = format!("comb_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        let _ = connection.close().await;
        let url = format!(
            "{}/{name}",
            admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(base, _)| base)
        );
        Some(Self {
            url,
            _dir: None,
            postgres: Some((admin, name)),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any runtime that could be borrowed, so drop the database from
        // a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut connection = admin.connect().await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database; it is left behind");
        }
    }
}

/// A service's ports bound before it is built, so the services that call it can be told
/// its address first (the system is wired on port 0, with no port chosen and let go).
pub struct TestListener {
    server: Server,
    admin: Server,
}

impl TestListener {
    /// A random local port, and another for the admin listener.
    pub async fn bind() -> Self {
        Self::bind_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// `addr` (a restart where its callers expect it), and a random admin port.
    pub async fn bind_on(addr: SocketAddr) -> Self {
        show_logs_when_asked();
        let server = Server::bind(addr).await.expect("bind");
        let admin = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        Self { server, admin }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Serves `routes` with the kit's endpoints, ready at once.
    pub fn serve(self, routes: Router) -> TestServer {
        let Self { server, admin } = self;
        let addr = server.local_addr();
        let admin_addr = admin.local_addr();
        let readiness = Readiness::default();
        readiness.set(true);
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app(routes, readiness.clone());
        let admin_app = comb_kit::server::admin_app(readiness.clone(), None);
        let serving = tokio::spawn(async move {
            let (admin_stop, admin_stopped) = oneshot::channel::<()>();
            let admin_serving = tokio::spawn(admin.run(
                admin_app,
                readiness.clone(),
                async move {
                    let _ = admin_stopped.await;
                },
                std::time::Duration::from_millis(100),
            ));
            let stop = async move {
                let _ = stopped.await;
            };
            let _ = server
                .run(app, readiness, stop, std::time::Duration::from_secs(1))
                .await;
            let _ = admin_stop.send(());
            let _ = admin_serving.await;
        });
        TestServer {
            addr,
            admin_addr,
            stop: Some(stop),
            serving: Some(serving),
        }
    }
}

/// A service's routes served with the kit's endpoints on a random local port, stopped
/// when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener: `/metrics` and the probes.
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(routes: Router) -> Self {
        TestListener::bind().await.serve(routes)
    }

    /// Serves on a given address: a service restarted where its callers expect it.
    pub async fn start_on(addr: SocketAddr, routes: Router) -> Self {
        TestListener::bind_on(addr).await.serve(routes)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin listener's base URL (`/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops serving and waits until it has: the port then refuses connections, and
    /// connections already open are closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A producer reduced to its event feed: an outbox in a throwaway SQLite database, served
/// on a random port as the producer's instances serve it, for consumers under test.
pub struct TestFeed {
    pub db: comb_kit::storage::Database,
    pub server: TestServer,
    _database: TestDatabase,
}

impl TestFeed {
    /// The feed of `producer` (e.g. "orders"), empty.
    pub async fn start(producer: &str) -> Self {
        let database = TestDatabase::sqlite();
        let only_the_kits_tables = comb_kit::storage::Migrations {
            sqlite: &[],
            postgres: &[],
        };
        let db = comb_kit::storage::Database::open(&database.url, &only_the_kits_tables)
            .await
            .unwrap();
        let routes = comb_kit::events::feed_routes(Router::new(), &db, producer);
        Self {
            server: TestServer::start(routes).await,
            db,
            _database: database,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Publishes `event` as a producer does: in a transaction of its own.
    pub async fn publish(&self, event: &comb_kit::events::Event) {
        let mut tx = self.db.begin().await.unwrap();
        comb_kit::events::publish(&self.db, &mut tx, event)
            .await
            .unwrap();
        comb_kit::events::commit(&self.db, tx).await.unwrap();
    }
}

/// A service built as `comb serve` builds it (its `build` given these settings), served on
/// a random port with its background tasks running; both stop when it is dropped.
pub struct TestService {
    pub server: TestServer,
    _tasks: comb_kit::service::Tasks,
}

impl TestService {
    pub async fn start(service: comb_kit::service::Service) -> Self {
        let (routes, tasks) = service.start();
        Self {
            server: TestServer::start(routes).await,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// `settings` (environment form, `COMB_…`) resolved for `service`.
pub fn config(service: &str, settings: &[(&str, String)]) -> comb_kit::ServiceConfig {
    comb_kit::ServiceConfig::resolve(
        service,
        std::collections::BTreeMap::new(),
        settings.iter().map(|(key, value)| (*key, value.clone())),
    )
    .unwrap()
}

/// The OrderConfirmed event of order `order_id`, placed by `owner`, one of each product.
pub fn order_confirmed(order_id: &str, owner: &str, products: &[&str]) -> comb_kit::events::Event {
    use comb_contracts::events::{ORDER_CONFIRMED, OrderConfirmed, OrderLine};
    let lines: Vec<OrderLine> = products
        .iter()
        .map(|product| OrderLine {
            digital: false,
            product_id: (*product).into(),
            sku: format!("SKU-{product}").into(),
            title: format!("Product {product}"),
            quantity: 1.into(),
            unit_price_minor: 1_000,
            line_total_minor: 1_000,
        })
        .collect();
    let total = 1_000 * i64::try_from(lines.len()).unwrap();
    let order = OrderConfirmed {
        order_id: order_id.into(),
        owner: owner.into(),
        email: format!("{owner}@example.com"),
        lines,
        subtotal_minor: total,
        shipping_minor: 0,
        total_minor: total,
        currency: "USD".into(),
        tracking_id: format!("TRK-{order_id}"),
        placed_at: "2026-01-01T00:00:00Z".into(),
    };
    comb_kit::events::Event::new("orders", ORDER_CONFIRMED, order_id, &order).unwrap()
}

/// With `TEST_LOG` set, the services' log lines go to the test's output (captured by the
/// test harness like its prints, shown when a test fails or with `--nocapture`): `1` or
/// `true` for everything at info, else an `EnvFilter` directive. Installed once per test
/// binary, by the first server a test starts.
pub fn show_logs_when_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(wanted) = std::env::var("TEST_LOG") else {
            return;
        };
        let filter = match wanted.as_str() {
            "" | "0" | "false" => return,
            "1" | "true" => "info".to_owned(),
            directive => directive.to_owned(),
        };
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber already installed (a test that set its own) wins.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

impl TestService {
    /// A gRPC channel to the service.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// Runs each `$test` (an `async fn(TestDatabase)` named for the behaviour it checks) once
/// on SQLite and once on PostgreSQL, as the tests `$test::on_sqlite` and `$test::on_postgres`
/// (the latter skipped, saying why, where no PostgreSQL answers, except under `CI=true`).
#[macro_export]
macro_rules! on_each_backend {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$test($crate::TestDatabase::sqlite()).await;
                }

                #[tokio::test]
                async fn on_postgres() {
                    if let Some(database) = $crate::TestDatabase::postgres().await {
                        super::$test(database).await;
                    }
                }
            }
        )+
    };
}

/// An S3-compatible bucket for a test: moto's server (`pip install 'moto[server]'`) on a
/// random port with one empty bucket, stopped when dropped. `None` (and why) where moto is
/// not installed, except under `CI=true`, where it must be.
pub struct TestBucket {
    pub endpoint: String,
    pub bucket: String,
    server: std::process::Child,
}

impl TestBucket {
    pub async fn start() -> Option<Self> {
        // moto takes its port from the command line: find a free one first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let server = match std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(server) => server,
            Err(error) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "moto_server is required on CI (.ci/run installs moto[server]): {error}"
                );
                eprintln!("no moto_server here ({error}): this S3 test skips");
                return None;
            }
        };
        let bucket = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: format!("comb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            server,
        };
        // Ready once it answers; the bucket is made with a plain PUT, which moto takes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if bucket.put_bucket().await {
                return Some(bucket);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn put_bucket(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.endpoint.trim_start_matches("http://");
        let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
            return false;
        };
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
    }

    /// `s3://BUCKET/prefix`, for `media_store`.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
