//! Abuse limits at the edge: how often one client address, and one account, may sign in,
//! register, get a guest token or check out. Past a limit the answer is 429 with
//! `Retry-After` (and `comb_rate_limited_total{limit}` counts it), before any service
//! does work for it. Limits are kept in this instance's memory (GCRA, by `governor`): with
//! several gateway instances each allows its own share.
//!
//! Loopback addresses are not limited per address by default: `comb load` and the tests
//! run every shopper from 127.0.0.1. Per-account limits always apply.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use comb_kit::Problem;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, DefaultClock>;

/// What a request does, for its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Signing in with a password (per account and per address).
    SignIn,
    /// Registering, or asking for a guest token (per address).
    NewSession,
    /// Placing an order (per account and per address).
    Checkout,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::NewSession => "new_session",
            Self::Checkout => "checkout",
        }
    }
}

/// The limits, from the gateway's settings.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub enabled: bool,
    /// Sign-ins per account per minute (a burst of this many, then one every 60/n s).
    pub sign_ins_per_account: u32,
    /// Sign-ins, registrations and guest tokens per client address per minute.
    pub sessions_per_address: u32,
    /// Checkouts per account per minute.
    pub checkouts_per_account: u32,
    /// Checkouts per client address per minute.
    pub checkouts_per_address: u32,
    /// Whether loopback clients are limited per address too.
    pub limit_loopback: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sign_ins_per_account: 20,
            sessions_per_address: 120,
            checkouts_per_account: 60,
            checkouts_per_address: 600,
            limit_loopback: false,
        }
    }
}

impl LimitSettings {
    /// The settings `rate_limits` (`on`/`off`), `sign_ins_per_account`,
    /// `sessions_per_address`, `checkouts_per_account`, `checkouts_per_address` (per
    /// minute) and `rate_limit_loopback`.
    pub fn from_config(config: &comb_kit::ServiceConfig) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let per_minute = |key: &str, default: u32| -> anyhow::Result<u32> {
            match config.setting(key) {
                None => Ok(default),
                Some(text) => text.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "setting {key} (COMB_{}) must be a number of requests a minute, at least 1",
                        key.to_uppercase()
                    )
                }),
            }
        };
        let switch = |key: &str, default: bool| -> anyhow::Result<bool> {
            match config.setting(key) {
                None => Ok(default),
                Some("on" | "true") => Ok(true),
                Some("off" | "false") => Ok(false),
                Some(_) => anyhow::bail!(
                    "setting {key} (COMB_{}) must be on or off",
                    key.to_uppercase()
                ),
            }
        };
        Ok(Self {
            enabled: switch("rate_limits", defaults.enabled)?,
            sign_ins_per_account: per_minute(
                "sign_ins_per_account",
                defaults.sign_ins_per_account,
            )?,
            sessions_per_address: per_minute(
                "sessions_per_address",
                defaults.sessions_per_address,
            )?,
            checkouts_per_account: per_minute(
                "checkouts_per_account",
                defaults.checkouts_per_account,
            )?,
            checkouts_per_address: per_minute(
                "checkouts_per_address",
                defaults.checkouts_per_address,
            )?,
            limit_loopback: switch("rate_limit_loopback", defaults.limit_loopback)?,
        })
    }
}

/// The limiters of one gateway instance.
#[derive(Debug, Clone)]
pub struct Limits {
    settings: LimitSettings,
    sign_ins_by_account: Arc<Keyed<String>>,
    sessions_by_address: Arc<Keyed<IpAddr>>,
    checkouts_by_account: Arc<Keyed<String>>,
    checkouts_by_address: Arc<Keyed<IpAddr>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            sign_ins_by_account: Arc::new(RateLimiter::hashmap(per_minute(
                settings.sign_ins_per_account,
            ))),
            sessions_by_address: Arc::new(RateLimiter::hashmap(per_minute(
                settings.sessions_per_address,
            ))),
            checkouts_by_account: Arc::new(RateLimiter::hashmap(per_minute(
                settings.checkouts_per_account,
            ))),
            checkouts_by_address: Arc::new(RateLimiter::hashmap(per_minute(
                settings.checkouts_per_address,
            ))),
            settings,
        }
    }

    /// Lets the request through, or answers 429 for the first limit it is past.
    /// `account` is who the request acts for (an email signing in, a caller checking out).
    pub fn check(
        &self,
        action: Action,
        client: Option<IpAddr>,
        account: Option<&str>,
    ) -> Result<(), Problem> {
        if !self.settings.enabled {
            return Ok(());
        }
        let address = client.filter(|ip| self.settings.limit_loopback || !ip.is_loopback());
        let (by_account, by_address) = match action {
            Action::SignIn => (
                Some(&self.sign_ins_by_account),
                Some(&self.sessions_by_address),
            ),
            Action::NewSession => (None, Some(&self.sessions_by_address)),
            Action::Checkout => (
                Some(&self.checkouts_by_account),
                Some(&self.checkouts_by_address),
            ),
        };
        if let (Some(limiter), Some(account)) = (by_account, account) {
            let key = account.trim().to_lowercase();
            limiter.check_key(&key).map_err(|wait| {
                refused(
                    action,
                    "account",
                    wait.wait_time_from(DefaultClock::default().now()),
                )
            })?;
        }
        if let (Some(limiter), Some(address)) = (by_address, address) {
            limiter.check_key(&address).map_err(|wait| {
                refused(
                    action,
                    "address",
                    wait.wait_time_from(DefaultClock::default().now()),
                )
            })?;
        }
        Ok(())
    }

    /// Forgets keys whose limits have recovered, so memory follows recent clients only.
    pub fn forget_idle(&self) {
        for limiter in [&self.sign_ins_by_account, &self.checkouts_by_account] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.sessions_by_address, &self.checkouts_by_address] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Forgets idle keys every minute for as long as anyone else holds the limits.
    pub fn forget_idle_every_minute(&self) {
        let limits = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                if Arc::strong_count(&limits.sign_ins_by_account) == 1 {
                    return;
                }
                limits.forget_idle();
            }
        });
    }
}

fn refused(action: Action, per: &'static str, wait: Duration) -> Problem {
    metrics::counter!("comb_rate_limited_total", "limit" => format!("{}_per_{per}", action.name()))
        .increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut problem = Problem::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "too-many-requests",
        "Too many requests",
        format!(
            "too many attempts from this {per} in a short time; wait {seconds} s (Retry-After) and try again"
        ),
    );
    problem.retry_after = Some(Duration::from_secs(seconds.max(1)));
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4]) -> IpAddr {
        IpAddr::from(ip)
    }

    #[test]
    fn an_account_past_its_sign_ins_is_refused_and_others_are_not() {
        let limits = Limits::new(LimitSettings {
            sign_ins_per_account: 3,
            ..LimitSettings::default()
        });
        let here = peer([127, 0, 0, 1]);
        for _ in 0..3 {
            assert!(
                limits
                    .check(Action::SignIn, Some(here), Some("a@example.com"))
                    .is_ok()
            );
        }
        let refused = limits
            .check(Action::SignIn, Some(here), Some(" A@Example.com "))
            .expect_err("the fourth");
        assert_eq!(refused.status_code(), 429);
        assert!(
            refused
                .retry_after
                .is_some_and(|after| after >= Duration::from_secs(1))
        );
        assert!(
            limits
                .check(Action::SignIn, Some(here), Some("b@example.com"))
                .is_ok()
        );
    }

    #[test]
    fn addresses_are_limited_but_loopback_only_when_asked() {
        let limits = Limits::new(LimitSettings {
            sessions_per_address: 2,
            ..LimitSettings::default()
        });
        let (there, here) = (peer([203, 0, 113, 7]), peer([127, 0, 0, 1]));
        for _ in 0..2 {
            assert!(limits.check(Action::NewSession, Some(there), None).is_ok());
        }
        assert!(limits.check(Action::NewSession, Some(there), None).is_err());
        assert!(
            limits
                .check(Action::NewSession, Some(peer([203, 0, 113, 8])), None)
                .is_ok()
        );
        for _ in 0..10 {
            assert!(limits.check(Action::NewSession, Some(here), None).is_ok());
        }
        let strict = Limits::new(LimitSettings {
            sessions_per_address: 2,
            limit_loopback: true,
            ..LimitSettings::default()
        });
        for _ in 0..2 {
            assert!(strict.check(Action::NewSession, Some(here), None).is_ok());
        }
        assert!(strict.check(Action::NewSession, Some(here), None).is_err());
        let off = Limits::new(LimitSettings {
            enabled: false,
            sessions_per_address: 1,
            ..LimitSettings::default()
        });
        for _ in 0..5 {
            assert!(off.check(Action::NewSession, Some(there), None).is_ok());
        }
    }
}
