//! Which instance a call goes to: the less loaded of two healthy ones chosen at random
//! (power of two choices), and instances failing calls in a row ejected for a while.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::time::Instant;

use super::{Shared, lock};
use crate::connection::{CallError, Connection};
use crate::trace::{grpc_server_error, grpc_status};

/// One instance of the upstream.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) url: String,
    pub(super) connection: Connection,
    pub(super) in_flight: AtomicUsize,
    pub(super) failures: AtomicU32,
    pub(super) ejected_until: Mutex<Option<Instant>>,
}

impl Instance {
    fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.ejected_until).is_some_and(|until| until > now)
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
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

pub(super) fn verdict_of(result: &Result<http::Response<tonic::body::Body>, CallError>) -> Verdict {
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
    /// Power of two choices among healthy instances not tried yet for this call.
    pub(super) fn pick(&self, tried: &HashSet<String>) -> Option<Arc<Instance>> {
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

    pub(super) fn record_attempt(&self, instance: &Instance, verdict: Verdict) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn picks_the_less_loaded_healthy_instance() {
        let upstream = super::super::test_upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
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
        let upstream = super::super::test_upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
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
}
