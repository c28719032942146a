//! Serving: one port per instance for HTTP and gRPC (HTTP/1.1 and HTTP/2 on the same
//! listener), the kit's `/healthz`, `/readyz` and `/metrics` endpoints, problem+json for
//! unknown routes, and a graceful drain bounded by a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::config::ServiceConfig;
use crate::faults::Faults;
use crate::problem::Problem;
use crate::{shutdown, telemetry};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}; pick another address or stop what uses it")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// Whether the instance should receive traffic: false while starting and while draining.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A bound listener, so the port is known (and can be reported) before serving starts.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `app` until `stop` resolves, then stops accepting, marks the instance not
    /// ready and lets in-flight requests finish for at most `drain_timeout`.
    pub async fn run(
        self,
        app: Router,
        readiness: Readiness,
        stop: impl Future<Output = ()> + Send + 'static,
        drain_timeout: Duration,
    ) -> Result<(), ServerError> {
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let drain_readiness = readiness.clone();
        let draining = Draining::default();
        let app = app.layer(axum::Extension(draining.clone()));
        // Small answers leave at once instead of waiting on the client's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        // Each request knows its peer's address (`ConnectInfo<SocketAddr>`), for limits per
        // client.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.await;
            drain_readiness.set(false);
            draining.start();
            tracing::info!("draining in-flight requests");
            let _ = draining_tx.send(());
        });
        let deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serve => result.map_err(ServerError::Serve),
            () = deadline => {
                tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "drain deadline passed; closing remaining connections");
                Ok(())
            }
        }
    }
}

/// Whether a server has started draining. Every request a server serves carries its
/// server's in its extensions, so a long poll can answer when the drain starts instead of
/// holding it until its deadline.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<tokio::sync::watch::Sender<bool>>);

impl Draining {
    fn start(&self) {
        self.0.send_replace(true);
    }

    /// Resolves when the server starts draining.
    pub async fn started(&self) {
        let mut draining = self.0.subscribe();
        let _ = draining.wait_for(|draining| *draining).await;
    }

    /// The draining of the server that received a request with these extensions (one that
    /// never starts for a request served otherwise, as in tests).
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions.get::<Self>().cloned().unwrap_or_default()
    }
}

/// Serves a service's routes on its configured address until SIGTERM/SIGINT (or until its
/// launcher goes away), reporting the bound address in the log and readiness once bound.
pub async fn serve(config: &ServiceConfig, routes: Router) -> Result<(), ServerError> {
    let server = Server::bind(config.listen).await?;
    let fault_token = fault_token(config);
    let faults = fault_token.is_some().then(Faults::default);
    let mut routes = routes;
    if let Some(faults) = &faults {
        routes = crate::faults::inject(routes, faults.clone());
    }
    // The fault control stays reachable however loaded the instance is.
    routes = crate::overload::limit_in_flight(routes, config.max_in_flight);
    if let (Some(faults), Some(token)) = (faults, fault_token) {
        routes = routes.merge(crate::faults::control_routes(faults, token));
    }
    let readiness = Readiness::default();
    let app = app(routes, readiness.clone());
    tracing::info!(addr = %server.local_addr(), "listening");
    readiness.set(true);
    let parent_pid = config.parent_pid;
    let stop = async move {
        let reason = shutdown::stop_requested(parent_pid).await;
        tracing::info!(?reason, "stopping");
    };
    let served = server.run(app, readiness, stop, config.drain_timeout).await;
    telemetry::flush_traces().await;
    served
}

/// The token that unlocks fault injection, when the instance takes faults at all: the
/// `fault_injection` setting needs a `fault_token` of at least
/// [`crate::faults::MIN_TOKEN_LEN`] characters, or there is no fault endpoint.
fn fault_token(config: &ServiceConfig) -> Option<&str> {
    if !config.fault_injection {
        return None;
    }
    match config.setting("fault_token") {
        Some(token) if token.len() >= crate::faults::MIN_TOKEN_LEN => Some(token),
        _ => {
            tracing::warn!(
                "fault_injection is on but fault_token (COMB_FAULT_TOKEN) is missing or shorter than {} characters: faults cannot be injected",
                crate::faults::MIN_TOKEN_LEN
            );
            None
        }
    }
}

/// Wraps a service's routes with the kit's endpoints and middleware: `/healthz`
/// (liveness), `/readyz` (readiness), `/metrics`, RED metrics and an access log line for
/// every request, an `x-request-id` on every response (the caller's, or a new one), and
/// problem+json answers for unknown routes and methods.
pub fn app(routes: Router, readiness: Readiness) -> Router {
    // Install the recorder before the first request, or that request is not counted.
    telemetry::metrics_handle();
    let kit_routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness);
    routes
        .merge(kit_routes)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(telemetry::observe))
}

/// Adds a gRPC service (generated by tonic) to a router, on the same port as HTTP.
pub fn add_grpc<S>(router: Router, service: S) -> Router
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(
        &format!("/{}/{{*rpc}}", S::NAME),
        service.map_request(|request: Request| request.map(tonic::body::Body::new)),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics() -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render_metrics(),
    )
        .into_response()
}

async fn unknown_route(request: Request) -> Problem {
    Problem::not_found(format!(
        "there is no route {} {}; see /api/openapi.json for the routes there are",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> Problem {
    Problem::method_not_allowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    async fn call(app: Router, method: &str, path: &str) -> (StatusCode, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let readiness = Readiness::default();
        let app = app(Router::new(), readiness.clone());
        assert_eq!(
            call(app.clone(), "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(call(app.clone(), "GET", "/readyz").await.0, StatusCode::OK);
        assert_eq!(call(app, "GET", "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_problems() {
        let routes = Router::new().route("/things", get(|| async { "things" }));
        let app = app(routes, Readiness::default());
        let response = app
            .clone()
            .oneshot(
                http::Request::get("/nothing")
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert!(
            response.headers().contains_key("x-request-id"),
            "every answer has a request id"
        );
        let (status, body) = call(app.clone(), "GET", "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/problems/not-found"), "{body}");
        let (status, body) = call(app, "DELETE", "/things").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("DELETE is not allowed"), "{body}");
    }

    /// A route that reports when a request has arrived and answers when released.
    fn held_route(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
        Router::new().route(
            "/held",
            get(move || {
                let (entered, release) = (entered.clone(), release.clone());
                async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }
            }),
        )
    }

    async fn raw_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn stopping_finishes_in_flight_requests_and_turns_unready() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let readiness = Readiness::default();
        readiness.set(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = app(
            held_route(entered.clone(), release.clone()),
            readiness.clone(),
        );
        let serving = tokio::spawn(server.run(
            app,
            readiness.clone(),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(30),
        ));
        let in_flight = tokio::spawn(raw_get(addr, "/held"));
        entered.notified().await;
        stop.send(()).expect("server running");
        while readiness.is_ready() {
            tokio::task::yield_now().await;
        }
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no new connections while draining"
        );
        release.notify_one();
        let answer = in_flight.await.expect("task").expect("answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        serving.await.expect("task").expect("clean stop");
    }

    #[tokio::test]
    async fn the_drain_deadline_bounds_a_stuck_request() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let readiness = Readiness::default();
        let app = app(held_route(entered.clone(), release), readiness.clone());
        let serving = tokio::spawn(server.run(
            app,
            readiness,
            async move {
                let _ = stopped.await;
            },
            Duration::from_millis(100),
        ));
        let _stuck = tokio::spawn(raw_get(addr, "/held"));
        entered.notified().await;
        stop.send(()).expect("server running");
        let result = tokio::time::timeout(Duration::from_secs(10), serving).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the server stops at the deadline"
        );
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route() {
        let routes = Router::new().route("/things/{id}", get(|| async { "a thing" }));
        let app = app(routes, Readiness::default());
        call(app.clone(), "GET", "/things/7").await;
        let (status, body) = call(app, "GET", "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.lines()
                .any(|line| line.starts_with("http_server_requests_total")
                    && line.contains("route=\"/things/{id}\"")
                    && line.contains("status=\"200\"")),
            "{body}"
        );
        assert!(
            body.contains("http_server_request_duration_seconds_bucket"),
            "{body}"
        );
    }
}
