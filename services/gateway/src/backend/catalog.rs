//! Products, answered by the catalog: pages of them, search and categories as
//! conditional reads ([`Read`]), and one product with its stock (inventory), newest
//! reviews (reviews) and what is bought with it (recommendations). Answers that are
//! current are kept (see [`crate::kept`]) and served without a call.

use std::sync::Arc;

use comb_contracts::catalog::v1 as proto;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_contracts::inventory::v1 as inventory;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_contracts::recommendations::v1 as recommendations;
use comb_contracts::recommendations::v1::recommendations_client::RecommendationsClient;
use comb_kit::Problem;
use comb_kit::grpc::{Answer, UpstreamChannel};
use comb_kit::versions::label_of;

use super::SIDE_DEADLINE;
use crate::GatewayState;
use crate::catalog::{
    Category, CategoryList, Product, ProductDetail, ProductKind, ProductList, Stock, malformed,
    product_from_proto, products,
};

fn client(state: &GatewayState) -> CatalogClient<UpstreamChannel> {
    CatalogClient::new(state.catalog.channel())
}

/// A conditional read of the catalog: asked with the version of an answer the caller
/// holds, the catalog says whether it still stands or sends the new one.
#[derive(Debug)]
pub enum Read<T> {
    /// The answer the caller holds is current.
    Unchanged,
    /// The answer as of the catalog's `version`.
    Changed { version: u64, answer: T },
}

impl<T> Read<T> {
    /// The new answer; an unconditional read (`if_version` 0) always has one.
    pub fn changed(self) -> Option<T> {
        match self {
            Self::Unchanged => None,
            Self::Changed { answer, .. } => Some(answer),
        }
    }
}

/// Which products a page lists.
#[derive(Debug, Default)]
pub struct Listing {
    pub kind: Option<ProductKind>,
    /// A category slug, or empty for all.
    pub category: String,
    pub limit: u32,
    /// The `next_cursor` of the previous page, or empty for the first.
    pub cursor: String,
}

/// A page of products as `listing` asks, unless the caller's `if_version` still stands.
pub async fn list(
    state: &GatewayState,
    listing: Listing,
    if_version: u64,
) -> Result<Read<ProductList>, Problem> {
    let kind = listing
        .kind
        .map_or(proto::ProductKind::Unspecified, ProductKind::to_proto);
    let found = client(state)
        .list_products(proto::ListProductsRequest {
            kind: kind as i32,
            category: listing.category,
            limit: listing.limit,
            cursor: listing.cursor,
            if_version,
        })
        .await
        .answered_by(&state.catalog)?;
    if found.not_modified {
        return Ok(Read::Unchanged);
    }
    Ok(Read::Changed {
        version: found.version,
        answer: ProductList {
            items: products(found.items)?,
            next_cursor: Some(found.next_cursor).filter(|cursor| !cursor.is_empty()),
        },
    })
}

/// The products matching `text`, best first, unless the caller's `if_version` still stands.
pub async fn search(
    state: &GatewayState,
    text: String,
    limit: u32,
    if_version: u64,
) -> Result<Read<ProductList>, Problem> {
    let found = client(state)
        .search_products(proto::SearchProductsRequest {
            query: text,
            limit,
            if_version,
        })
        .await
        .answered_by(&state.catalog)?;
    if found.not_modified {
        return Ok(Read::Unchanged);
    }
    Ok(Read::Changed {
        version: found.version,
        answer: ProductList {
            items: products(found.items)?,
            next_cursor: None,
        },
    })
}

/// Every category, unless the caller's `if_version` still stands.
pub async fn categories(
    state: &GatewayState,
    if_version: u64,
) -> Result<Read<CategoryList>, Problem> {
    let found = client(state)
        .list_categories(proto::ListCategoriesRequest { if_version })
        .await
        .answered_by(&state.catalog)?;
    if found.not_modified {
        return Ok(Read::Unchanged);
    }
    let items = found
        .items
        .into_iter()
        .map(|category| {
            Ok(Category {
                kind: ProductKind::from_proto(category.kind)
                    .ok_or_else(|| malformed(&format!("category {} has no kind", category.slug)))?,
                slug: category.slug,
                name: category.name,
                product_count: category.product_count,
            })
        })
        .collect::<Result<_, Problem>>()?;
    Ok(Read::Changed {
        version: found.version,
        answer: CategoryList {
            items,
            next_cursor: None,
        },
    })
}

/// Product `id` with its stock, newest reviews and what is bought with it. The product
/// must be there; the other three each have a short deadline of their own (carried into
/// their calls), and the answer names those that did not make it.
pub async fn product_detail(state: &GatewayState, id: String) -> Result<ProductDetail, Problem> {
    let product = product(state, &id).await?;
    // The page does not wait long for, nor fail because of, its stock, reviews and
    // recommendations: each has a short deadline of its own, carried into its calls.
    let side_deadline = tokio::time::Instant::now() + SIDE_DEADLINE;
    let (stock, recommendations, reviews) = comb_kit::deadline::within(side_deadline, async {
        tokio::join!(
            tokio::time::timeout(SIDE_DEADLINE, available(state, product.sku.clone())),
            tokio::time::timeout(SIDE_DEADLINE, bought_with(state, id.clone())),
            tokio::time::timeout(SIDE_DEADLINE, super::reviews::newest(state, id)),
        )
    })
    .await;
    let stock = stock.ok().flatten().map(|available| Stock { available });
    let recommendations = recommendations
        .ok()
        .and_then(Result::ok)
        .map(|kept| (*kept).clone());
    let reviews = reviews
        .ok()
        .and_then(Result::ok)
        .map(|kept| (*kept).clone());
    let mut unavailable = Vec::new();
    if stock.is_none() {
        unavailable.push("stock".to_owned());
    }
    if reviews.is_none() {
        unavailable.push("reviews".to_owned());
    }
    if recommendations.is_none() {
        unavailable.push("recommendations".to_owned());
    }
    Ok(ProductDetail {
        product: product_from_proto((*product).clone())?,
        stock,
        reviews,
        recommendations,
        unavailable,
    })
}

/// The product with this id (and its rating): the one kept while it is current, else the
/// catalog's.
pub async fn product(state: &GatewayState, id: &str) -> Result<Arc<proto::Product>, Problem> {
    let version = state.watches.catalog.current();
    if let Some(kept) = state.kept.products.current(id, version) {
        return Ok(kept);
    }
    let found = client(state)
        .get_product(proto::GetProductRequest { id: id.to_owned() })
        .await
        .map_err(|status| state.catalog.problem(&status))?;
    let label = label_of(&found);
    let product = Arc::new(found.into_inner());
    if label != 0 {
        state
            .kept
            .products
            .keep(id.to_owned(), label, Arc::clone(&product));
    }
    Ok(product)
}

/// The products most often bought with `id`, as summaries: those kept while both the
/// recommendations and the catalog are as they were, else asked for.
pub async fn bought_with(state: &GatewayState, id: String) -> Result<Arc<Vec<Product>>, Problem> {
    let versions = (
        state.watches.recommendations.current(),
        state.watches.catalog.current(),
    );
    if versions.0 != 0
        && versions.1 != 0
        && let Some(kept) = state.kept.bought_with.current(&id, versions)
    {
        return Ok(kept);
    }
    let found = RecommendationsClient::new(state.recommendations.channel())
        .for_product(recommendations::ForProductRequest {
            product_id: id.clone(),
            limit: 5,
        })
        .await
        .map_err(|status| state.recommendations.problem(&status))?;
    let recommendations_label = label_of(&found);
    let ids: Vec<String> = found
        .into_inner()
        .items
        .into_iter()
        .map(|item| item.product_id)
        .collect();
    let (catalog_label, summaries) = if ids.is_empty() {
        // Nothing to describe: the answer stands whatever the catalog does.
        (versions.1, Vec::new())
    } else {
        let found = client(state)
            .get_products(proto::GetProductsRequest { ids })
            .await
            .map_err(|status| state.catalog.problem(&status))?;
        (label_of(&found), products(found.into_inner().items)?)
    };
    let summaries = Arc::new(summaries);
    if recommendations_label != 0 && catalog_label != 0 {
        state.kept.bought_with.keep(
            id,
            (recommendations_label, catalog_label),
            Arc::clone(&summaries),
        );
    }
    Ok(summaries)
}

/// How many of `sku` can be bought now; `None` when inventory does not answer.
pub async fn available(state: &GatewayState, sku: String) -> Option<i64> {
    InventoryClient::new(state.inventory.channel())
        .get_stock(inventory::GetStockRequest { skus: vec![sku] })
        .await
        .ok()
        .and_then(|found| found.into_inner().items.into_iter().next())
        .map(|level| level.available)
}
