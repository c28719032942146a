//! The catalog's gRPC API: requests are parsed into domain types, store errors become
//! gRPC statuses that say what to fix.

use comb_contracts::catalog::v1 as proto;
use comb_contracts::catalog::v1::catalog_server::Catalog;
use std::collections::HashMap;
use std::sync::Arc;

use comb_kit::changes::DataVersion;
use comb_kit::problem::FieldError;
use tonic::{Request, Response, Status};

use crate::cache::{ListKey, ReadCache};
use crate::domain::{
    Cursor, DEFAULT_PAGE_SIZE, ListFilter, MAX_PAGE_SIZE, Money, Product, ProductDraft,
    ProductInput, ProductKind, SearchQuery, is_slug,
};
use crate::store::{CatalogStore, MAX_BATCH, StoreError};

/// The gRPC face of the catalog. Reads are answered from the read cache while the
/// catalog's data version stands, and a caller holding an answer of the current version
/// (`if_version`) is told it is not modified.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    store: CatalogStore,
    cache: Arc<ReadCache>,
}

impl CatalogApi {
    pub fn new(store: CatalogStore) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    fn version(&self) -> DataVersion {
        self.store.database().data_version()
    }

    /// The products with these ids, in the order asked (unknown ids left out): those read
    /// lately from the cache, the rest from the database. Batches carry no rating.
    async fn products(
        &self,
        version: DataVersion,
        ids: &[String],
    ) -> Result<Vec<Arc<proto::Product>>, Status> {
        let mut found: Vec<Option<Arc<proto::Product>>> = ids
            .iter()
            .map(|id| self.cache.products.get(version, id))
            .collect();
        let missing: Vec<String> = ids
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !missing.is_empty() {
            let read: Vec<Arc<proto::Product>> = self
                .store
                .get_many(&missing)
                .await
                .map_err(store_status)?
                .into_iter()
                .map(|product| Arc::new(product_to_proto(product)))
                .collect();
            for product in &read {
                self.cache
                    .products
                    .keep(version, product.id.clone(), Arc::clone(product));
            }
            let mut read: HashMap<&str, &Arc<proto::Product>> = read
                .iter()
                .map(|product| (product.id.as_str(), product))
                .collect();
            for (id, slot) in ids.iter().zip(found.iter_mut()) {
                if slot.is_none() {
                    *slot = read.remove(id.as_str()).cloned();
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}

#[tonic::async_trait]
impl Catalog for CatalogApi {
    async fn list_products(
        &self,
        request: Request<proto::ListProductsRequest>,
    ) -> Result<Response<proto::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        let kind = kind_from_proto(request.kind, "kind", &mut errors);
        let limit = page_size(request.limit, &mut errors);
        let after = if request.cursor.is_empty() {
            None
        } else {
            Cursor::decode(&request.cursor)
                .map_err(|message| errors.push(FieldError::new("cursor", message)))
                .ok()
        };
        if !request.category.is_empty() && !is_slug(&request.category) {
            errors.push(FieldError::new(
                "category",
                "must be a category slug: lower-case letters, digits and hyphens",
            ));
        }
        if !errors.is_empty() {
            return Err(invalid(&errors));
        }
        let version = self.version();
        if request.if_version == version.tag() {
            return Ok(Response::new(proto::ListProductsResponse {
                version: version.tag(),
                not_modified: true,
                ..Default::default()
            }));
        }
        let key = ListKey {
            kind: request.kind,
            category: request.category.clone(),
            limit,
            cursor: request.cursor.clone(),
        };
        if let Some(answer) = self.cache.lists.get(version, &key) {
            return Ok(Response::new((*answer).clone()));
        }
        let filter = ListFilter {
            kind,
            category: Some(request.category).filter(|category| !category.is_empty()),
            limit,
            after,
        };
        let page = self.store.list(&filter).await.map_err(store_status)?;
        let answer = proto::ListProductsResponse {
            items: page.items.into_iter().map(product_to_proto).collect(),
            next_cursor: page
                .next_cursor
                .map(|cursor| cursor.encode())
                .unwrap_or_default(),
            version: version.tag(),
            not_modified: false,
        };
        self.cache
            .lists
            .keep(version, key, Arc::new(answer.clone()));
        Ok(Response::new(answer))
    }

    async fn get_product(
        &self,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        let id = request.into_inner().id;
        if !is_product_id(&id) {
            return Err(Status::not_found(format!(
                "there is no product with id {id:?}"
            )));
        }
        let version = self.version();
        let Some(product) = self
            .products(version, std::slice::from_ref(&id))
            .await?
            .pop()
        else {
            return Err(Status::not_found(format!(
                "there is no product with id {id:?}"
            )));
        };
        let rating = match self.cache.ratings.get(version, &id) {
            Some(rating) => rating,
            None => {
                let rating = self
                    .store
                    .rating(&id)
                    .await
                    .map_err(store_status)?
                    .filter(|(count, _)| *count > 0)
                    .map(|(count, sum)| proto::RatingSummary {
                        average: (sum as f64 / count as f64 * 10.0).round() / 10.0,
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                    });
                self.cache.ratings.keep(version, id.clone(), rating);
                rating
            }
        };
        let product = proto::Product {
            rating,
            ..(*product).clone()
        };
        Ok(comb_kit::versions::label(product, version))
    }

    async fn get_products(
        &self,
        request: Request<proto::GetProductsRequest>,
    ) -> Result<Response<proto::GetProductsResponse>, Status> {
        let ids = request.into_inner().ids;
        if ids.len() > MAX_BATCH {
            return Err(invalid(&[FieldError::new(
                "ids",
                format!("at most {MAX_BATCH} per call, got {}", ids.len()),
            )]));
        }
        let ids: Vec<String> = ids.into_iter().filter(|id| is_product_id(id)).collect();
        let version = self.version();
        let products = self.products(version, &ids).await?;
        let answer = proto::GetProductsResponse {
            items: products.iter().map(|product| (**product).clone()).collect(),
        };
        Ok(comb_kit::versions::label(answer, version))
    }

    async fn search_products(
        &self,
        request: Request<proto::SearchProductsRequest>,
    ) -> Result<Response<proto::SearchProductsResponse>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        let limit = page_size(request.limit, &mut errors);
        let query = SearchQuery::parse(&request.query)
            .map_err(|message| errors.push(FieldError::new("q", message)))
            .ok();
        let Some(query) = query.filter(|_| errors.is_empty()) else {
            return Err(invalid(&errors));
        };
        let version = self.version();
        if request.if_version == version.tag() {
            return Ok(Response::new(proto::SearchProductsResponse {
                version: version.tag(),
                not_modified: true,
                ..Default::default()
            }));
        }
        let key = (request.query, limit);
        if let Some(answer) = self.cache.searches.get(version, &key) {
            return Ok(Response::new((*answer).clone()));
        }
        let products = self
            .store
            .search(&query, limit)
            .await
            .map_err(store_status)?;
        let answer = proto::SearchProductsResponse {
            items: products.into_iter().map(product_to_proto).collect(),
            version: version.tag(),
            not_modified: false,
        };
        self.cache
            .searches
            .keep(version, key, Arc::new(answer.clone()));
        Ok(Response::new(answer))
    }

    async fn list_categories(
        &self,
        request: Request<proto::ListCategoriesRequest>,
    ) -> Result<Response<proto::ListCategoriesResponse>, Status> {
        let version = self.version();
        if request.into_inner().if_version == version.tag() {
            return Ok(Response::new(proto::ListCategoriesResponse {
                version: version.tag(),
                not_modified: true,
                ..Default::default()
            }));
        }
        if let Some(answer) = self.cache.categories.get(version, &()) {
            return Ok(Response::new((*answer).clone()));
        }
        let categories = self.store.categories().await.map_err(store_status)?;
        let answer = proto::ListCategoriesResponse {
            items: categories
                .into_iter()
                .map(|category| proto::Category {
                    slug: category.slug,
                    name: category.name,
                    kind: kind_to_proto(category.kind) as i32,
                    product_count: category.product_count,
                })
                .collect(),
            version: version.tag(),
            not_modified: false,
        };
        self.cache
            .categories
            .keep(version, (), Arc::new(answer.clone()));
        Ok(Response::new(answer))
    }

    async fn create_product(
        &self,
        request: Request<proto::CreateProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        let draft = draft_from_proto(request.into_inner().product)?;
        let product = self.store.create(&draft).await.map_err(store_status)?;
        tracing::info!(id = %product.id, sku = %product.draft.sku, "product created");
        Ok(Response::new(product_to_proto(product)))
    }

    async fn update_product(
        &self,
        request: Request<proto::UpdateProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        let request = request.into_inner();
        let draft = draft_from_proto(request.product)?;
        match self
            .store
            .update(&request.id, &draft)
            .await
            .map_err(store_status)?
        {
            Some(product) => {
                tracing::info!(id = %product.id, sku = %product.draft.sku, "product updated");
                Ok(Response::new(product_to_proto(product)))
            }
            None => Err(Status::not_found(format!(
                "there is no product with id {:?}",
                request.id
            ))),
        }
    }
}

/// Whether `id` has the shape of a product id (a UUID). Anything else cannot exist, and
/// is not sent to the database, where some bytes (NUL) are errors rather than misses.
fn is_product_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn page_size(requested: u32, errors: &mut Vec<FieldError>) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        1..=MAX_PAGE_SIZE => requested,
        _ => {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
            DEFAULT_PAGE_SIZE
        }
    }
}

/// A status carrying field errors as `field: message; field: message`.
fn invalid(errors: &[FieldError]) -> Status {
    comb_kit::grpc::invalid_argument(errors)
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::DuplicateSku(_) => Status::already_exists(error.to_string()),
        StoreError::UnknownCategory(_) | StoreError::CategoryKindMismatch { .. } => {
            invalid(&[FieldError::new("category", error.to_string())])
        }
        StoreError::Corrupt(_) | StoreError::Database(_) => {
            tracing::error!(error = %error, "catalog storage failed");
            Status::internal("catalog storage failed")
        }
    }
}

fn kind_from_proto(value: i32, field: &str, errors: &mut Vec<FieldError>) -> Option<ProductKind> {
    match proto::ProductKind::try_from(value) {
        Ok(proto::ProductKind::Unspecified) => None,
        Ok(proto::ProductKind::Book) => Some(ProductKind::Book),
        Ok(proto::ProductKind::Music) => Some(ProductKind::Music),
        Ok(proto::ProductKind::Video) => Some(ProductKind::Video),
        Err(_) => {
            errors.push(FieldError::new(field, "use book, music or video"));
            None
        }
    }
}

fn kind_to_proto(kind: ProductKind) -> proto::ProductKind {
    match kind {
        ProductKind::Book => proto::ProductKind::Book,
        ProductKind::Music => proto::ProductKind::Music,
        ProductKind::Video => proto::ProductKind::Video,
    }
}

fn draft_from_proto(draft: Option<proto::ProductDraft>) -> Result<ProductDraft, Status> {
    let draft = draft.ok_or_else(|| invalid(&[FieldError::new("product", "required")]))?;
    // The domain parser reports an unset or unknown kind along with every other field.
    let kind = match proto::ProductKind::try_from(draft.kind) {
        Ok(proto::ProductKind::Book) => ProductKind::Book.to_string(),
        Ok(proto::ProductKind::Music) => ProductKind::Music.to_string(),
        Ok(proto::ProductKind::Video) => ProductKind::Video.to_string(),
        Ok(proto::ProductKind::Unspecified) | Err(_) => String::new(),
    };
    let Some(price) = draft.price else {
        return Err(invalid(&[FieldError::new("price", "required")]));
    };
    let input = ProductInput {
        sku: draft.sku,
        kind,
        title: draft.title,
        creators: draft.creators,
        description: draft.description,
        category: draft.category,
        tags: draft.tags,
        price: Money {
            amount_minor: price.amount_minor,
            currency: price.currency,
        },
    };
    ProductDraft::parse(input).map_err(|errors| invalid(&errors))
}

/// The wire form of a product.
pub fn product_to_proto(product: Product) -> proto::Product {
    let draft = product.draft;
    proto::Product {
        id: product.id,
        sku: draft.sku,
        kind: kind_to_proto(draft.kind) as i32,
        title: draft.title,
        creators: draft.creators,
        description: draft.description,
        category: draft.category,
        tags: draft.tags,
        price: Some(proto::Money {
            amount_minor: draft.price.amount_minor,
            currency: draft.price.currency,
        }),
        created_at: product.created_at,
        updated_at: product.updated_at,
        rating: None,
        media: media_to_proto(product.media),
    }
}

/// The wire form of a product's media; none when it has none yet.
fn media_to_proto(media: crate::domain::ProductMedia) -> Option<proto::ProductMedia> {
    if media == crate::domain::ProductMedia::default() {
        return None;
    }
    let asset = |asset: crate::domain::MediaAsset| proto::MediaAsset {
        asset_id: asset.asset_id,
        kind: asset.kind,
        files: asset
            .files
            .into_iter()
            .map(|file| proto::MediaFile {
                name: file.name,
                content_type: file.content_type,
                width: file.width,
                height: file.height,
                duration_ms: file.duration_ms,
            })
            .collect(),
    };
    Some(proto::ProductMedia {
        cover: media.cover.map(asset),
        preview: media.preview.map(asset),
        downloadable: media.downloadable,
    })
}
