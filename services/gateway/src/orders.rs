//! Order routes: checkout and order history, answered by the orders service. A caller
//! sees only their own orders; an admin sees any.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use comb_contracts::auth::Role;
use comb_contracts::payments::v1::Card;
use comb_contracts::shipping::v1::Address;
use comb_kit::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Admin, Caller};
pub use crate::backend::orders::{
    OrderBody, OrderItem, OrderList, OrderStatus, PaymentStatus, PaymentSummary, ShipmentStatus,
    ShipmentSummary,
};
use crate::body::JsonBody;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{NotAdmin, OrdersUnavailable, Unauthorized};
use crate::params::OrderId;
use crate::{GatewayState, backend};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ShippingAddress {
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    pub name: String,
    #[schema(min_length = 1, max_length = 200, example = "12 St James's Square")]
    pub line1: String,
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 100, example = "London")]
    pub city: String,
    #[schema(min_length = 1, max_length = 16, example = "SW1Y 4JH")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. US (a country shipping does not serve is refused with 422).
    #[schema(min_length = 2, max_length = 2, example = "GB")]
    pub country: String,
}

/// A card. Test cards: 4242424242424242 succeeds, 4000000000000002 is declined,
/// 4000000000000119 fails as a processor error.
#[derive(Deserialize, ToSchema)]
pub struct PaymentCard {
    /// 12 to 19 digits, spaces and dashes allowed (a number failing its checksum is
    /// refused with 422).
    #[schema(
        min_length = 12,
        pattern = r"^[0-9 -]+$",
        example = "4242 4242 4242 4242"
    )]
    pub card_number: String,
    /// 1 to 12.
    #[schema(minimum = 1, maximum = 12, example = 12)]
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub exp_month: u32,
    /// 2000 to 2200 (an expired card is refused with 422).
    #[schema(minimum = 2000, maximum = 2200, example = 2030)]
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub exp_year: u32,
    /// 3 or 4 digits.
    #[schema(pattern = r"^[0-9]{3,4}$", example = "123")]
    pub cvc: String,
}

// Written by hand so a card can never reach a log through `{:?}`.
impl std::fmt::Debug for PaymentCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentCard").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckoutBody {
    /// Where the confirmation goes; required for guests (refused with 422 without it), the
    /// account's email otherwise.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]{1,63}(\.[^@\s.\x00-\x1f\x7f-\x9f]{1,63})+$"
    )]
    pub email: Option<String>,
    /// Where to ship; not needed when the cart holds only downloads.
    pub shipping_address: Option<ShippingAddress>,
    pub payment: PaymentCard,
}

/// The header that makes a checkout safe to repeat.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Checks out the caller's cart.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]([ -~]{0,126}[!-~])?$", description = "The same key from the same caller answers with the same order; up to 128 visible characters")),
    request_body = CheckoutBody,
    responses(
        (status = 201, description = "The order, already CONFIRMED or CANCELLED", body = OrderBody),
        (status = 202, description = "The order, PENDING: follow it at /api/v1/orders/{id}", body = OrderBody),
        (status = 400, description = "A field is invalid (the problem names it)", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        (status = 409, description = "The cart is empty", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many checkouts from this address or for this account; retry after Retry-After seconds", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A service checkout needs is unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    State(state): State<GatewayState>,
    address: crate::forwarded::ClientAddress,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<Response, Problem> {
    let claims = caller.0;
    state.limits.check(
        crate::limits::Action::Checkout,
        address.0,
        Some(&claims.sub),
    )?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => value
            .to_str()
            .ok()
            .filter(|key| !key.is_empty() && key.len() <= 128)
            .ok_or_else(|| {
                Problem::invalid_field(
                    "Idempotency-Key",
                    "must be 1 to 128 visible ASCII characters",
                )
            })?
            .to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let email = match (body.email, claims.email) {
        (Some(email), _) => email,
        (None, Some(email)) => email,
        (None, None) => {
            return Err(Problem::unprocessable(vec![
                comb_kit::problem::FieldError::new(
                    "email",
                    "is required for a guest checkout: where should the confirmation go?",
                ),
            ]));
        }
    };
    let address = body.shipping_address;
    let card = body.payment;
    let checkout = backend::orders::Checkout {
        owner: claims.sub,
        idempotency_key: key,
        email,
        address: address.map(|address| Address {
            name: address.name,
            line1: address.line1,
            line2: address.line2.unwrap_or_default(),
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        }),
        card: Card {
            number: card.card_number,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            cvc: card.cvc,
        },
    };
    let body = backend::orders::place(&state, checkout).await?;
    let status = if body.status == OrderStatus::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let location = format!("/api/v1/orders/{}", body.id);
    Ok((
        status,
        [(axum::http::header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// The caller's orders, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's orders", body = OrderList),
        Unauthorized,
        OrdersUnavailable,
    )
)]
pub async fn list_orders(
    State(state): State<GatewayState>,
    caller: Caller,
) -> Result<Json<OrderList>, Problem> {
    Ok(Json(backend::orders::list(&state, &caller.0.sub).await?))
}

/// One order: the caller's own, or any for an admin.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        Unauthorized,
        (status = 404, description = "No such order among the caller's", body = ProblemDoc, content_type = "application/problem+json"),
        OrdersUnavailable,
    )
)]
pub async fn get_order(
    State(state): State<GatewayState>,
    caller: Caller,
    OrderId(id): OrderId,
) -> Result<Json<OrderBody>, Problem> {
    let any_owner = caller.role() == Role::Admin;
    let order = backend::orders::get(&state, &caller.0.sub, id, any_owner).await?;
    Ok(Json(order))
}

/// Signed links to the files a confirmed order entitles the caller to: its downloads.
/// Each link expires (48 hours by default); ask again for fresh ones.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/downloads",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The signed links", body = backend::orders::Downloads),
        Unauthorized,
        (status = 404, description = "No such order among the caller's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The order is not confirmed, or has no downloads", body = ProblemDoc, content_type = "application/problem+json"),
        OrdersUnavailable,
    )
)]
pub async fn order_downloads(
    State(state): State<GatewayState>,
    caller: Caller,
    OrderId(id): OrderId,
) -> Result<Json<backend::orders::Downloads>, Problem> {
    Ok(Json(
        backend::orders::downloads(&state, &caller.0.sub, id).await?,
    ))
}

/// Refunds a confirmed order (admin): the order becomes CANCELLED with the reason
/// `refunded`, its payment is refunded and its downloads stop opening. Goods that shipped
/// stay sold: there are no returns. Refunding it again answers the order as it is.
#[utoipa::path(
    post,
    path = "/api/v1/admin/orders/{id}/refund",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The refunded order", body = OrderBody),
        Unauthorized,
        NotAdmin,
        (status = 404, description = "No such order", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The order is not confirmed (pending, or cancelled otherwise)", body = ProblemDoc, content_type = "application/problem+json"),
        OrdersUnavailable,
    )
)]
pub async fn refund_order(
    State(state): State<GatewayState>,
    _admin: Admin,
    OrderId(id): OrderId,
) -> Result<Json<OrderBody>, Problem> {
    Ok(Json(backend::orders::refund(&state, id).await?))
}
