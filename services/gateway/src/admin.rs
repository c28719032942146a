//! Admin routes (role admin): products and stock.

use axum::Json;

use axum::extract::State;
use axum::http::StatusCode;
use comb_contracts::catalog::v1 as catalog;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_contracts::inventory::v1 as inventory;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;
use crate::auth::Admin;
use crate::body::JsonBody;
use crate::catalog::{Money, Product, ProductKind, product_from_proto};
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{NoSuchProduct, NotAdmin, Unauthorized};
use crate::params::ProductId;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProductInput {
    pub sku: String,
    pub kind: ProductKind,
    pub title: String,
    pub creators: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub price: Money,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StockInput {
    /// How many can be sold from now on.
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub available: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StockLevel {
    pub product_id: String,
    pub sku: String,
    pub available: i64,
}

fn draft(input: ProductInput) -> catalog::ProductDraft {
    catalog::ProductDraft {
        sku: input.sku,
        kind: input.kind.to_proto() as i32,
        title: input.title,
        creators: input.creators,
        description: input.description,
        category: input.category,
        tags: input.tags,
        price: Some(catalog::Money {
            amount_minor: input.price.amount_minor,
            currency: input.price.currency,
        }),
    }
}

/// Creates a product.
#[utoipa::path(
    post,
    path = "/api/v1/admin/products",
    tag = "admin",
    security(("bearer" = [])),
    request_body = ProductInput,
    responses(
        (status = 201, description = "The new product", body = Product),
        (status = 400, description = "A field is invalid", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
        (status = 409, description = "The sku is taken", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn create_product(
    State(state): State<GatewayState>,
    _admin: Admin,
    JsonBody(input): JsonBody<ProductInput>,
) -> Result<(StatusCode, Json<Product>), Problem> {
    let created = CatalogClient::new(state.catalog.channel())
        .create_product(catalog::CreateProductRequest {
            product: Some(draft(input)),
        })
        .await;
    // Even a failed call may have written: kept answers wait for the version after it.
    state.watches.catalog.wrote();
    let created = created.answered_by(&state.catalog)?;
    Ok((StatusCode::CREATED, Json(product_from_proto(created)?)))
}

/// Replaces a product's fields.
#[utoipa::path(
    put,
    path = "/api/v1/admin/products/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id")),
    request_body = ProductInput,
    responses(
        (status = 200, description = "The product as it is now", body = Product),
        (status = 400, description = "A field is invalid", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
        NoSuchProduct,
        (status = 409, description = "Another product has this SKU", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn update_product(
    State(state): State<GatewayState>,
    _admin: Admin,
    ProductId(product_id): ProductId,
    JsonBody(input): JsonBody<ProductInput>,
) -> Result<Json<Product>, Problem> {
    let updated = CatalogClient::new(state.catalog.channel())
        .update_product(catalog::UpdateProductRequest {
            id: product_id,
            product: Some(draft(input)),
        })
        .await;
    state.watches.catalog.wrote();
    let updated = updated.answered_by(&state.catalog)?;
    Ok(Json(product_from_proto(updated)?))
}

/// Sets how many of a product can be sold.
#[utoipa::path(
    put,
    path = "/api/v1/admin/stock/{product_id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "The product's id")),
    request_body = StockInput,
    responses(
        (status = 200, description = "The stock level", body = StockLevel),
        (status = 400, description = "The quantity is out of range", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
        NoSuchProduct,
    )
)]
pub async fn set_stock(
    State(state): State<GatewayState>,
    _admin: Admin,
    ProductId(product_id): ProductId,
    JsonBody(input): JsonBody<StockInput>,
) -> Result<Json<StockLevel>, Problem> {
    let product = CatalogClient::new(state.catalog.channel())
        .get_product(catalog::GetProductRequest {
            id: product_id.clone(),
        })
        .await
        .answered_by(&state.catalog)?;
    let level = InventoryClient::new(state.inventory.channel())
        .set_stock(inventory::SetStockRequest {
            sku: product.sku,
            available: input.available,
        })
        .await
        .answered_by(&state.inventory)?;
    Ok(Json(StockLevel {
        product_id,
        sku: level.sku,
        available: level.available,
    }))
}
