//! Cart routes: the caller's own cart, whoever they are (customer, admin or guest),
//! answered by the cart service.

use axum::Json;
use axum::extract::State;
use comb_kit::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
pub use crate::backend::cart::{CartBody, CartItem};
use crate::body::JsonBody;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{CartUnavailable, Unauthorized};
use crate::params::ProductId;
use crate::{GatewayState, backend};

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddItemBody {
    /// A product's id (a product that does not exist is refused with 422).
    #[schema(min_length = 1, max_length = 64)]
    pub product_id: String,
    /// 1 to 99; added to what the cart already holds (at most 99 of a product in all).
    #[schema(minimum = 1, maximum = 99)]
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetQuantityBody {
    /// 0 to 99; 0 removes the line.
    #[schema(minimum = 0, maximum = 99)]
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub quantity: i64,
}

/// The caller's cart, priced at current prices.
#[utoipa::path(
    get,
    path = "/api/v1/cart",
    tag = "cart",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart", body = CartBody),
        Unauthorized,
        CartUnavailable,
    )
)]
pub async fn get_cart(
    State(state): State<GatewayState>,
    caller: Caller,
) -> Result<Json<CartBody>, Problem> {
    Ok(Json(backend::cart::get(&state, &caller.0.sub).await?))
}

/// Adds a product to the caller's cart.
#[utoipa::path(
    post,
    path = "/api/v1/cart/items",
    tag = "cart",
    security(("bearer" = [])),
    request_body = AddItemBody,
    responses(
        (status = 200, description = "The cart after the addition", body = CartBody),
        (status = 400, description = "Unknown product, or a quantity out of range", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        CartUnavailable,
    )
)]
pub async fn add_item(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<AddItemBody>,
) -> Result<Json<CartBody>, Problem> {
    let cart = backend::cart::add(&state, &caller.0.sub, body.product_id, body.quantity).await?;
    Ok(Json(cart))
}

/// Sets how many of a product the caller's cart holds; 0 removes it.
#[utoipa::path(
    put,
    path = "/api/v1/cart/items/{product_id}",
    tag = "cart",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "The product's id")),
    request_body = SetQuantityBody,
    responses(
        (status = 200, description = "The cart after the change", body = CartBody),
        (status = 400, description = "Unknown product, or a quantity out of range", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        CartUnavailable,
    )
)]
pub async fn set_quantity(
    State(state): State<GatewayState>,
    caller: Caller,
    ProductId(product_id): ProductId,
    JsonBody(body): JsonBody<SetQuantityBody>,
) -> Result<Json<CartBody>, Problem> {
    let cart =
        backend::cart::set_quantity(&state, &caller.0.sub, product_id, body.quantity).await?;
    Ok(Json(cart))
}

/// Removes a product from the caller's cart.
#[utoipa::path(
    delete,
    path = "/api/v1/cart/items/{product_id}",
    tag = "cart",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The cart after the removal", body = CartBody),
        Unauthorized,
        CartUnavailable,
    )
)]
pub async fn remove_item(
    State(state): State<GatewayState>,
    caller: Caller,
    ProductId(product_id): ProductId,
) -> Result<Json<CartBody>, Problem> {
    Ok(Json(
        backend::cart::remove(&state, &caller.0.sub, product_id).await?,
    ))
}
