//! The catalog's read cache: answers to lists, searches, categories and single products,
//! kept until the catalog's data version moves on (a product written or a review counted,
//! here or by another instance; see `comb_kit::changes`). The catalog is read far more
//! than it is written, so most reads never reach the database.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use comb_contracts::catalog::v1 as proto;
use comb_kit::changes::DataVersion;

/// Entries kept per kind of answer; past this, that kind starts over (a burst of one-off
/// searches must not grow the instance without bound).
const MAX_ENTRIES: usize = 1024;
/// Single products kept: the whole catalog of a typical shop.
const MAX_PRODUCTS: usize = 10_000;

/// What identifies a page of products.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    pub kind: i32,
    pub category: String,
    pub limit: u32,
    pub cursor: String,
}

#[derive(Debug, Default)]
struct Entries {
    version: DataVersion,
    lists: HashMap<ListKey, Arc<proto::ListProductsResponse>>,
    searches: HashMap<(String, u32), Arc<proto::SearchProductsResponse>>,
    /// Products as batches answer them: without their rating.
    products: HashMap<String, Arc<proto::Product>>,
    /// Each product's rating summary, `None` before its first review.
    ratings: HashMap<String, Option<proto::RatingSummary>>,
    categories: Option<Arc<proto::ListCategoriesResponse>>,
}

impl Entries {
    fn clear(&mut self, version: DataVersion) {
        *self = Self {
            version,
            ..Self::default()
        };
    }
}

/// Answers by what was asked, for one data version at a time.
#[derive(Debug, Default)]
pub struct ReadCache {
    entries: Mutex<Entries>,
}

fn bounded_insert<K: Eq + Hash, V>(map: &mut HashMap<K, V>, limit: usize, key: K, value: V) {
    if map.len() >= limit {
        map.clear();
    }
    map.insert(key, value);
}

impl ReadCache {
    /// The entries of `version`; older ones are dropped first.
    fn at(&self, version: DataVersion) -> MutexGuard<'_, Entries> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version != version {
            entries.clear(version);
        }
        entries
    }

    pub fn list(
        &self,
        version: DataVersion,
        key: &ListKey,
    ) -> Option<Arc<proto::ListProductsResponse>> {
        self.at(version).lists.get(key).cloned()
    }

    /// Keeps an answer read at `version`, unless the data has moved on meanwhile.
    pub fn keep_list(
        &self,
        version: DataVersion,
        key: ListKey,
        answer: Arc<proto::ListProductsResponse>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version == version {
            bounded_insert(&mut entries.lists, MAX_ENTRIES, key, answer);
        }
    }

    pub fn search(
        &self,
        version: DataVersion,
        key: &(String, u32),
    ) -> Option<Arc<proto::SearchProductsResponse>> {
        self.at(version).searches.get(key).cloned()
    }

    pub fn keep_search(
        &self,
        version: DataVersion,
        key: (String, u32),
        answer: Arc<proto::SearchProductsResponse>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version == version {
            bounded_insert(&mut entries.searches, MAX_ENTRIES, key, answer);
        }
    }

    /// Products by id (without rating), and the ids not kept.
    pub fn products(
        &self,
        version: DataVersion,
        ids: &[String],
    ) -> (Vec<Option<Arc<proto::Product>>>, Vec<String>) {
        let entries = self.at(version);
        let found: Vec<_> = ids
            .iter()
            .map(|id| entries.products.get(id).cloned())
            .collect();
        let missing = ids
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        (found, missing)
    }

    pub fn keep_products(&self, version: DataVersion, products: &[Arc<proto::Product>]) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version == version {
            for product in products {
                bounded_insert(
                    &mut entries.products,
                    MAX_PRODUCTS,
                    product.id.clone(),
                    Arc::clone(product),
                );
            }
        }
    }

    /// A product's rating summary, if kept (`Some(None)`: it has no reviews yet).
    pub fn rating(&self, version: DataVersion, id: &str) -> Option<Option<proto::RatingSummary>> {
        self.at(version).ratings.get(id).cloned()
    }

    pub fn keep_rating(
        &self,
        version: DataVersion,
        id: &str,
        rating: Option<proto::RatingSummary>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version == version {
            bounded_insert(&mut entries.ratings, MAX_PRODUCTS, id.to_owned(), rating);
        }
    }

    pub fn categories(&self, version: DataVersion) -> Option<Arc<proto::ListCategoriesResponse>> {
        self.at(version).categories.clone()
    }

    pub fn keep_categories(
        &self,
        version: DataVersion,
        answer: Arc<proto::ListCategoriesResponse>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.version == version {
            entries.categories = Some(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(limit: u32) -> ListKey {
        ListKey {
            kind: 0,
            category: String::new(),
            limit,
            cursor: String::new(),
        }
    }

    #[test]
    fn answers_last_until_the_version_moves_on() {
        let cache = ReadCache::default();
        let first = DataVersion {
            outbox: 1,
            consumed: 0,
        };
        let answer = Arc::new(proto::ListProductsResponse::default());
        assert!(cache.list(first, &key(20)).is_none());
        cache.keep_list(first, key(20), Arc::clone(&answer));
        assert!(cache.list(first, &key(20)).is_some());
        assert!(cache.list(first, &key(10)).is_none(), "another page");
        let next = DataVersion {
            outbox: 2,
            consumed: 0,
        };
        assert!(
            cache.list(next, &key(20)).is_none(),
            "a new version starts empty"
        );
        // An answer read at the old version arrives late: it is not kept.
        cache.keep_list(first, key(20), answer);
        assert!(cache.list(next, &key(20)).is_none());
    }

    #[test]
    fn entries_are_bounded() {
        let cache = ReadCache::default();
        let version = DataVersion::default();
        for limit in 0..(MAX_ENTRIES as u32 + 10) {
            cache.keep_list(version, key(limit), Arc::default());
        }
        let kept = cache.entries.lock().expect("lock").lists.len();
        assert!(kept <= MAX_ENTRIES, "{kept}");
    }
}
