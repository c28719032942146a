//! Cart routes: the caller's own cart, whoever they are (customer, admin or guest),
//! answered by the cart service.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use comb_contracts::cart::v1 as proto;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::catalog::Money;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{CartUnavailable, Unauthorized};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartItem {
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    /// The catalog's current price.
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartBody {
    pub items: Vec<CartItem>,
    pub total: Money,
}

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

pub(crate) fn client(state: &GatewayState) -> CartClient<comb_kit::grpc::UpstreamChannel> {
    CartClient::new(state.cart.channel())
}

/// The JSON form of a cart; 502 when the cart answered without an amount.
pub(crate) fn cart_body(view: proto::CartView) -> Result<CartBody, Problem> {
    let money = |value| Money::from_proto("cart", value);
    Ok(CartBody {
        items: view
            .lines
            .into_iter()
            .map(|line| {
                Ok(CartItem {
                    product_id: line.product_id,
                    sku: line.sku,
                    title: line.title,
                    quantity: line.quantity,
                    unit_price: money(line.unit_price)?,
                    line_total: money(line.line_total)?,
                })
            })
            .collect::<Result<_, Problem>>()?,
        total: money(view.total)?,
    })
}

fn product_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(id)| id)
        .map_err(|_| Problem::not_found("there is no product with that id"))
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
    let view = client(&state)
        .get_cart(proto::GetCartRequest {
            owner: caller.0.sub,
        })
        .await
        .answered_by(&state.cart)?;
    Ok(Json(cart_body(view)?))
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
    let view = client(&state)
        .add_item(proto::AddItemRequest {
            owner: caller.0.sub,
            product_id: body.product_id,
            quantity: body.quantity,
        })
        .await
        .answered_by(&state.cart)?;
    Ok(Json(cart_body(view)?))
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
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SetQuantityBody>,
) -> Result<Json<CartBody>, Problem> {
    let view = client(&state)
        .set_quantity(proto::SetQuantityRequest {
            owner: caller.0.sub,
            product_id: product_id(path)?,
            quantity: body.quantity,
        })
        .await
        .answered_by(&state.cart)?;
    Ok(Json(cart_body(view)?))
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
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CartBody>, Problem> {
    let view = client(&state)
        .remove_item(proto::RemoveItemRequest {
            owner: caller.0.sub,
            product_id: product_id(path)?,
        })
        .await
        .answered_by(&state.cart)?;
    Ok(Json(cart_body(view)?))
}
