//! Read caches that last as long as the data they were read from: each entry belongs to a
//! [`DataVersion`] of the service's database, and a newer version empties the cache. A
//! service keeps what it reads often here and never serves an answer older than its
//! version (see [`crate::changes`] for how soon a version is seen).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use crate::changes::DataVersion;

/// Values by key, for one data version at a time, at most `capacity` of them (past that
/// the cache starts over, so one-off keys cannot grow it without bound).
#[derive(Debug)]
pub struct VersionedCache<K, V> {
    entries: Mutex<(DataVersion, HashMap<K, V>)>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> VersionedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new((DataVersion::default(), HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// The value kept for `key` at `version`; entries of another version are dropped.
    pub fn get<Q>(&self, version: DataVersion, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.0 != version {
            *entries = (version, HashMap::new());
            return None;
        }
        entries.1.get(key).cloned()
    }

    /// Keeps a value read at `version`, unless the data has moved on meanwhile (then the
    /// value may be stale, and is not kept).
    pub fn keep(&self, version: DataVersion, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.0 != version {
            return;
        }
        if entries.1.len() >= self.capacity {
            entries.1.clear();
        }
        entries.1.insert(key, value);
    }

    /// How many values are kept.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(outbox: i64) -> DataVersion {
        DataVersion {
            outbox,
            consumed: 0,
        }
    }

    #[test]
    fn values_last_until_the_version_moves_on() {
        let cache: VersionedCache<String, u32> = VersionedCache::new(10);
        assert_eq!(cache.get(version(1), "a"), None);
        cache.keep(version(1), "a".into(), 7);
        assert_eq!(cache.get(version(1), "a"), Some(7));
        assert_eq!(
            cache.get(version(2), "a"),
            None,
            "a newer version starts empty"
        );
        // A value read at the old version that arrives late is not kept.
        cache.keep(version(1), "a".into(), 7);
        assert_eq!(cache.get(version(2), "a"), None);
        cache.keep(version(2), "a".into(), 8);
        assert_eq!(cache.get(version(2), "a"), Some(8));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache: VersionedCache<u32, u32> = VersionedCache::new(4);
        let _ = cache.get(version(1), &0);
        for key in 0..10 {
            cache.keep(version(1), key, key);
        }
        assert!(cache.len() <= 4, "{}", cache.len());
    }
}
