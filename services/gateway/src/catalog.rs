//! Catalog routes: products, search and categories, answered by the catalog service.
//!
//! Longer than most files: a third of it is the OpenAPI description of each route and of
//! the JSON forms of products, which lives next to the code it describes.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use comb_contracts::catalog::v1 as proto;
use comb_kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use axum::body::Bytes;
use axum::response::Response;

use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::CatalogUnavailable;
use crate::params::{ApiQuery, Checks, ProductId, truncate};
use crate::rendered::{Rendered, json};
use crate::{GatewayState, backend};

/// The longest search text accepted, in characters.
const MAX_QUERY_CHARS: usize = 200;

/// An amount of money in integer minor units (cents for USD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl Money {
    /// The JSON form of a wire amount from `service`. An answer without one is refused, not
    /// shown as zero: a missing price is not a free one.
    pub(crate) fn from_proto(service: &str, value: Option<proto::Money>) -> Result<Self, Problem> {
        let value = value.ok_or_else(|| {
            tracing::error!(upstream = service, "an answer without an amount");
            Problem::bad_gateway(format!(
                "the {service} service answered without an amount; it has been logged, please retry"
            ))
        })?;
        Ok(Self {
            amount_minor: value.amount_minor,
            currency: value.currency,
        })
    }
}

/// As a person reads it: "$12.99", or "12.99 SEK" for a currency without a symbol here.
impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let major = self.amount_minor.unsigned_abs() / 100;
        let minor = self.amount_minor.unsigned_abs() % 100;
        match self.currency.as_str() {
            "USD" => write!(f, "{sign}${major}.{minor:02}"),
            "EUR" => write!(f, "{sign}€{major}.{minor:02}"),
            "GBP" => write!(f, "{sign}£{major}.{minor:02}"),
            other => write!(f, "{sign}{major}.{minor:02} {other}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProductKind {
    Book,
    Music,
    Video,
}

impl ProductKind {
    /// The kind a query names (`book`, `music`, `video`), for the API and the storefront.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "book" => Some(Self::Book),
            "music" => Some(Self::Music),
            "video" => Some(Self::Video),
            _ => None,
        }
    }

    pub(crate) fn from_proto(value: i32) -> Option<Self> {
        match proto::ProductKind::try_from(value) {
            Ok(proto::ProductKind::Book) => Some(Self::Book),
            Ok(proto::ProductKind::Music) => Some(Self::Music),
            Ok(proto::ProductKind::Video) => Some(Self::Video),
            Ok(proto::ProductKind::Unspecified) | Err(_) => None,
        }
    }

    /// The kind as a shop shows it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Book => "Book",
            Self::Music => "Music",
            Self::Video => "Video",
        }
    }

    /// The kind as a query names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Book => "book",
            Self::Music => "music",
            Self::Video => "video",
        }
    }

    pub(crate) fn to_proto(self) -> proto::ProductKind {
        match self {
            Self::Book => proto::ProductKind::Book,
            Self::Music => proto::ProductKind::Music,
            Self::Video => proto::ProductKind::Video,
        }
    }
}

/// A product: a book, an album or a film.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub kind: ProductKind,
    pub title: String,
    /// Authors, artists or directors.
    pub creators: Vec<String>,
    pub description: String,
    /// The slug of the product's category.
    pub category: String,
    pub tags: Vec<String>,
    pub price: Money,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    /// From reviews; on a single product once it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    /// Its cover and preview once ready, and whether it is sold as a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<ProductMedia>,
}

/// What the shop shows and sells of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductMedia {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<MediaAsset>,
    /// What the product page plays: audio or video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<MediaAsset>,
    /// Sold as a download too: buyers get a link to the full-length file.
    pub downloadable: bool,
}

/// One media asset and the files anyone may fetch of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MediaAsset {
    pub asset_id: String,
    /// image, audio or video.
    pub kind: String,
    pub files: Vec<MediaFile>,
}

/// A file of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MediaFile {
    pub name: String,
    /// Where to fetch it: `/media/{asset_id}/{name}`.
    pub url: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub width: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub height: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub duration_ms: u64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

fn media_from_proto(media: proto::ProductMedia) -> ProductMedia {
    let asset = |asset: proto::MediaAsset| MediaAsset {
        files: asset
            .files
            .into_iter()
            .map(|file| MediaFile {
                url: format!("/media/{}/{}", asset.asset_id, file.name),
                name: file.name,
                content_type: file.content_type,
                width: file.width,
                height: file.height,
                duration_ms: file.duration_ms,
            })
            .collect(),
        asset_id: asset.asset_id,
        kind: asset.kind,
    };
    ProductMedia {
        cover: media.cover.map(asset),
        preview: media.preview.map(asset),
        downloadable: media.downloadable,
    }
}

/// A product's rating summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rating {
    /// 1.0 to 5.0, to one decimal.
    pub average: f64,
    pub count: u32,
}

/// A page of products.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductList {
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A category and how many products it holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub kind: ProductKind,
    pub product_count: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryList {
    pub items: Vec<Category>,
    /// Always null: every category fits on one page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProductsParams {
    /// Only products of this kind.
    #[param(value_type = Option<ProductKind>)]
    kind: Option<String>,
    /// Only products in this category (a slug from /api/v1/categories).
    #[param(max_length = 64, pattern = r"^[a-z0-9-]*$")]
    category: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (one this API did not issue is refused with
    /// 422).
    #[param(max_length = 256)]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find in titles, creators, descriptions and tags (1 to 200 characters);
    /// each word matches as a prefix, and every word must match.
    #[param(required = true, value_type = String, min_length = 1, max_length = 200)]
    q: Option<String>,
    /// How many results, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// Lists products, optionally of one kind or category, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "catalog",
    params(ListProductsParams),
    responses(
        (status = 200, description = "A page of products", body = ProductList),
        (status = 400, description = "A filter or paging parameter is invalid", body = ProblemDoc, content_type = "application/problem+json"),
        CatalogUnavailable,
    )
)]
pub async fn list_products(
    State(state): State<GatewayState>,
    ApiQuery(params): ApiQuery<ListProductsParams>,
) -> Result<Response, Problem> {
    let mut checks = Checks::default();
    let limit = checks.limit(params.limit.as_deref());
    let kind = params
        .kind
        .as_deref()
        .filter(|kind| !kind.is_empty())
        .and_then(|kind| {
            let parsed = ProductKind::parse(kind);
            if parsed.is_none() {
                checks.fail(
                    "kind",
                    format!("must be book, music or video, got {:?}", truncate(kind)),
                );
            }
            parsed
        });
    let category = params.category.unwrap_or_default();
    if category.len() > 64
        || !category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        checks.fail(
            "category",
            "must be a category slug from /api/v1/categories",
        );
    }
    let cursor = params.cursor.unwrap_or_default();
    if cursor.len() > 256 {
        checks.fail(
            "cursor",
            "is not a cursor this API issued; pass next_cursor from an earlier page",
        );
    }
    checks.finish()?;
    let key = format!(
        "products?kind={}&category={category}&limit={limit}&cursor={cursor}",
        kind.map_or("", ProductKind::as_str)
    );
    let held = state.rendered.get(&key);
    if let Some(current) = current(&state, held.as_ref()) {
        return Ok(current);
    }
    let listing = backend::catalog::Listing {
        kind,
        category,
        limit,
        cursor,
    };
    let if_version = held.as_ref().map_or(0, |held| held.version);
    let read = backend::catalog::list(&state, listing, if_version).await?;
    answered(&state, key, held, read)
}

/// The answer to a conditional read of the catalog: the one held when the catalog says
/// it has not changed, else the new one rendered, kept under `key` at its version, and
/// sent.
fn answered<T: Serialize>(
    state: &GatewayState,
    key: String,
    held: Option<Rendered>,
    read: backend::catalog::Read<T>,
) -> Result<Response, Problem> {
    match read {
        backend::catalog::Read::Unchanged => held
            .map(Rendered::into_json)
            .ok_or_else(|| malformed("an answer marked not modified that the gateway never had")),
        backend::catalog::Read::Changed { version, answer } => {
            let body = render(&answer)?;
            state.rendered.keep(key, version, body.clone());
            Ok(json(body))
        }
    }
}

/// The answer held, when it is of the catalog's newest version.
fn current(state: &GatewayState, held: Option<&Rendered>) -> Option<Response> {
    held.filter(|held| state.watches.catalog.is_current(held.version))
        .map(|held| held.clone().into_json())
}

/// An answer as JSON bytes.
fn render<T: Serialize>(answer: &T) -> Result<Bytes, Problem> {
    serde_json::to_vec(answer)
        .map(Bytes::from)
        .map_err(|error| {
            tracing::error!(%error, "an answer could not be rendered as JSON");
            Problem::internal()
        })
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product, with what is bought with it", body = ProductDetail),
        (status = 404, description = "There is no product with this id", body = ProblemDoc, content_type = "application/problem+json"),
        CatalogUnavailable,
    )
)]
pub async fn get_product(
    State(state): State<GatewayState>,
    ProductId(id): ProductId,
) -> Result<Json<ProductDetail>, Problem> {
    // An id that cannot be one of ours (too long, odd characters) is simply not found; it
    // never reaches the catalog.
    if !is_plausible_id(&id) {
        return Err(Problem::not_found(format!(
            "there is no product with id {:?}",
            truncate(&id)
        )));
    }
    Ok(Json(backend::catalog::product_detail(&state, id).await?))
}

/// A product's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stock {
    /// How many can be bought now (held by unfinished checkouts not counted).
    pub available: i64,
}

/// A product and what is bought with it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductDetail {
    #[serde(flatten)]
    pub product: Product,
    /// How many can be bought now; null when inventory is unavailable right now.
    pub stock: Option<Stock>,
    /// Its newest reviews (up to 5); null when reviews are unavailable right now.
    pub reviews: Option<Vec<crate::reviews::Review>>,
    /// Products bought with it, most often first; null when recommendations are
    /// unavailable right now.
    pub recommendations: Option<Vec<Product>>,
    /// The parts of the page missing because their service did not answer in time:
    /// `stock`, `reviews`, `recommendations`.
    pub unavailable: Vec<String>,
}

/// Full-text search over titles, creators, descriptions and tags, best match first.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "catalog",
    params(SearchParams),
    responses(
        (status = 200, description = "Matching products, best first", body = ProductList),
        (status = 400, description = "`q` is missing or too long, or `limit` is invalid", body = ProblemDoc, content_type = "application/problem+json"),
        CatalogUnavailable,
    )
)]
pub async fn search_products(
    State(state): State<GatewayState>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, Problem> {
    let mut checks = Checks::default();
    let limit = checks.limit(params.limit.as_deref());
    let text = params.q.unwrap_or_default();
    let length = text.trim().chars().count();
    if text.is_empty() {
        checks.fail("q", "is required: the words to search for");
    } else if length == 0 {
        // Present but only spaces: the shape is right, there is just nothing to find.
        return Err(Problem::unprocessable(vec![
            comb_kit::problem::FieldError::new("q", "has no words to search for, only spaces"),
        ]));
    } else if length > MAX_QUERY_CHARS {
        checks.fail(
            "q",
            format!("must be at most {MAX_QUERY_CHARS} characters, got {length}"),
        );
    }
    checks.finish()?;
    let key = format!("search?limit={limit}&q={text}");
    let held = state.rendered.get(&key);
    if let Some(current) = current(&state, held.as_ref()) {
        return Ok(current);
    }
    let if_version = held.as_ref().map_or(0, |held| held.version);
    let read = backend::catalog::search(&state, text, limit, if_version).await?;
    answered(&state, key, held, read)
}

/// Every category, by kind and name.
#[utoipa::path(
    get,
    path = "/api/v1/categories",
    tag = "catalog",
    responses(
        (status = 200, description = "The categories", body = CategoryList),
        CatalogUnavailable,
    )
)]
pub async fn list_categories(State(state): State<GatewayState>) -> Result<Response, Problem> {
    const KEY: &str = "categories";
    let held = state.rendered.get(KEY);
    if let Some(current) = current(&state, held.as_ref()) {
        return Ok(current);
    }
    let if_version = held.as_ref().map_or(0, |held| held.version);
    let read = backend::catalog::categories(&state, if_version).await?;
    answered(&state, KEY.to_owned(), held, read)
}

/// Product ids are opaque to clients, but always short and made of letters, digits,
/// hyphens and underscores.
fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Products bought with this one, most often first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecommendationList {
    pub items: Vec<Product>,
}

/// Products often bought together with this one.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}/recommendations",
    tag = "catalog",
    params(("id" = String, Path, description = "The product's id")),
    responses(
        (status = 200, description = "Products bought with it, most often first; empty until someone has", body = RecommendationList),
        (status = 503, description = "Recommendations or the catalog are unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn recommendations(
    State(state): State<GatewayState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RecommendationList>, Problem> {
    let Ok(Path(id)) = id else {
        return Ok(Json(RecommendationList { items: Vec::new() }));
    };
    if !is_plausible_id(&id) {
        return Ok(Json(RecommendationList { items: Vec::new() }));
    }
    Ok(Json(RecommendationList {
        items: (*backend::catalog::bought_with(&state, id).await?).clone(),
    }))
}

pub(crate) fn products(items: Vec<proto::Product>) -> Result<Vec<Product>, Problem> {
    items.into_iter().map(product_from_proto).collect()
}

pub(crate) fn product_from_proto(product: proto::Product) -> Result<Product, Problem> {
    let kind = ProductKind::from_proto(product.kind)
        .ok_or_else(|| malformed(&format!("product {} has no kind", product.id)))?;
    let price = product
        .price
        .ok_or_else(|| malformed(&format!("product {} has no price", product.id)))?;
    Ok(Product {
        id: product.id,
        sku: product.sku,
        kind,
        title: product.title,
        creators: product.creators,
        description: product.description,
        category: product.category,
        tags: product.tags,
        price: Money {
            amount_minor: price.amount_minor,
            currency: price.currency,
        },
        created_at: product.created_at,
        updated_at: product.updated_at,
        rating: product.rating.map(|rating| Rating {
            average: rating.average,
            count: rating.count,
        }),
        media: product.media.map(media_from_proto),
    })
}

pub(crate) fn malformed(what: &str) -> Problem {
    tracing::error!(upstream = "catalog", problem = what, "malformed answer");
    Problem::bad_gateway(
        "the catalog service gave an answer that cannot be used; it has been logged, please retry",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_like_a_price() {
        let money = |amount_minor, currency: &str| Money {
            amount_minor,
            currency: currency.into(),
        };
        assert_eq!(money(1499, "USD").to_string(), "$14.99");
        assert_eq!(money(5, "SEK").to_string(), "0.05 SEK");
        assert_eq!(money(-250, "EUR").to_string(), "-€2.50");
    }
}
