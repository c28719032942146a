//! Password hashing with argon2id, off the async threads (a hash takes tens of
//! milliseconds and about 19 MiB by design), a bounded number at a time: a burst of
//! sign-ins waits briefly for a turn and is then refused, so it can exhaust neither the
//! instance's memory nor its CPU.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

/// Hashes run at once by default (the `password_hashes` setting).
pub const DEFAULT_CONCURRENT_HASHES: usize = 2;

/// How long a hash waits for a turn before it is refused.
const TURN_WAIT: Duration = Duration::from_secs(1);

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many passwords are being checked at once; retry in a moment")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The turns of hashing in this instance.
#[derive(Debug)]
pub struct Hashing {
    turns: Semaphore,
    wait: Duration,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Hashing {
    pub fn new(concurrent: usize, wait: Duration) -> Self {
        Self {
            turns: Semaphore::new(concurrent.max(1)),
            wait,
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        }
    }

    /// The most hashes that ever ran at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }

    /// Runs `work` on the blocking pool once a turn is free; refused if none is within the
    /// wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let Ok(Ok(turn)) = tokio::time::timeout(self.wait, self.turns.acquire()).await else {
            metrics::counter!("comb_password_hashes_refused_total").increment(1);
            return Err(HashError::Busy);
        };
        let running = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        let most = self.most.fetch_max(running, Ordering::AcqRel).max(running);
        metrics::gauge!("comb_password_hashes_most_at_once").set(most as f64);
        let done = tokio::task::spawn_blocking(work).await;
        self.running.fetch_sub(1, Ordering::AcqRel);
        drop(turn);
        done.map_err(|error| HashError::Failed(error.to_string()))
    }
}

static HASHING: OnceLock<Hashing> = OnceLock::new();

/// Sets how many hashes run at once in this process; only the first call counts, and only
/// before the first hash.
pub fn set_concurrency(concurrent: usize) {
    let _ = HASHING.set(Hashing::new(concurrent, TURN_WAIT));
}

fn hashing() -> &'static Hashing {
    HASHING.get_or_init(|| Hashing::new(DEFAULT_CONCURRENT_HASHES, TURN_WAIT))
}

/// The PHC string (`$argon2id$v=19$...`) of a password, with a fresh random salt.
pub async fn hash(password: String) -> Result<String, HashError> {
    hash_with(hashing(), password).await
}

async fn hash_with(hashing: &Hashing, password: String) -> Result<String, HashError> {
    hashing
        .run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|error| HashError::Failed(error.to_string()))
        })
        .await?
}

/// Whether `password` matches `stored`, a PHC string. With no stored hash (an unknown
/// email) the same work is done against a decoy, so timing does not tell which emails
/// have accounts.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, HashError> {
    verify_with(hashing(), password, stored).await
}

async fn verify_with(
    hashing: &Hashing,
    password: String,
    stored: Option<String>,
) -> Result<bool, HashError> {
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| decoy().to_owned());
    let matched = hashing
        .run(move || {
            PasswordHash::new(&stored).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await?;
    Ok(known && matched)
}

fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes())
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let first = hash("correct horse battery".into()).await.expect("hash");
        let second = hash("correct horse battery".into()).await.expect("hash");
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "a fresh salt each time");
        assert!(
            verify("correct horse battery".into(), Some(first.clone()))
                .await
                .expect("checked")
        );
        assert!(
            !verify("wrong horse battery".into(), Some(first))
                .await
                .expect("checked")
        );
        assert!(
            !verify("anything at all".into(), None)
                .await
                .expect("checked")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_the_bound() {
        let hashing: &'static Hashing =
            Box::leak(Box::new(Hashing::new(2, Duration::from_secs(30))));
        let stored = hash_with(hashing, "correct horse battery".into())
            .await
            .expect("hash");
        let mut logins = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let stored = stored.clone();
            logins.spawn(verify_with(
                hashing,
                "correct horse battery".into(),
                Some(stored),
            ));
        }
        while let Some(login) = logins.join_next().await {
            assert!(login.expect("task").expect("a turn within the wait"));
        }
        assert_eq!(hashing.most_at_once(), 2, "the bound, and used");
    }

    #[tokio::test]
    async fn a_hash_with_no_turn_in_time_is_refused() {
        let hashing: &'static Hashing =
            Box::leak(Box::new(Hashing::new(1, Duration::from_millis(20))));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn(hashing.run(move || {
            let _ = released.recv();
        }));
        while hashing.running.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = verify_with(hashing, "any password at all".into(), None).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
        release.send(()).expect("held");
        held.await.expect("task").expect("ran");
    }
}
