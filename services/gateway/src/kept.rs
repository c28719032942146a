//! Answers the gateway keeps between requests, and the data versions that say when they
//! are current. The gateway watches the version of each service whose answers it keeps
//! (`comb_kit::versions`); a kept answer whose label is that service's newest version is
//! served as it is, without a call. The catalog, reviews and recommendations change far
//! less often than they are read, so most product pages cost the gateway alone.

use std::sync::Arc;

use comb_contracts::catalog::v1 as proto;
use comb_kit::client::Upstream;
use comb_kit::versions::{KeptAnswers, VersionWatch, WATCH_WAIT};

use crate::catalog::Product;
use crate::reviews::Review;

/// Answers kept per kind; past this, that kind starts over.
const MAX_KEPT: usize = 4096;

/// The data version of each service whose answers the gateway keeps.
#[derive(Debug, Clone)]
pub struct Watches {
    pub catalog: VersionWatch,
    pub reviews: VersionWatch,
    pub recommendations: VersionWatch,
}

impl Watches {
    /// Watches each service through its instances as the configuration names them.
    pub fn start(config: &comb_kit::ServiceConfig) -> anyhow::Result<Self> {
        let watch = |service: &str| -> anyhow::Result<VersionWatch> {
            let timeout = WATCH_WAIT + std::time::Duration::from_secs(5);
            let upstream = Upstream::from_config_with_timeout(config, service, timeout)?;
            Ok(VersionWatch::start(&upstream))
        };
        Ok(Self {
            catalog: watch("catalog")?,
            reviews: watch("reviews")?,
            recommendations: watch("recommendations")?,
        })
    }

    /// Watches that never know a version: every answer is asked for.
    pub fn unknown() -> Self {
        Self {
            catalog: VersionWatch::unknown(),
            reviews: VersionWatch::unknown(),
            recommendations: VersionWatch::unknown(),
        }
    }
}

/// The answers kept, by what was asked, each labelled with the version it was read at.
#[derive(Debug)]
pub struct Kept {
    /// Single products (with their rating), by id: the catalog's version.
    pub products: KeptAnswers<String, Arc<proto::Product>>,
    /// The newest reviews of a product, by product id: the reviews' version.
    pub reviews: KeptAnswers<String, Arc<Vec<Review>>>,
    /// What is bought with a product, by product id: the versions of recommendations and
    /// of the catalog (the products' summaries).
    pub bought_with: KeptAnswers<String, Arc<Vec<Product>>, (u64, u64)>,
}

impl Default for Kept {
    fn default() -> Self {
        Self {
            products: KeptAnswers::new(MAX_KEPT),
            reviews: KeptAnswers::new(MAX_KEPT),
            bought_with: KeptAnswers::new(MAX_KEPT),
        }
    }
}
