//! The circuit breaker: after repeated failed calls an upstream is failed fast for a while,
//! then one trial call decides whether calls go through again.

use tokio::time::Instant;

use super::{Shared, lock};

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
pub(super) struct Breaker {
    pub(super) state: BreakerState,
    pub(super) failures: u32,
}

impl Shared {
    /// Whether the breaker lets this call through: `None` if not, `Some(true)` for the
    /// trial call let through after the cool-down.
    pub(super) fn admit(&self) -> Option<bool> {
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
    pub(super) fn trial_abandoned(&self) {
        let mut breaker = lock(&self.breaker);
        if breaker.state == BreakerState::HalfOpen {
            breaker.state = BreakerState::Open(Instant::now() + self.policy.breaker_open_for);
        }
    }

    pub(super) fn record_call(&self, succeeded: bool) {
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
}

#[cfg(test)]
mod tests {
    use super::super::channel::Outcome;
    use super::super::{CallPolicy, Upstream};
    use super::*;
    use std::time::Duration;

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
}
