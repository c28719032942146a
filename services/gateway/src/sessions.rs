//! Sessions ended before their tokens expire. Tokens are verified here without calling
//! users, so users tells every gateway what it revoked: the gateway follows its revocations
//! with one long poll and refuses a token that was logged out, or one issued before its
//! account's password or role last changed.
//!
//! What it costs: an entry per token logged out in the last token lifetime (about 100
//! bytes; a revoked token is forgotten once it has expired, when it is refused anyway) and
//! one per account whose password or role changed. How fresh it is: the gateway that
//! handled a logout refuses the token at once; the others within a round trip of users.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use comb_contracts::auth::Claims;
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_kit::clock::now_ms;
use comb_kit::grpc::Upstream;

/// How long one poll waits for a revocation; the users upstream's call timeout exceeds it.
const WAIT: Duration = Duration::from_secs(15);
/// After a failed poll, the wait before the next, doubling while polls keep failing.
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);

/// The revocations this gateway knows of.
#[derive(Debug, Default)]
pub struct Revocations {
    known: RwLock<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Revoked token ids and when each token expires (seconds since the epoch).
    tokens: HashMap<String, u64>,
    /// Per account, the first session generation still valid.
    generations: HashMap<String, u64>,
    /// The newest revocation learnt from users (milliseconds), where the next poll starts.
    newest_ms: i64,
}

impl Revocations {
    /// Follows the revocations of the users instances the configuration names. Must be
    /// called inside a Tokio runtime.
    pub fn follow(config: &comb_kit::ServiceConfig) -> anyhow::Result<Arc<Self>> {
        let upstream =
            Upstream::from_config_with_timeout(config, "users", WAIT + Duration::from_secs(5))?;
        let revocations = Arc::new(Self::default());
        let client = UsersClient::new(upstream.untraced_channel());
        tokio::spawn(follow(Arc::downgrade(&revocations), client));
        Ok(revocations)
    }

    /// Whether a token with these (verified) claims has been revoked.
    pub fn refuses(&self, claims: &Claims) -> bool {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.tokens.contains_key(&claims.jti)
            || known
                .generations
                .get(&claims.sub)
                .is_some_and(|&first_valid| claims.generation < first_valid)
    }

    /// A token this gateway has just had revoked: refused from now on, before users says so.
    pub fn revoked(&self, claims: &Claims) {
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .tokens
            .insert(claims.jti.clone(), claims.exp);
    }

    /// How many revoked tokens are remembered.
    pub fn tokens(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .tokens
            .len()
    }

    fn newest_ms(&self) -> i64 {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .newest_ms
    }

    fn learn(&self, items: Vec<proto::Revocation>) {
        let now_secs = u64::try_from(now_ms() / 1000).unwrap_or_default();
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        for item in items {
            // Never 0 after the first answer: 0 asks for everything at once.
            known.newest_ms = known.newest_ms.max(item.revoked_at_ms).max(1);
            if item.token_id.is_empty() {
                let first_valid = known.generations.entry(item.subject).or_default();
                *first_valid = (*first_valid).max(item.sessions_from);
            } else {
                known.tokens.insert(item.token_id, item.expires_at);
            }
        }
        known.newest_ms = known.newest_ms.max(1);
        known.tokens.retain(|_, expires_at| *expires_at >= now_secs);
        metrics::gauge!("comb_gateway_revoked_tokens").set(known.tokens.len() as f64);
    }
}

async fn follow(
    revocations: Weak<Revocations>,
    mut client: UsersClient<comb_kit::client::UpstreamChannel>,
) {
    let wait_ms = u32::try_from(WAIT.as_millis()).unwrap_or(u32::MAX);
    let mut retry_after = RETRY_AFTER;
    loop {
        let Some(after_ms) = revocations.upgrade().map(|known| known.newest_ms()) else {
            return;
        };
        let answer = client
            .watch_revocations(proto::WatchRevocationsRequest { after_ms, wait_ms })
            .await;
        let Some(known) = revocations.upgrade() else {
            return;
        };
        match answer {
            Ok(answer) => {
                known.learn(answer.into_inner().items);
                retry_after = RETRY_AFTER;
            }
            Err(status) => {
                drop(known);
                tracing::debug!(%status, "following users' revocations failed; trying again");
                tokio::time::sleep(retry_after).await;
                retry_after = (retry_after * 2).min(RETRY_AFTER_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comb_contracts::auth::{AUDIENCE, ISSUER, Role};

    fn claims(sub: &str, jti: &str, generation: u64) -> Claims {
        Claims {
            sub: sub.into(),
            role: Role::Customer,
            email: None,
            name: None,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: jti.into(),
            generation,
            iat: 0,
            exp: u64::try_from(now_ms() / 1000).unwrap_or_default() + 3600,
        }
    }

    fn revocation(
        token_id: &str,
        subject: &str,
        expires_at: u64,
        sessions_from: u64,
    ) -> proto::Revocation {
        proto::Revocation {
            token_id: token_id.into(),
            subject: subject.into(),
            expires_at,
            sessions_from,
            revoked_at_ms: now_ms(),
        }
    }

    #[test]
    fn a_revoked_token_is_refused_and_others_are_not() {
        let revocations = Revocations::default();
        let ended = claims("u1", "t1", 0);
        assert!(!revocations.refuses(&ended));
        revocations.revoked(&ended);
        assert!(revocations.refuses(&ended));
        assert!(!revocations.refuses(&claims("u1", "t2", 0)));
    }

    #[test]
    fn a_new_generation_refuses_the_older_tokens_of_that_account_only() {
        let revocations = Revocations::default();
        revocations.learn(vec![revocation("", "admin", 0, 2)]);
        assert!(revocations.refuses(&claims("admin", "a", 1)));
        assert!(!revocations.refuses(&claims("admin", "b", 2)));
        assert!(!revocations.refuses(&claims("someone", "c", 0)));
        // An older generation learnt late does not lower the bar.
        revocations.learn(vec![revocation("", "admin", 0, 1)]);
        assert!(revocations.refuses(&claims("admin", "a", 1)));
    }

    #[test]
    fn expired_revocations_are_forgotten_and_the_position_never_returns_to_zero() {
        let revocations = Revocations::default();
        revocations.learn(Vec::new());
        assert_eq!(revocations.newest_ms(), 1);
        revocations.learn(vec![
            revocation("old", "u", 1, 0),
            revocation("live", "u", u64::MAX, 0),
        ]);
        assert_eq!(revocations.tokens(), 1);
        assert!(revocations.newest_ms() > 1);
    }
}
