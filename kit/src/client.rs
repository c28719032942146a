//! Calling the instances of another service, resiliently. Every call made through an
//! [`Upstream`]'s channel:
//! - runs in a client span whose trace context travels in the call's metadata;
//! - goes to the less loaded of two randomly chosen healthy instances (power of two
//!   choices); an instance failing several calls in a row is ejected for a while;
//! - carries the caller's remaining deadline (`grpc-timeout`), capped by the call timeout;
//! - is retried on another instance, with jittered backoff, only when the method is safe to
//!   retry (its `idempotency_level` in the protocol files) or the callee refused it unread
//!   (overloaded), and only while the upstream's retry budget allows;
//! - fails fast while the upstream's circuit breaker is open (after repeated failures),
//!   letting one trial call through after a cool-down;
//! - is refused at once when too many calls to the upstream are already in flight.
//!
//! Refusals are answered as gRPC statuses (UNAVAILABLE, RESOURCE_EXHAUSTED,
//! DEADLINE_EXCEEDED), so callers map them like any other unavailability.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use rand::Rng;
use tokio::time::Instant;

use crate::connection::{CallError, Connection};
use tracing::Instrument;
use tracing::field::Empty;

use crate::deadline::{self, GRPC_TIMEOUT, format_grpc_timeout};
use crate::trace::{grpc_server_error, grpc_status, inject_headers};

/// Why an upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no instance addresses for {0}")]
    NoInstances(String),
    #[error("{service} instance address {url:?} cannot be called: {source}")]
    BadUrl {
        service: String,
        url: String,
        source: crate::connection::AddressError,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// How calls to one upstream behave under failure and load.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// The longest a call may take, whatever the caller's own deadline.
    pub call_timeout: Duration,
    /// Attempts of a retry-safe call, the first included.
    pub max_attempts: u32,
    /// Calls in flight to the upstream before further ones are refused.
    pub max_in_flight: usize,
    /// Failed calls in a row that eject an instance...
    pub eject_after: u32,
    /// ...for this long.
    pub eject_for: Duration,
    /// Failed calls in a row (after retries) that open the breaker...
    pub breaker_after: u32,
    /// ...for this long before a trial call.
    pub breaker_open_for: Duration,
}

impl CallPolicy {
    /// The defaults, with `call_timeout`.
    pub fn new(call_timeout: Duration) -> Self {
        Self {
            call_timeout,
            max_attempts: 3,
            max_in_flight: 512,
            eject_after: 3,
            eject_for: Duration::from_secs(5),
            breaker_after: 5,
            breaker_open_for: Duration::from_secs(2),
        }
    }
}

/// One instance of the upstream.
#[derive(Debug)]
struct Instance {
    url: String,
    connection: Connection,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Instance {
    fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.ejected_until).is_some_and(|until| until > now)
    }
}

/// Whether the upstream's breaker lets calls through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing fast until the instant; then one trial call.
    Open(Instant),
    /// A trial call is in flight; others fail fast.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    failures: u32,
}

#[derive(Debug)]
struct Shared {
    service: Arc<str>,
    policy: CallPolicy,
    instances: RwLock<Arc<Vec<Arc<Instance>>>>,
    /// Told whenever the instances change, for calls waiting for a first one.
    instances_changed: tokio::sync::Notify,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// Retry tokens, in tenths: each call adds two, each retry takes ten.
    retry_tokens: Mutex<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The most retry tokens saved up (in tenths): a burst of ten retries after a quiet spell.
const RETRY_TOKENS_MAX: u32 = 100;
/// Tokens (tenths) a call adds: retries stay within a fifth of calls.
const RETRY_TOKENS_PER_CALL: u32 = 2;
/// Tokens (tenths) a retry takes.
const RETRY_TOKENS_PER_RETRY: u32 = 10;

/// The instances of one service this service calls. Clones share everything.
#[derive(Debug, Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Upstream {
    /// The upstream `service` as this instance's settings describe it: its addresses
    /// (`upstream_SERVICE`), the call timeout, and, when `discovery_url` is set (as `comb up`
    /// does), instances kept up to date from there as the service scales.
    pub fn from_config(
        config: &crate::ServiceConfig,
        service: &str,
    ) -> Result<Self, UpstreamError> {
        Self::from_config_with_timeout(config, service, config.call_timeout)
    }

    /// The same, with a call timeout of its own (a long poll, a call that waits).
    pub fn from_config_with_timeout(
        config: &crate::ServiceConfig,
        service: &str,
        call_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let urls = config.upstream(service)?;
        let policy = CallPolicy::new(call_timeout);
        let Some(discovery) = config.setting("discovery_url") else {
            return Self::with_policy(service, urls, policy);
        };
        // With discovery, the instances may all be learnt from it: until then a call
        // finds no instance and fails at once.
        let upstream = Self::with_instances(service, urls, policy)?;
        upstream.follow(discovery.trim_end_matches('/'));
        Ok(upstream)
    }

    /// Keeps the instances up to date from the launcher's discovery at `url`: the ready
    /// instances of this service, as they change. While it does not answer, or lists none,
    /// the known instances stay.
    pub fn follow(&self, url: &str) {
        let shared = Arc::downgrade(&self.shared);
        let mut snapshots = crate::discovery::watch(url);
        tokio::spawn(async move {
            let mut last: Option<Vec<String>> = None;
            // Ends when the upstream is dropped or discovery goes away.
            while snapshots.changed().await.is_ok() {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let upstream = Upstream { shared };
                let found = snapshots
                    .borrow_and_update()
                    .services
                    .get(upstream.service())
                    .cloned()
                    .unwrap_or_default();
                if found.is_empty() || last.as_ref() == Some(&found) || found == upstream.urls() {
                    last = Some(found);
                    continue;
                }
                match upstream.set_urls(&found) {
                    Ok(()) => {
                        tracing::info!(upstream = %upstream.service(), instances = ?found, "instances changed");
                        last = Some(found);
                    }
                    Err(error) => tracing::warn!(%error, "discovery gave an unusable address"),
                }
            }
        });
    }

    /// Channels to each instance at `urls`, with the default policy. Nothing connects
    /// until the first call, so a caller starts even when the service it calls is down.
    pub fn new(
        service: &str,
        urls: &[String],
        call_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        Self::with_policy(service, urls, CallPolicy::new(call_timeout))
    }

    pub fn with_policy(
        service: &str,
        urls: &[String],
        policy: CallPolicy,
    ) -> Result<Self, UpstreamError> {
        if urls.is_empty() {
            return Err(UpstreamError::NoInstances(service.to_owned()));
        }
        Self::with_instances(service, urls, policy)
    }

    fn with_instances(
        service: &str,
        urls: &[String],
        policy: CallPolicy,
    ) -> Result<Self, UpstreamError> {
        let instances = urls
            .iter()
            .map(|url| connect(service, url, &policy))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            shared: Arc::new(Shared {
                service: service.into(),
                policy,
                instances: RwLock::new(Arc::new(instances)),
                instances_changed: tokio::sync::Notify::new(),
                in_flight: AtomicUsize::new(0),
                breaker: Mutex::new(Breaker {
                    state: BreakerState::Closed,
                    failures: 0,
                }),
                retry_tokens: Mutex::new(RETRY_TOKENS_MAX),
            }),
        })
    }

    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The addresses of the instances calls go to.
    pub fn urls(&self) -> Vec<String> {
        self.shared
            .snapshot()
            .iter()
            .map(|instance| instance.url.clone())
            .collect()
    }

    /// Replaces the instances (a scaled service): instances still there keep their
    /// connection and health; new ones get calls from now on; gone ones get no new calls.
    /// An empty list is ignored: a service never scales to nothing.
    pub fn set_urls(&self, urls: &[String]) -> Result<(), UpstreamError> {
        if urls.is_empty() {
            return Ok(());
        }
        let current = self.shared.snapshot();
        let next = urls
            .iter()
            .map(|url| match current.iter().find(|i| &i.url == url) {
                Some(kept) => Ok(Arc::clone(kept)),
                None => connect(&self.shared.service, url, &self.shared.policy),
            })
            .collect::<Result<Vec<_>, _>>()?;
        *self
            .shared
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.shared.instances_changed.notify_waiters();
        Ok(())
    }

    /// The problem to answer when a call to this upstream failed with `status`.
    pub fn problem(&self, status: &tonic::Status) -> crate::problem::Problem {
        crate::grpc::problem_from_status(&self.shared.service, status)
    }

    /// The breaker's state.
    pub fn breaker(&self) -> BreakerState {
        lock(&self.shared.breaker).state
    }

    /// A channel for calls to this upstream; each call is a client span in the caller's
    /// trace.
    pub fn channel(&self) -> UpstreamChannel {
        UpstreamChannel {
            shared: Arc::clone(&self.shared),
            traced: true,
        }
    }

    /// The same, outside any trace: for the long-polling feed reads that run all the time
    /// and belong to no request.
    pub fn untraced_channel(&self) -> UpstreamChannel {
        UpstreamChannel {
            shared: Arc::clone(&self.shared),
            traced: false,
        }
    }
}

fn connect(service: &str, url: &str, policy: &CallPolicy) -> Result<Arc<Instance>, UpstreamError> {
    let connect_timeout = policy.call_timeout.min(Duration::from_millis(500));
    let connection =
        Connection::new(url, connect_timeout).map_err(|source| UpstreamError::BadUrl {
            service: service.to_owned(),
            url: url.to_owned(),
            source,
        })?;
    Ok(Arc::new(Instance {
        url: url.to_owned(),
        connection,
        in_flight: AtomicUsize::new(0),
        failures: AtomicU32::new(0),
        ejected_until: Mutex::new(None),
    }))
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answered (a business error included).
    Answered,
    /// Refused before doing any work (overloaded): safe to try elsewhere.
    Refused,
    /// Nothing listens at the instance: the call never left, so any call may go elsewhere.
    Unreachable,
    /// Unreachable or failed: retry only when the method is retry-safe.
    Failed,
    /// Out of time.
    TimedOut,
    /// Out of the caller's time, shorter than the call timeout: says nothing about the
    /// callee, so it counts against neither the instance nor the breaker.
    CallerOutOfTime,
}

fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

fn verdict_of(result: &Result<http::Response<tonic::body::Body>, CallError>) -> Verdict {
    match result {
        // Nothing listens there: the call never left, so any call may go elsewhere.
        Err(error) if connection_refused(error.as_ref()) => Verdict::Unreachable,
        Err(_) => Verdict::Failed,
        Ok(response) => match grpc_status(response) {
            // RESOURCE_EXHAUSTED: the callee shed the call unread.
            Some(8) => Verdict::Refused,
            Some(4) => Verdict::TimedOut,
            Some(code) if grpc_server_error(code) => Verdict::Failed,
            _ => Verdict::Answered,
        },
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Vec<Arc<Instance>>> {
        Arc::clone(
            &self
                .instances
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// An instance for a call made before any was known (a caller started before the
    /// service it calls reported where it listens): waits for discovery to name one, at
    /// most until the call's deadline.
    async fn first_instance(&self, deadline: Instant) -> Option<Arc<Instance>> {
        loop {
            let changed = self.instances_changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not missed.
            changed.as_mut().enable();
            if let Some(instance) = self.pick(&HashSet::new()) {
                return Some(instance);
            }
            if !self.snapshot().is_empty() {
                return None;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Power of two choices among healthy instances not tried yet for this call.
    fn pick(&self, tried: &HashSet<String>) -> Option<Arc<Instance>> {
        let instances = self.snapshot();
        let now = Instant::now();
        let fresh: Vec<&Arc<Instance>> = instances
            .iter()
            .filter(|i| !tried.contains(&i.url))
            .collect();
        let healthy: Vec<&Arc<Instance>> = fresh
            .iter()
            .copied()
            .filter(|i| !i.is_ejected(now))
            .collect();
        // With every instance ejected, any is better than none.
        let pool = if healthy.is_empty() { fresh } else { healthy };
        match pool.len() {
            0 => None,
            1 => Some(Arc::clone(pool[0])),
            n => {
                let mut rng = rand::thread_rng();
                let first = rng.gen_range(0..n);
                let second = (first + rng.gen_range(1..n)) % n;
                let (a, b) = (pool[first], pool[second]);
                let lighter =
                    if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                        b
                    } else {
                        a
                    };
                Some(Arc::clone(lighter))
            }
        }
    }

    /// Whether the breaker lets this call through: `None` if not, `Some(true)` for the
    /// trial call let through after the cool-down.
    fn admit(&self) -> Option<bool> {
        let mut breaker = lock(&self.breaker);
        match breaker.state {
            BreakerState::Closed => Some(false),
            BreakerState::HalfOpen => None,
            BreakerState::Open(until) => {
                if Instant::now() >= until {
                    breaker.state = BreakerState::HalfOpen;
                    Some(true)
                } else {
                    None
                }
            }
        }
    }

    /// A trial call abandoned by its caller proves nothing: the breaker opens again, so a
    /// later call is the next trial.
    fn trial_abandoned(&self) {
        let mut breaker = lock(&self.breaker);
        if breaker.state == BreakerState::HalfOpen {
            breaker.state = BreakerState::Open(Instant::now() + self.policy.breaker_open_for);
        }
    }

    fn record_call(&self, succeeded: bool) {
        let mut breaker = lock(&self.breaker);
        if succeeded {
            if breaker.state != BreakerState::Closed {
                tracing::info!(upstream = %self.service, "circuit closed: calls go through again");
                metrics::gauge!("comb_client_breaker_open", "upstream" => self.service.to_string())
                    .set(0.0);
            }
            breaker.state = BreakerState::Closed;
            breaker.failures = 0;
            return;
        }
        breaker.failures = breaker.failures.saturating_add(1);
        let trial_failed = breaker.state == BreakerState::HalfOpen;
        if trial_failed || breaker.failures >= self.policy.breaker_after {
            if !matches!(breaker.state, BreakerState::Open(_)) {
                tracing::warn!(upstream = %self.service, failures = breaker.failures, "circuit open: failing fast for {:?}", self.policy.breaker_open_for);
                metrics::counter!("comb_client_breaker_opened_total", "upstream" => self.service.to_string())
                    .increment(1);
                metrics::gauge!("comb_client_breaker_open", "upstream" => self.service.to_string())
                    .set(1.0);
            }
            breaker.state = BreakerState::Open(Instant::now() + self.policy.breaker_open_for);
        }
    }

    fn record_attempt(&self, instance: &Instance, verdict: Verdict) {
        match verdict {
            Verdict::Answered => instance.failures.store(0, Ordering::Relaxed),
            Verdict::CallerOutOfTime => {}
            Verdict::Refused => {}
            Verdict::Failed | Verdict::TimedOut | Verdict::Unreachable => {
                let failures = instance.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.policy.eject_after {
                    instance.failures.store(0, Ordering::Relaxed);
                    *lock(&instance.ejected_until) = Some(Instant::now() + self.policy.eject_for);
                    tracing::warn!(upstream = %self.service, instance = %instance.url, failures, "instance ejected for {:?}", self.policy.eject_for);
                    metrics::counter!("comb_client_ejections_total", "upstream" => self.service.to_string())
                        .increment(1);
                }
            }
        }
    }

    fn deposit_retry_tokens(&self) {
        let mut tokens = lock(&self.retry_tokens);
        *tokens = (*tokens + RETRY_TOKENS_PER_CALL).min(RETRY_TOKENS_MAX);
    }

    fn take_retry_token(&self) -> bool {
        let mut tokens = lock(&self.retry_tokens);
        if *tokens >= RETRY_TOKENS_PER_RETRY {
            *tokens -= RETRY_TOKENS_PER_RETRY;
            true
        } else {
            false
        }
    }

    fn rejected(&self, reason: &'static str) {
        metrics::counter!("comb_client_rejected_total", "upstream" => self.service.to_string(), "reason" => reason)
            .increment(1);
    }
}

/// A trailers-only gRPC answer made here, for a call refused before it left, saying why in
/// [`crate::grpc::REFUSED_HEADER`].
fn refusal(
    code: tonic::Code,
    why: crate::grpc::Refusal,
    message: &str,
) -> http::Response<tonic::body::Body> {
    let mut response = crate::grpc::trailers_only(tonic::body::Body::empty(), code, message);
    response.headers_mut().insert(
        crate::grpc::REFUSED_HEADER,
        http::HeaderValue::from_static(why.as_str()),
    );
    response
}

/// Reports a call's outcome to the breaker exactly once, even when the caller drops the
/// call half way (a page that stopped waiting).
struct Outcome<'a> {
    shared: &'a Shared,
    trial: bool,
    reported: bool,
}

impl Outcome<'_> {
    fn report(&mut self, succeeded: bool) {
        self.reported = true;
        self.shared.record_call(succeeded);
    }

    /// Ended for a reason that says nothing about the upstream (the caller ran out of
    /// time): a trial ends as if abandoned.
    fn neutral(&mut self) {
        self.reported = true;
        if self.trial {
            self.shared.trial_abandoned();
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.shared.trial_abandoned();
        }
    }
}

/// Decrements a counter when dropped, so a cancelled call still gives its slot back.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A channel to an upstream: see the module documentation for what each call gets.
#[derive(Debug, Clone)]
pub struct UpstreamChannel {
    shared: Arc<Shared>,
    traced: bool,
}

type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, CallError>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for UpstreamChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for its own instance's channel.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let rpc = request.uri().path().to_owned();
        if !self.traced {
            return Box::pin(async move { call(shared, request, &rpc).await });
        }
        let span = tracing::info_span!(
            "grpc call",
            otel.name = %rpc.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            peer.service = %shared.service,
            rpc.grpc.status_code = Empty,
            attempts = Empty,
        );
        Box::pin(
            async move {
                let mut request = request;
                inject_headers(&tracing::Span::current(), request.headers_mut());
                let result = call(shared, request, &rpc).await;
                let span = tracing::Span::current();
                match &result {
                    Ok(response) => {
                        if let Some(code) = grpc_status(response) {
                            span.record("rpc.grpc.status_code", code);
                            if grpc_server_error(code) || code == 8 {
                                span.record("otel.status_code", "ERROR");
                            }
                        }
                    }
                    Err(_) => {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

async fn call(
    shared: Arc<Shared>,
    request: http::Request<tonic::body::Body>,
    rpc: &str,
) -> Result<http::Response<tonic::body::Body>, CallError> {
    let service = Arc::clone(&shared.service);
    let callers_time = deadline::remaining();
    // Whether the caller's deadline, not the call timeout, bounds this call.
    let caller_limited = callers_time.is_some_and(|left| left < shared.policy.call_timeout);
    let timeout = match callers_time {
        Some(left) => left.min(shared.policy.call_timeout),
        None => shared.policy.call_timeout,
    };
    if timeout.is_zero() {
        shared.rejected("deadline");
        return Ok(refusal(
            tonic::Code::DeadlineExceeded,
            crate::grpc::Refusal::Deadline,
            &format!("no time left to call {service}"),
        ));
    }
    let deadline = Instant::now() + timeout;
    if shared.in_flight.load(Ordering::Relaxed) >= shared.policy.max_in_flight {
        shared.rejected("overloaded");
        return Ok(refusal(
            tonic::Code::ResourceExhausted,
            crate::grpc::Refusal::Overloaded,
            &format!("too many calls to {service} in flight"),
        ));
    }
    let Some(trial) = shared.admit() else {
        shared.rejected("breaker_open");
        return Ok(refusal(
            tonic::Code::Unavailable,
            crate::grpc::Refusal::CircuitOpen,
            &format!("{service} is failing; calls to it are paused for a moment (circuit open)"),
        ));
    };
    let mut outcome = Outcome {
        shared: &shared,
        trial,
        reported: false,
    };
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _slot = Slot(&shared.in_flight);
    shared.deposit_retry_tokens();

    let retry_safe = comb_contracts::RETRY_SAFE_METHODS.contains(&rpc);
    let (parts, body) = request.into_parts();
    // Unary request bodies are small: kept, so the call can go to another instance.
    let kept = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            outcome.report(false);
            return Ok(refusal(
                tonic::Code::Internal,
                crate::grpc::Refusal::Unreadable,
                "the request body could not be read",
            ));
        }
    };

    let mut tried = HashSet::new();
    let mut attempt = 0;
    let mut next = shared.pick(&tried);
    if next.is_none() {
        next = shared.first_instance(deadline).await;
    }
    loop {
        attempt += 1;
        let Some(instance) = next.take() else {
            if tried.is_empty() {
                // None known yet (discovery has not named one in time): that says
                // nothing of the instances' health, so the breaker does not count it.
                outcome.neutral();
            } else {
                outcome.report(false);
            }
            return Ok(refusal(
                tonic::Code::Unavailable,
                crate::grpc::Refusal::NoInstance,
                &format!("no instance of {service} left to try"),
            ));
        };
        tried.insert(instance.url.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        let body = Full::new(Bytes::clone(&kept));
        let mut attempt_request = http::Request::from_parts(clone_parts(&parts), body);
        if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(left)) {
            attempt_request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = {
            let _instance_slot = Slot(&instance.in_flight);
            tokio::time::timeout(left, instance.connection.send(attempt_request)).await
        };
        let (result, verdict) = match sent {
            Ok(result) => {
                let verdict = verdict_of(&result);
                (result, verdict)
            }
            Err(_) => (
                Ok(refusal(
                    tonic::Code::DeadlineExceeded,
                    crate::grpc::Refusal::Deadline,
                    &format!("{service} did not answer in time"),
                )),
                if caller_limited {
                    Verdict::CallerOutOfTime
                } else {
                    Verdict::TimedOut
                },
            ),
        };
        shared.record_attempt(&instance, verdict);
        let may_retry = match verdict {
            Verdict::Answered | Verdict::TimedOut | Verdict::CallerOutOfTime => false,
            Verdict::Refused | Verdict::Unreachable => true,
            Verdict::Failed => retry_safe,
        };
        let time_left =
            deadline.saturating_duration_since(Instant::now()) > Duration::from_millis(5);
        // Another instance to try, or the answer stands.
        next = if may_retry && attempt < shared.policy.max_attempts && time_left {
            shared.pick(&tried)
        } else {
            None
        };
        if next.is_some() && shared.take_retry_token() {
            metrics::counter!("comb_client_retries_total", "upstream" => service.to_string())
                .increment(1);
            let pause =
                Duration::from_millis(rand::thread_rng().gen_range(2..10) * u64::from(attempt));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            // A retry with no time left would only fail; the answer in hand stands.
            if deadline.saturating_duration_since(Instant::now()) > Duration::from_millis(5) {
                continue;
            }
        }
        if verdict == Verdict::CallerOutOfTime {
            outcome.neutral();
        } else {
            outcome.report(matches!(verdict, Verdict::Answered));
        }
        tracing::Span::current().record("attempts", attempt);
        // A call that never got an answer is the callee being unavailable, whatever broke.
        return result.map_err(|error| -> CallError {
            Box::new(tonic::Status::unavailable(format!(
                "{service} could not be reached: {error}"
            )))
        });
    }
}

/// A copy of a request's head (extensions are not needed by the channel).
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(urls: &[&str]) -> Upstream {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        Upstream::new("catalog", &urls, Duration::from_secs(1)).expect("upstream")
    }

    #[tokio::test]
    async fn picks_the_less_loaded_healthy_instance() {
        let upstream = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let shared = &upstream.shared;
        let instances = shared.snapshot();
        instances[0].in_flight.store(5, Ordering::Relaxed);
        for _ in 0..20 {
            let picked = shared.pick(&HashSet::new()).expect("an instance");
            assert_eq!(picked.url, "http://127.0.0.1:2");
        }
        // An ejected instance gets nothing while another is healthy.
        instances[0].in_flight.store(0, Ordering::Relaxed);
        *lock(&instances[1].ejected_until) = Some(Instant::now() + Duration::from_secs(60));
        for _ in 0..20 {
            assert_eq!(
                shared.pick(&HashSet::new()).expect("one").url,
                "http://127.0.0.1:1"
            );
        }
        // Already tried instances are skipped; with none left, there is no pick.
        let tried = HashSet::from(["http://127.0.0.1:1".to_owned()]);
        assert_eq!(shared.pick(&tried).expect("one").url, "http://127.0.0.1:2");
        let all = HashSet::from([
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ]);
        assert!(shared.pick(&all).is_none());
    }

    #[tokio::test]
    async fn failures_in_a_row_eject_an_instance() {
        let upstream = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let shared = &upstream.shared;
        let instance = Arc::clone(&shared.snapshot()[0]);
        shared.record_attempt(&instance, Verdict::Failed);
        shared.record_attempt(&instance, Verdict::Answered);
        shared.record_attempt(&instance, Verdict::Failed);
        shared.record_attempt(&instance, Verdict::Failed);
        assert!(
            !instance.is_ejected(Instant::now()),
            "an answer resets the count"
        );
        shared.record_attempt(&instance, Verdict::TimedOut);
        assert!(instance.is_ejected(Instant::now()));
        assert!(!instance.is_ejected(Instant::now() + Duration::from_secs(6)));
    }

    #[tokio::test]
    async fn the_breaker_opens_fails_fast_then_lets_one_trial_through() {
        let mut policy = CallPolicy::new(Duration::from_secs(1));
        policy.breaker_open_for = Duration::from_millis(50);
        let upstream =
            Upstream::with_policy("payments", &["http://127.0.0.1:1".to_owned()], policy)
                .expect("upstream");
        let shared = &upstream.shared;
        for _ in 0..4 {
            assert_eq!(shared.admit(), Some(false));
            shared.record_call(false);
        }
        assert_eq!(upstream.breaker(), BreakerState::Closed);
        shared.record_call(false);
        assert!(matches!(upstream.breaker(), BreakerState::Open(_)));
        assert_eq!(shared.admit(), None, "open: fail fast");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(shared.admit(), Some(true), "the trial call");
        assert_eq!(shared.admit(), None, "only one trial at a time");
        shared.record_call(false);
        assert!(
            matches!(upstream.breaker(), BreakerState::Open(_)),
            "a failed trial reopens"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A trial its caller gave up on reopens the breaker instead of holding it half open.
        drop(Outcome {
            shared,
            trial: shared.admit() == Some(true),
            reported: false,
        });
        assert!(
            matches!(upstream.breaker(), BreakerState::Open(_)),
            "an abandoned trial reopens"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(shared.admit(), Some(true));
        shared.record_call(true);
        assert_eq!(upstream.breaker(), BreakerState::Closed);
        assert_eq!(shared.admit(), Some(false));
    }

    #[tokio::test]
    async fn retries_are_bounded_by_the_budget() {
        let upstream = upstream(&["http://127.0.0.1:1"]);
        let shared = &upstream.shared;
        let mut granted = 0;
        while shared.take_retry_token() {
            granted += 1;
        }
        assert_eq!(granted, 10, "a burst of ten");
        for _ in 0..10 {
            shared.deposit_retry_tokens();
        }
        assert!(shared.take_retry_token(), "ten calls earn two retries");
        assert!(shared.take_retry_token());
        assert!(!shared.take_retry_token());
    }

    #[tokio::test]
    async fn scaling_keeps_known_instances_and_ignores_an_empty_list() {
        let upstream = upstream(&["http://127.0.0.1:1"]);
        let first = Arc::clone(&upstream.shared.snapshot()[0]);
        first.failures.store(2, Ordering::Relaxed);
        upstream
            .set_urls(&[
                "http://127.0.0.1:1".to_owned(),
                "http://127.0.0.1:2".to_owned(),
            ])
            .expect("scaled");
        assert_eq!(
            upstream.urls(),
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(
            upstream.shared.snapshot()[0]
                .failures
                .load(Ordering::Relaxed),
            2
        );
        upstream.set_urls(&[]).expect("ignored");
        assert_eq!(upstream.urls().len(), 2);
        assert!(upstream.set_urls(&["not a url".to_owned()]).is_err());
    }

    #[tokio::test]
    async fn a_call_made_before_discovery_names_an_instance_waits_for_one() {
        use comb_contracts::versions::v1::{WatchRequest, data_versions_client};
        let config = crate::ServiceConfig::resolve(
            "gateway",
            std::collections::BTreeMap::new(),
            [
                ("COMB_UPSTREAM_CATALOG", ""),
                // Nothing answers here: discovery names no instance.
                ("COMB_DISCOVERY_URL", "http://127.0.0.1:9"),
                ("COMB_CALL_TIMEOUT_MS", "100"),
            ],
        )
        .expect("config");
        let upstream = Upstream::from_config(&config, "catalog").expect("upstream");
        assert!(upstream.urls().is_empty());
        let watch = || WatchRequest {
            after: 0,
            wait_ms: 0,
        };
        let mut client = data_versions_client::DataVersionsClient::new(upstream.channel());
        for _ in 0..10 {
            let refused = client
                .watch(watch())
                .await
                .expect_err("no instance to call");
            assert_eq!(refused.code(), tonic::Code::Unavailable);
            assert!(refused.message().contains("no instance"), "{refused:?}");
        }
        assert_eq!(
            upstream.breaker(),
            BreakerState::Closed,
            "no instance yet says nothing of the instances' health"
        );

        // A call waiting for its first instance goes to it as soon as it is named.
        let patient =
            Upstream::from_config_with_timeout(&config, "catalog", Duration::from_secs(30))
                .expect("upstream");
        let mut client = data_versions_client::DataVersionsClient::new(patient.channel());
        let call = tokio::spawn(async move { client.watch(watch()).await });
        let instance = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", instance.local_addr().expect("addr"));
        tokio::task::yield_now().await;
        patient.set_urls(&[url]).expect("discovered");
        let accepted = tokio::time::timeout(Duration::from_secs(10), instance.accept()).await;
        assert!(
            accepted.is_ok(),
            "the waiting call connected to the new instance"
        );
        call.abort();
    }

    #[test]
    fn refusals_are_grpc_statuses() {
        let response = refusal(
            tonic::Code::Unavailable,
            crate::grpc::Refusal::CircuitOpen,
            "paused: 100%",
        );
        assert_eq!(grpc_status(&response), Some(14));
        assert_eq!(response.headers()["grpc-message"], "paused: 100%25");
        assert_eq!(response.headers()["comb-refused"], "circuit-open");
        assert!(
            comb_contracts::RETRY_SAFE_METHODS.contains(&"/comb.catalog.v1.Catalog/ListProducts")
        );
        assert!(!comb_contracts::RETRY_SAFE_METHODS.contains(&"/comb.cart.v1.Cart/AddItem"));
    }
}
