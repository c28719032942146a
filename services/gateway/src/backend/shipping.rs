//! Shipping quotes, answered by the shipping service (when the gateway is given one).

use comb_contracts::shipping::v1 as proto;
use comb_contracts::shipping::v1::shipping_client::ShippingClient;

use crate::GatewayState;
use crate::catalog::Money;

/// What shipping costs, and how long it takes.
#[derive(Debug, Clone)]
pub struct ShippingQuote {
    pub cost: Money,
    pub days: u32,
}

/// The cost of shipping `items` items to `country`, if the gateway knows a shipping
/// service and it answers within the side deadline; a page does without it otherwise.
pub async fn quote(state: &GatewayState, country: &str, items: i64) -> Option<ShippingQuote> {
    let shipping = state.shipping.as_ref()?;
    let quoted = tokio::time::timeout(
        super::SIDE_DEADLINE,
        ShippingClient::new(shipping.channel()).quote(proto::QuoteRequest {
            // The price depends on the country alone; the RPC checks a whole address,
            // which the shopper has not typed yet, so the rest stands in for it.
            address: Some(proto::Address {
                name: "Quote".to_owned(),
                line1: "Quote".to_owned(),
                line2: String::new(),
                city: "Quote".to_owned(),
                postal_code: "0".to_owned(),
                country: country.to_owned(),
            }),
            item_count: u32::try_from(items).unwrap_or(1),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some(ShippingQuote {
        cost: Money::from_proto("shipping", quoted.cost).ok()?,
        days: quoted.days,
    })
}
