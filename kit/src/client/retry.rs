//! The retry budget: retries stay within a fifth of calls, with a burst saved up for a
//! quiet spell, so retries cannot multiply the load on an upstream that is struggling.

use super::{Shared, lock};

/// The most retry tokens saved up (in tenths): a burst of ten retries after a quiet spell.
pub(super) const RETRY_TOKENS_MAX: u32 = 100;
/// Tokens (tenths) a call adds: retries stay within a fifth of calls.
const RETRY_TOKENS_PER_CALL: u32 = 2;
/// Tokens (tenths) a retry takes.
const RETRY_TOKENS_PER_RETRY: u32 = 10;

impl Shared {
    pub(super) fn deposit_retry_tokens(&self) {
        let mut tokens = lock(&self.retry_tokens);
        *tokens = (*tokens + RETRY_TOKENS_PER_CALL).min(RETRY_TOKENS_MAX);
    }

    pub(super) fn take_retry_token(&self) -> bool {
        let mut tokens = lock(&self.retry_tokens);
        if *tokens >= RETRY_TOKENS_PER_RETRY {
            *tokens -= RETRY_TOKENS_PER_RETRY;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn retries_are_bounded_by_the_budget() {
        let upstream = super::super::test_upstream(&["http://127.0.0.1:1"]);
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
}
