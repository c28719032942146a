//! Deadlines that travel with a request: a gRPC caller's `grpc-timeout` becomes the
//! deadline of everything the callee does for it, so a call made on its behalf never
//! outlives the caller's patience. Work started outside a request has no deadline but the
//! per-call timeout.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The header gRPC carries a call's deadline in.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Time left before the current request's deadline; `None` outside a request with one.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Runs `work` with `deadline` (or the current one, if sooner).
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    let sooner = DEADLINE
        .try_with(|current| (*current).min(deadline))
        .unwrap_or(deadline);
    DEADLINE.scope(sooner, work).await
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a timeout for `grpc-timeout`, in milliseconds (at least 1).
pub fn format_grpc_timeout(timeout: Duration) -> String {
    let millis = timeout.as_millis().clamp(1, 99_999_999);
    format!("{millis}m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_format() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_grpc_timeout(Duration::ZERO), "1m");
    }

    #[tokio::test]
    async fn the_sooner_deadline_wins_and_ends_with_its_scope() {
        assert_eq!(remaining(), None);
        let now = Instant::now();
        within(now + Duration::from_secs(5), async {
            let outer = remaining().expect("a deadline");
            assert!(outer <= Duration::from_secs(5) && outer > Duration::from_secs(4));
            within(now + Duration::from_secs(60), async {
                assert!(remaining().expect("a deadline") <= Duration::from_secs(5));
            })
            .await;
            within(now + Duration::from_millis(100), async {
                assert!(remaining().expect("a deadline") <= Duration::from_millis(100));
            })
            .await;
        })
        .await;
        assert_eq!(remaining(), None);
    }
}
