//! Carts, answered by the cart service (which prices them at the catalog's prices).

use comb_contracts::cart::v1 as proto;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_kit::Problem;
use comb_kit::grpc::{Answer, UpstreamChannel};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;
use crate::catalog::Money;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartItem {
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    /// The catalog's current price.
    pub unit_price: Money,
    pub line_total: Money,
    /// Sold as a download: bought once (quantity 1), not shipped.
    pub digital: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartBody {
    pub items: Vec<CartItem>,
    pub total: Money,
}

impl CartBody {
    /// How many items the cart holds, counting each product's quantity.
    pub fn count(&self) -> i64 {
        self.items.iter().map(|item| item.quantity).sum()
    }
}

fn client(state: &GatewayState) -> CartClient<UpstreamChannel> {
    CartClient::new(state.cart.channel())
}

/// The view of a cart; 502 when the cart answered without an amount.
fn cart_body(view: proto::CartView) -> Result<CartBody, Problem> {
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
                    digital: line.digital,
                })
            })
            .collect::<Result<_, Problem>>()?,
        total: money(view.total)?,
    })
}

/// `owner`'s cart, priced at current prices.
pub async fn get(state: &GatewayState, owner: &str) -> Result<CartBody, Problem> {
    let view = client(state)
        .get_cart(proto::GetCartRequest {
            owner: owner.to_owned(),
        })
        .await
        .answered_by(&state.cart)?;
    cart_body(view)
}

/// How many items `owner`'s cart holds, if the cart answers within the side deadline:
/// a page shows it when it can and does without it when it cannot.
pub async fn count(state: &GatewayState, owner: &str) -> Option<i64> {
    let cart = tokio::time::timeout(super::SIDE_DEADLINE, get(state, owner)).await;
    cart.ok()?.ok().map(|cart| cart.count())
}

/// Adds `quantity` of a product to `owner`'s cart.
pub async fn add(
    state: &GatewayState,
    owner: &str,
    product_id: String,
    quantity: i64,
) -> Result<CartBody, Problem> {
    let view = client(state)
        .add_item(proto::AddItemRequest {
            owner: owner.to_owned(),
            product_id,
            quantity,
        })
        .await
        .answered_by(&state.cart)?;
    cart_body(view)
}

/// Sets how many of a product `owner`'s cart holds; 0 removes it.
pub async fn set_quantity(
    state: &GatewayState,
    owner: &str,
    product_id: String,
    quantity: i64,
) -> Result<CartBody, Problem> {
    let view = client(state)
        .set_quantity(proto::SetQuantityRequest {
            owner: owner.to_owned(),
            product_id,
            quantity,
        })
        .await
        .answered_by(&state.cart)?;
    cart_body(view)
}

/// Removes a product from `owner`'s cart.
pub async fn remove(
    state: &GatewayState,
    owner: &str,
    product_id: String,
) -> Result<CartBody, Problem> {
    let view = client(state)
        .remove_item(proto::RemoveItemRequest {
            owner: owner.to_owned(),
            product_id,
        })
        .await
        .answered_by(&state.cart)?;
    cart_body(view)
}

/// When a guest signs in, their cart becomes the customer's. Signing in does not fail
/// because of it: the guest cart stays where it was, and the cause is logged.
pub async fn merge_guest_cart(state: &GatewayState, guest: &str, customer: &str) {
    let merged = client(state)
        .merge(proto::MergeRequest {
            from_owner: guest.to_owned(),
            to_owner: customer.to_owned(),
        })
        .await;
    if let Err(status) = merged {
        tracing::warn!(code = ?status.code(), message = status.message(), "a guest cart could not be merged at sign-in");
    }
}
