//! Serving: one port per instance for HTTP and gRPC (HTTP/1.1 and HTTP/2 on the same
//! listener) with the `/healthz` and `/readyz` probes, a second, admin port for operators
//! (`/metrics`, fault control, the probes), problem+json for unknown routes, timeouts on
//! every connection, and a graceful drain bounded by a deadline.
//!
//! Longer than most files: binding, the connection limits and timeouts, the probes and
//! the drain are one lifecycle sharing the instance's state (the tests are in `tests.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::config::{ServiceConfig, Timeouts};
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
    #[error(
        "cannot write the bound addresses to {path}: {source}; check that its directory exists and is writable"
    )]
    Report {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The addresses an instance bound, as it reports them to its launcher in its
/// `address_file`: the launcher gives port 0, the instance binds a free port and writes
/// it here, and the launcher publishes it. No port is chosen by one process and bound by
/// another, so no other program can take it in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    /// Where callers reach the instance (HTTP and gRPC).
    pub listen: SocketAddr,
    /// The operator endpoints (probes, `/metrics`, fault control).
    pub admin: SocketAddr,
}

impl BoundAddresses {
    /// Writes the file whole, then renames it into place, so a reader never sees half.
    pub fn write(&self, path: &std::path::Path) -> Result<(), ServerError> {
        let report = |source| ServerError::Report {
            path: path.to_owned(),
            source,
        };
        let partial = path.with_extension("partial");
        let text = serde_json::to_string(self).map_err(|error| report(error.into()))?;
        std::fs::write(&partial, text).map_err(report)?;
        std::fs::rename(&partial, path).map_err(report)
    }

    /// What an instance reported in `path`, if it has.
    pub fn read(path: &std::path::Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
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
    timeouts: Timeouts,
    max_body: usize,
}

/// Streams one HTTP/2 connection may have open at once: far more than any caller's
/// concurrency to one instance, few enough that one connection cannot take the instance's
/// whole `max_in_flight`.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// The largest header block a request may send (HTTP/2 header list; HTTP/1's buffer is
/// hyper's ~400 KB but at most 100 headers).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// By default, a request body larger than this is refused (413) rather than read; routes
/// set smaller limits of their own.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::from_listener(listener)
    }

    /// Serves on a listener bound elsewhere.
    pub fn from_listener(listener: TcpListener) -> Result<Self, ServerError> {
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        Ok(Self {
            listener,
            local_addr,
            timeouts: Timeouts::default(),
            max_body: MAX_BODY_BYTES,
        })
    }

    /// The same, with these timeouts instead of the defaults.
    pub fn with_timeouts(self, timeouts: Timeouts) -> Self {
        Self { timeouts, ..self }
    }

    /// The same, reading request bodies of up to `bytes` (16 MiB by default).
    pub fn with_max_body(self, bytes: usize) -> Self {
        Self {
            max_body: bytes,
            ..self
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `app` until `stop` resolves, then stops accepting, marks the instance not
    /// ready and lets in-flight requests finish for at most `drain_timeout`.
    ///
    /// Every connection is bounded by the server's [`Timeouts`]: request headers (and, on
    /// HTTP/1, the idle time between requests), the request body, the whole answer, and an
    /// HTTP/2 connection's idle time; HTTP/2 streams and header lists are limited.
    pub async fn run(
        self,
        app: Router,
        readiness: Readiness,
        stop: impl Future<Output = ()> + Send + 'static,
        drain_timeout: Duration,
    ) -> Result<(), ServerError> {
        let Self {
            listener,
            timeouts,
            max_body,
            ..
        } = self;
        let draining = Draining::default();
        let app = app.layer(axum::Extension(draining.clone())).layer(
            axum::middleware::from_fn_with_state((timeouts, max_body), bound_request),
        );
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .max_headers(MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_pending_accept_reset_streams(Some(32))
            .max_local_error_reset_streams(Some(256));
        let connections = GracefulShutdown::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stop => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: the listener itself is fine; pause instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small answers leave at once instead of waiting on the client's delayed ACK.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
            // Each request knows its peer's address (`ConnectInfo<SocketAddr>`), for
            // limits per client.
            let service =
                app.clone()
                    .map_request(move |mut request: Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        request
                    });
            let (io, activity) = Watched::new(TokioIo::new(stream));
            let connection = builder
                .serve_connection_with_upgrades(io, TowerToHyperService::new(service))
                .into_owned();
            let connection = connections.watch(connection);
            let idle = timeouts.idle;
            tokio::spawn(async move {
                tokio::select! {
                    served = connection => {
                        if let Err(error) = served {
                            tracing::debug!(%error, %peer, "a connection ended with an error");
                        }
                    }
                    () = activity.idle_for(idle) => {
                        tracing::debug!(%peer, "closing a connection idle for {} s", idle.as_secs());
                    }
                }
            });
        }
        drop(listener);
        readiness.set(false);
        draining.start();
        tracing::info!("draining in-flight requests");
        tokio::select! {
            () = connections.shutdown() => Ok(()),
            () = tokio::time::sleep(drain_timeout) => {
                tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "drain deadline passed; closing remaining connections");
                Ok(())
            }
        }
    }
}

/// Says which request paths carry a stream (an upload) that their handler reads itself,
/// under bounds of its own: such bodies are not read ahead nor held to the body and answer
/// timeouts. Paths are matched in every server of the process.
pub fn stream_bodies_of(paths: StreamedPaths) {
    STREAMED_PATHS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(paths);
}

/// Says whether a request path carries a streamed body.
pub type StreamedPaths = fn(&str) -> bool;

static STREAMED_PATHS: std::sync::RwLock<Vec<StreamedPaths>> = std::sync::RwLock::new(Vec::new());

fn is_streamed(path: &str) -> bool {
    STREAMED_PATHS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|streamed| streamed(path))
}

/// Reads a request's body within the body timeout before anything else sees the request
/// (so a slow body holds no `max_in_flight` place), then bounds the answer by the request
/// timeout.
async fn bound_request(
    State((timeouts, max_body)): State<(Timeouts, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let grpc = crate::telemetry::is_grpc(&request);
    let request = if request.body().is_end_stream() {
        request
    } else if is_streamed(request.uri().path()) {
        return next.run(request).await;
    } else {
        let (parts, body) = request.into_parts();
        match tokio::time::timeout(timeouts.body, axum::body::to_bytes(body, max_body)).await {
            Ok(Ok(bytes)) => Request::from_parts(parts, axum::body::Body::from(bytes)),
            Ok(Err(error)) => {
                let too_large = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
                return if too_large {
                    refuse(grpc, tonic::Code::ResourceExhausted, || {
                        Problem::payload_too_large(format!(
                            "the request body is larger than {max_body} bytes"
                        ))
                    })
                } else {
                    refuse(grpc, tonic::Code::Cancelled, || {
                        Problem::bad_request("the request body could not be read to its end")
                    })
                };
            }
            Err(_) => {
                metrics::counter!("comb_server_timeouts_total", "part" => "body").increment(1);
                return refuse(grpc, tonic::Code::DeadlineExceeded, || {
                    Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request-timeout",
                        "Request Timeout",
                        format!(
                            "the request body did not arrive within {} ms; send it at once",
                            timeouts.body.as_millis()
                        ),
                    )
                });
            }
        }
    };
    match tokio::time::timeout(timeouts.request, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("comb_server_timeouts_total", "part" => "answer").increment(1);
            refuse(grpc, tonic::Code::DeadlineExceeded, || {
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "Timeout",
                    format!(
                        "no answer within {} ms; retry later",
                        timeouts.request.as_millis()
                    ),
                )
            })
        }
    }
}

fn refuse(grpc: bool, code: tonic::Code, problem: impl FnOnce() -> Problem) -> Response {
    if grpc {
        let problem = problem();
        return crate::grpc::trailers_only(axum::body::Body::empty(), code, &problem.detail);
    }
    problem().into_response()
}

/// A connection's IO that notes when bytes last moved, so an idle connection can be closed.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

/// When a connection last moved bytes, in milliseconds since it opened.
struct Activity {
    opened: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let due = self.opened + Duration::from_millis(last.saturating_add(idle_ms));
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

impl<T> Watched<T> {
    fn new(inner: T) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            opened: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        });
        (
            Self {
                inner,
                activity: Arc::clone(&activity),
            },
            activity,
        )
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.activity.touch();
        }
        polled
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if polled.is_ready() {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
/// The operator endpoints (metrics, fault control, readiness) are served on a second,
/// admin listener (`admin_listen`), never on the one callers use.
pub async fn serve(config: &ServiceConfig, routes: Router) -> Result<(), ServerError> {
    let server = Server::bind(config.listen)
        .await?
        .with_timeouts(config.timeouts)
        .with_max_body(config.max_body_bytes);
    let admin = Server::bind(config.admin_listen)
        .await?
        .with_timeouts(config.timeouts);
    let fault_token = fault_token(config);
    let faults = fault_token.is_some().then(Faults::default);
    let mut routes = routes;
    if let Some(faults) = &faults {
        routes = crate::faults::inject(routes, faults.clone());
    }
    routes = crate::overload::limit_in_flight(routes, config.max_in_flight);
    let readiness = Readiness::default();
    let app = app(routes, readiness.clone());
    let admin_app = admin_app(
        readiness.clone(),
        faults.zip(fault_token.map(str::to_owned)),
    );
    tracing::info!(addr = %server.local_addr(), admin_addr = %admin.local_addr(), "listening");
    if let Some(path) = &config.address_file {
        BoundAddresses {
            listen: server.local_addr(),
            admin: admin.local_addr(),
        }
        .write(path)?;
    }
    readiness.set(true);
    let parent_pid = config.parent_pid;
    let stop = async move {
        let reason = shutdown::stop_requested(parent_pid).await;
        tracing::info!(?reason, "stopping");
    };
    // The admin listener answers (not ready, metrics) until the drain is over.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_serving = tokio::spawn(admin.run(
        admin_app,
        readiness.clone(),
        async move {
            let _ = admin_stopped.await;
        },
        Duration::from_millis(500),
    ));
    let served = server.run(app, readiness, stop, config.drain_timeout).await;
    let _ = admin_stop.send(());
    let _ = admin_serving.await;
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
/// (liveness) and `/readyz` (readiness) for probes, RED metrics and an access log line for
/// every request, an `x-request-id` on every response (the caller's, or a new one), and
/// problem+json answers for unknown routes and methods.
pub fn app(routes: Router, readiness: Readiness) -> Router {
    // Install the recorder before the first request, or that request is not counted.
    telemetry::metrics_handle();
    routes
        .merge(probe_routes(readiness))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(telemetry::observe))
}

/// The operator endpoints of an instance, for its admin listener: the probes, `/metrics`,
/// and fault control when faults can be injected (with the token that unlocks them).
pub fn admin_app(readiness: Readiness, faults: Option<(Faults, String)>) -> Router {
    telemetry::metrics_handle();
    let mut routes = probe_routes(readiness).route("/metrics", get(metrics));
    if let Some((faults, token)) = faults {
        routes = routes.merge(crate::faults::control_routes(faults, &token));
    }
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
}

fn probe_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
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
mod tests;
