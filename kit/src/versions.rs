//! Data versions across services. A service serves its [`DataVersion`] (as a tag) to
//! callers that keep its answers ([`version_routes`]), and it labels answers worth keeping
//! with the version they were read at ([`label`]). A caller watches each such service
//! ([`VersionWatch`]) and serves a kept answer without calling again while the label is the
//! newest version it knows: the read then costs the caller alone.
//!
//! How fresh a kept answer is: a change the service commits is seen by its watchers within
//! a round trip (another instance sharing its database within the version's poll, see
//! [`crate::changes`]). A caller that wrote through the service itself calls
//! [`VersionWatch::wrote`], and serves nothing kept until it has learnt the version that
//! includes its write, so its callers read their own writes.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use comb_contracts::versions::v1 as proto;
use comb_contracts::versions::v1::data_versions_client::DataVersionsClient;
use comb_contracts::versions::v1::data_versions_server::{DataVersions, DataVersionsServer};
use tokio::sync::Notify;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::changes::DataVersion;
use crate::client::Upstream;
use crate::server::add_grpc;
use crate::storage::Database;

/// The metadata key of an answer's version label.
pub const VERSION_HEADER: &str = "comb-data-version";

/// The longest a watch waits for a change before answering with the same version.
pub const MAX_WAIT_MS: u32 = 30_000;

/// How long a watcher's poll waits; its call timeout must be longer.
pub const WATCH_WAIT: Duration = Duration::from_secs(15);

/// After a failed watch, the wait before the next, doubling while watches keep failing (an
/// instance that does not serve versions yet costs a call every few seconds, not a busy
/// loop); nothing kept is served meanwhile.
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);

/// Labels an answer with the version of the data it was read from (read before the data,
/// so the data is at least that new).
pub fn label<T>(answer: T, version: DataVersion) -> Response<T> {
    let mut response = Response::new(answer);
    response
        .metadata_mut()
        .insert(VERSION_HEADER, MetadataValue::from(version.tag()));
    response
}

/// The version an answer is labelled with; 0 when it has none (never kept).
pub fn label_of<T>(response: &Response<T>) -> u64 {
    response
        .metadata()
        .get(VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Versions {
    db: Database,
}

#[tonic::async_trait]
impl DataVersions for Versions {
    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<proto::WatchResponse>, Status> {
        let draining = crate::server::Draining::of(request.extensions());
        let request = request.into_inner();
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(MAX_WAIT_MS)));
        let mut versions = self.db.watch_data_version();
        let after = request.after;
        let changed = async {
            let _ = tokio::time::timeout(wait, versions.wait_for(|version| version.tag() != after))
                .await;
            versions.borrow().tag()
        };
        let version = tokio::select! {
            version = changed => version,
            // A stopping instance vouches for nothing: its watchers stop serving what they
            // kept until they learn the version elsewhere.
            () = draining.started() => 0,
        };
        Ok(Response::new(proto::WatchResponse { version }))
    }
}

/// Adds the watch of this service's data version to its routes.
pub fn version_routes(router: axum::Router, db: &Database) -> axum::Router {
    add_grpc(router, DataVersionsServer::new(Versions { db: db.clone() }))
}

/// What a watcher knows: the newest version, 0 while unknown, and how many writes of the
/// caller's own made it forget (an answer to a watch begun before a write is not kept).
#[derive(Debug, Default)]
struct Known {
    version: u64,
    writes: u64,
}

#[derive(Debug, Default)]
struct Watched {
    known: Mutex<Known>,
    /// Asks the watcher to forget its poll and ask afresh.
    renew: Notify,
}

impl Watched {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The newest known data version of one upstream service, kept up to date by one long poll
/// in the background for as long as the watch is held.
#[derive(Debug, Clone)]
pub struct VersionWatch {
    watched: Arc<Watched>,
}

impl VersionWatch {
    /// Watches the service `upstream` calls; its call timeout must exceed [`WATCH_WAIT`].
    /// Must be called inside a Tokio runtime.
    pub fn start(upstream: &Upstream) -> Self {
        let watched = Arc::new(Watched::default());
        let client = DataVersionsClient::new(upstream.untraced_channel());
        tokio::spawn(watch(Arc::downgrade(&watched), client));
        Self { watched }
    }

    /// A watch that never learns a version: nothing kept is ever served.
    pub fn unknown() -> Self {
        Self {
            watched: Arc::default(),
        }
    }

    /// The newest version known; 0 when unknown.
    pub fn current(&self) -> u64 {
        self.watched.known().version
    }

    /// Whether an answer labelled `label` is the newest.
    pub fn is_current(&self, label: u64) -> bool {
        label != 0 && label == self.current()
    }

    /// This caller has just changed the service's data: kept answers are not served until
    /// the version after the change is known.
    pub fn wrote(&self) {
        let mut known = self.watched.known();
        known.version = 0;
        known.writes += 1;
        drop(known);
        self.watched.renew.notify_one();
    }
}

async fn watch(
    watched: Weak<Watched>,
    mut client: DataVersionsClient<crate::client::UpstreamChannel>,
) {
    let wait_ms = u32::try_from(WATCH_WAIT.as_millis()).unwrap_or(MAX_WAIT_MS);
    let mut retry_after = RETRY_AFTER;
    loop {
        let Some(strong) = watched.upgrade() else {
            return;
        };
        let (after, writes) = {
            let known = strong.known();
            (known.version, known.writes)
        };
        let call = client.watch(proto::WatchRequest { after, wait_ms });
        let answer = tokio::select! {
            answer = call => answer,
            () = strong.renew.notified() => continue,
        };
        let failed = answer.is_err();
        {
            let mut known = strong.known();
            if known.writes == writes {
                known.version = answer.map_or(0, |answer| answer.into_inner().version);
            }
        }
        drop(strong);
        if failed {
            tokio::time::sleep(retry_after).await;
            retry_after = (retry_after * 2).min(RETRY_AFTER_MAX);
        } else {
            retry_after = RETRY_AFTER;
        }
    }
}

/// Answers kept by a caller, each with the version label it was read at (any `Copy` label:
/// one service's version, or a pair for an answer made of two services' data), at most
/// `capacity` of them (past that the cache starts over).
#[derive(Debug)]
pub struct KeptAnswers<K, V, L = u64> {
    answers: Mutex<std::collections::HashMap<K, (L, V)>>,
    capacity: usize,
}

impl<K: Eq + std::hash::Hash, V: Clone, L: Copy + PartialEq> KeptAnswers<K, V, L> {
    pub fn new(capacity: usize) -> Self {
        Self {
            answers: Mutex::new(std::collections::HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The answer kept for `key` and its label, current or not.
    pub fn get<Q>(&self, key: &Q) -> Option<(L, V)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The answer kept for `key` when its label is `current`.
    pub fn current<Q>(&self, key: &Q, current: L) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.get(key)
            .and_then(|(label, value)| (label == current).then_some(value))
    }

    /// Keeps an answer read at `label`.
    pub fn keep(&self, key: K, label: L, value: V) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= self.capacity && !answers.contains_key(&key) {
            answers.clear();
        }
        answers.insert(key, (label, value));
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_carries_its_label() {
        let version = DataVersion {
            outbox: 3,
            consumed: 4,
        };
        let response = label((), version);
        assert_eq!(label_of(&response), version.tag());
        assert_eq!(label_of(&Response::new(())), 0, "no label, never kept");
    }

    #[test]
    fn kept_answers_are_served_only_at_their_label_and_bounded() {
        let kept: KeptAnswers<String, u32> = KeptAnswers::new(4);
        assert_eq!(kept.current("a", 1), None);
        kept.keep("a".into(), 7, 1);
        assert_eq!(kept.current("a", 7), Some(1));
        assert_eq!(kept.current("a", 8), None, "a newer version is not served");
        assert_eq!(kept.get("a"), Some((7, 1)));
        for n in 0..10 {
            kept.keep(format!("k{n}"), 1, n);
        }
        assert!(kept.len() <= 4, "{}", kept.len());
    }

    #[test]
    fn a_write_forgets_the_version_until_it_is_learnt_again() {
        let watch = VersionWatch::unknown();
        assert!(!watch.is_current(0), "0 is never current");
        watch.watched.known().version = 5;
        assert!(watch.is_current(5));
        watch.wrote();
        assert_eq!(watch.current(), 0);
        assert!(!watch.is_current(5));
    }
}
