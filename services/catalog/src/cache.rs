//! The catalog's read cache: answers to lists, searches, categories and single products,
//! kept until the catalog's data version moves on (a product written or a review counted,
//! here or by another instance; see `comb_kit::changes`). The catalog is read far more
//! than it is written, so most reads never reach the database.

use std::sync::Arc;

use comb_contracts::catalog::v1 as proto;
use comb_kit::cache::VersionedCache;

/// Answers kept per kind; past this, that kind starts over (a burst of one-off searches
/// must not grow the instance without bound).
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

/// The catalog's answers, by what was asked.
#[derive(Debug)]
pub struct ReadCache {
    pub lists: VersionedCache<ListKey, Arc<proto::ListProductsResponse>>,
    pub searches: VersionedCache<(String, u32), Arc<proto::SearchProductsResponse>>,
    /// Products as batches answer them: without their rating.
    pub products: VersionedCache<String, Arc<proto::Product>>,
    /// Each product's rating summary, `None` before its first review.
    pub ratings: VersionedCache<String, Option<proto::RatingSummary>>,
    pub categories: VersionedCache<(), Arc<proto::ListCategoriesResponse>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            lists: VersionedCache::new(MAX_ENTRIES),
            searches: VersionedCache::new(MAX_ENTRIES),
            products: VersionedCache::new(MAX_PRODUCTS),
            ratings: VersionedCache::new(MAX_PRODUCTS),
            categories: VersionedCache::new(1),
        }
    }
}
