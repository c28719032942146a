//! How far a service's data has moved on: its [`DataVersion`], made of the newest position
//! of its outbox and of the positions it has read other services' feeds to. It moves
//! whenever the service publishes an event or handles one, on every backend.
//!
//! Event feeds wait on it instead of polling for new events. Read caches are invalidated by
//! it, which is right for data that changes only with an event (the catalog's products,
//! reviews, recommendations), and wrong for data that does not (a cart, stock held by a
//! reservation): those are not cached.
//!
//! This instance's own commits are seen at once (the code that commits calls
//! [`Changes::nudge`], or awaits [`Changes::refresh`] when a reader must see its own
//! write); other instances sharing the database are seen within [`POLL_EVERY`]. Nothing
//! polls until somebody watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::storage::{DbError, Engine, query_as};

/// How often a watched database is asked for its version, for changes other instances
/// made.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// A service database's progress: equal versions mean equal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DataVersion {
    /// The newest outbox position (0 when nothing was published).
    pub outbox: i64,
    /// The sum of the feed positions this service has read to; every position only grows.
    pub consumed: i64,
}

impl DataVersion {
    /// One number standing for the version, for callers that only compare versions for
    /// equality (conditional requests). Never 0, which means "no version".
    pub fn tag(&self) -> u64 {
        let outbox = self.outbox as u64;
        let consumed = self.consumed as u64;
        (outbox.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ consumed.rotate_left(29)).max(1)
    }
}

/// The version of one database, shared by every handle to it in this process.
#[derive(Debug)]
pub struct Changes {
    current: watch::Sender<DataVersion>,
    /// Wakes the watcher to read the version now.
    nudged: Notify,
    watching: AtomicBool,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            current: watch::Sender::new(DataVersion::default()),
            nudged: Notify::new(),
            watching: AtomicBool::new(false),
        }
    }
}

const VERSION_QUERY: &str = "SELECT (SELECT COALESCE(MAX(seq), 0) FROM outbox), \
     (SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) FROM feed_positions)";

impl Changes {
    /// The newest version seen, starting the watcher if nobody watched yet.
    pub fn current(self: &Arc<Self>, engine: &Engine) -> DataVersion {
        self.start(engine);
        *self.current.borrow()
    }

    /// A receiver of every new version, starting the watcher if nobody watched yet.
    pub fn subscribe(self: &Arc<Self>, engine: &Engine) -> watch::Receiver<DataVersion> {
        self.start(engine);
        self.current.subscribe()
    }

    /// Something was committed here: read the version soon, without waiting for it.
    pub fn nudge(&self) {
        if self.watching.load(Ordering::Acquire) {
            self.nudged.notify_one();
        }
    }

    /// Reads the version now, so what was just committed is seen by the next reader.
    pub async fn refresh(&self, engine: &Engine) -> Result<DataVersion, DbError> {
        let version = read(engine).await?;
        self.publish(version);
        Ok(version)
    }

    fn publish(&self, version: DataVersion) {
        self.current.send_if_modified(|current| {
            // Positions only grow; an older read finishing late must not go backwards.
            let newer = DataVersion {
                outbox: current.outbox.max(version.outbox),
                consumed: current.consumed.max(version.consumed),
            };
            let changed = newer != *current;
            *current = newer;
            changed
        });
    }

    fn start(self: &Arc<Self>, engine: &Engine) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let changes = Arc::downgrade(self);
        tokio::spawn(watch_version(changes, engine.clone()));
    }
}

async fn read(engine: &Engine) -> Result<DataVersion, DbError> {
    let (outbox, consumed): (i64, i64) = query_as(VERSION_QUERY).fetch_one(engine).await?;
    Ok(DataVersion { outbox, consumed })
}

/// Reads the version when nudged and every [`POLL_EVERY`], for as long as the database is
/// open and somebody holds it.
async fn watch_version(changes: Weak<Changes>, engine: Engine) {
    loop {
        let Some(strong) = changes.upgrade() else {
            return;
        };
        if engine.is_closed() {
            return;
        }
        match read(&engine).await {
            Ok(version) => strong.publish(version),
            Err(error) => tracing::debug!(%error, "cannot read the data version; will retry"),
        }
        // The wait holds the version only until it ends: a database nobody holds any more
        // ends the task within one poll.
        let nudged = async move { strong.nudged.notified().await };
        let _ = tokio::time::timeout(POLL_EVERY, nudged).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_tell_versions_apart_and_are_never_zero() {
        let versions = [
            DataVersion::default(),
            DataVersion {
                outbox: 1,
                consumed: 0,
            },
            DataVersion {
                outbox: 0,
                consumed: 1,
            },
            DataVersion {
                outbox: 2,
                consumed: 5,
            },
            DataVersion {
                outbox: 5,
                consumed: 2,
            },
        ];
        let tags: std::collections::HashSet<u64> = versions.iter().map(DataVersion::tag).collect();
        assert_eq!(tags.len(), versions.len());
        assert!(!tags.contains(&0));
    }

    #[test]
    fn a_late_older_read_never_moves_the_version_back() {
        let changes = Changes::default();
        changes.publish(DataVersion {
            outbox: 5,
            consumed: 3,
        });
        changes.publish(DataVersion {
            outbox: 4,
            consumed: 3,
        });
        assert_eq!(
            *changes.current.borrow(),
            DataVersion {
                outbox: 5,
                consumed: 3
            }
        );
    }
}
