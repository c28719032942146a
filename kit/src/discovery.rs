//! Where the instances of every service are, as the launcher (`comb up`) knows it. One long
//! poll per process covers every service it calls: the launcher answers as soon as an
//! instance becomes ready or leaves, so callers hear of it at once, and while nothing
//! changes nobody asks anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The ready instances of every service, and the version of that list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Grows with every change; 0 before the first answer.
    pub version: u64,
    /// Service → base URLs of its ready instances.
    pub services: BTreeMap<String, Vec<String>>,
}

/// How long the launcher holds a discovery request that has nothing new.
pub const LONG_POLL: Duration = Duration::from_secs(20);

type Watchers = HashMap<String, watch::Sender<Arc<Snapshot>>>;

fn watchers() -> &'static Mutex<Watchers> {
    static WATCHERS: OnceLock<Mutex<Watchers>> = OnceLock::new();
    WATCHERS.get_or_init(Mutex::default)
}

/// The instances `url` (the launcher's `/discovery`) reports, kept current by one long
/// poll per URL in this process, which ends when nobody watches any more.
pub fn watch(url: &str) -> watch::Receiver<Arc<Snapshot>> {
    let mut watchers = watchers().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = watchers.get(url) {
        return sender.subscribe();
    }
    let (sender, receiver) = watch::channel(Arc::new(Snapshot::default()));
    watchers.insert(url.to_owned(), sender.clone());
    tokio::spawn(long_poll(url.to_owned(), sender));
    receiver
}

async fn long_poll(url: String, sender: watch::Sender<Arc<Snapshot>>) {
    let client = reqwest::Client::builder()
        .timeout(LONG_POLL + Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut failures: u32 = 0;
    loop {
        if sender.receiver_count() == 0 {
            watchers()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&url);
            return;
        }
        let after = sender.borrow().version;
        let answer = match client.get(format!("{url}?after={after}")).send().await {
            Ok(response) => response.json::<Snapshot>().await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(snapshot) => {
                failures = 0;
                if snapshot.version != after {
                    sender.send_replace(Arc::new(snapshot));
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::debug!(%url, %error, "discovery does not answer; keeping the known instances");
                }
                let pause = Duration::from_millis(250 * u64::from(failures.min(8)));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_the_launchers_answer() {
        let answer = r#"{"version":3,"services":{"catalog":["http://127.0.0.1:1"]}}"#;
        let snapshot: Snapshot = serde_json::from_str(answer).expect("a snapshot");
        assert_eq!(snapshot.version, 3);
        assert_eq!(snapshot.services["catalog"], ["http://127.0.0.1:1"]);
    }
}
