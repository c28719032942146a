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
//!
//! The parts: [`discovery`] keeps the instances as the launcher names them, [`balance`]
//! picks one and ejects failing ones, [`breaker`] fails fast for an upstream that keeps
//! failing, [`retry`] bounds retries with a budget, and [`channel`] carries a call through
//! all of them.

mod balance;
mod breaker;
mod channel;
mod discovery;
mod retry;

use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::connection::Connection;

use self::balance::Instance;
use self::breaker::Breaker;
pub use self::breaker::BreakerState;
pub use self::channel::UpstreamChannel;
use self::retry::RETRY_TOKENS_MAX;

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

/// The instances of one service this service calls. Clones share everything.
#[derive(Debug, Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Upstream {
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

impl Shared {
    fn snapshot(&self) -> Arc<Vec<Arc<Instance>>> {
        Arc::clone(
            &self
                .instances
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// An upstream of `urls`, for the tests of the parts.
#[cfg(test)]
fn test_upstream(urls: &[&str]) -> Upstream {
    let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
    Upstream::new("catalog", &urls, Duration::from_secs(1)).expect("upstream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn scaling_keeps_known_instances_and_ignores_an_empty_list() {
        let upstream = super::test_upstream(&["http://127.0.0.1:1"]);
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
}
