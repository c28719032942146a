//! Orders: checkout and order history, answered by the orders service.

use comb_contracts::orders::v1 as proto;
use comb_contracts::orders::v1::orders_client::OrdersClient;
use comb_contracts::payments::v1::Card;
use comb_contracts::shipping::v1::Address;
use comb_kit::Problem;
use comb_kit::grpc::{Answer, UpstreamChannel};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;
use crate::catalog::Money;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderItem {
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
    /// Sold as a download: links at `/api/v1/orders/{id}/downloads` once confirmed.
    pub digital: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentSummary {
    pub last4: String,
    pub status: PaymentStatus,
}

/// Where an order's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Not authorized (yet, or ever: the order was cancelled before).
    None,
    Authorized,
    Captured,
    Declined,
    Voided,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
        }
    }

    /// The payment status of an order from the orders service: its typed state, or, from
    /// an orders service that sends only the older text form, that text. Anything else is
    /// a 502 with the cause logged, never a default.
    pub fn of(order: &proto::Order) -> Result<Self, Problem> {
        let status = match proto::PaymentState::try_from(order.payment_state) {
            Ok(proto::PaymentState::None) => Some(Self::None),
            Ok(proto::PaymentState::Authorized) => Some(Self::Authorized),
            Ok(proto::PaymentState::Captured) => Some(Self::Captured),
            Ok(proto::PaymentState::Declined) => Some(Self::Declined),
            Ok(proto::PaymentState::Voided) => Some(Self::Voided),
            Ok(proto::PaymentState::Refunded) => Some(Self::Refunded),
            Ok(proto::PaymentState::Unspecified) => match order.payment_status.as_str() {
                "none" => Some(Self::None),
                "authorized" => Some(Self::Authorized),
                "captured" => Some(Self::Captured),
                "declined" => Some(Self::Declined),
                "voided" => Some(Self::Voided),
                "refunded" => Some(Self::Refunded),
                _ => None,
            },
            Err(_) => None,
        };
        status.ok_or_else(|| {
            tracing::error!(upstream = "orders", order = %order.id, state = order.payment_state, text = %order.payment_status, "an order with a payment status the gateway does not know");
            Problem::bad_gateway(
                "the orders service answered with a payment status this gateway does not know; it has been logged, please retry",
            )
        })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShipmentSummary {
    pub tracking_id: String,
    pub status: ShipmentStatus,
}

/// Where an order's shipment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShipmentStatus {
    Created,
    Shipped,
    Delivered,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
        }
    }

    /// The shipment status of an order that has a shipment (a tracking id), as
    /// [`PaymentStatus::of`] reads the payment's; `None` without a shipment.
    pub fn of(order: &proto::Order) -> Result<Option<Self>, Problem> {
        if order.tracking_id.is_empty() {
            return Ok(None);
        }
        let status = match proto::ShipmentState::try_from(order.shipment_state) {
            Ok(proto::ShipmentState::Created) => Some(Self::Created),
            Ok(proto::ShipmentState::Shipped) => Some(Self::Shipped),
            Ok(proto::ShipmentState::Delivered) => Some(Self::Delivered),
            Ok(proto::ShipmentState::Unspecified) => match order.shipment_status.as_str() {
                "created" => Some(Self::Created),
                "shipped" => Some(Self::Shipped),
                "delivered" => Some(Self::Delivered),
                _ => None,
            },
            Ok(proto::ShipmentState::None) | Err(_) => None,
        };
        match status {
            Some(status) => Ok(Some(status)),
            None => {
                tracing::error!(upstream = "orders", order = %order.id, state = order.shipment_state, text = %order.shipment_status, "an order with a shipment status the gateway does not know");
                Err(Problem::bad_gateway(
                    "the orders service answered with a shipment status this gateway does not know; it has been logged, please retry",
                ))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderBody {
    pub id: String,
    pub status: OrderStatus,
    /// out_of_stock, payment_declined, payment_failed, deadline_exceeded,
    /// cancelled_by_customer or refunded; only on cancelled orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    pub email: String,
    pub items: Vec<OrderItem>,
    pub subtotal: Money,
    pub shipping: Money,
    pub total: Money,
    pub payment: PaymentSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentSummary>,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderBody>,
    pub next_cursor: Option<String>,
}

/// The view of an order; 502 when orders answered with a status this gateway does not
/// know or without an amount (never shown as PENDING or as zero).
fn order_body(order: proto::Order) -> Result<OrderBody, Problem> {
    let status = match proto::OrderStatus::try_from(order.status) {
        Ok(proto::OrderStatus::Pending) => OrderStatus::Pending,
        Ok(proto::OrderStatus::Confirmed) => OrderStatus::Confirmed,
        Ok(proto::OrderStatus::Cancelled) => OrderStatus::Cancelled,
        Ok(proto::OrderStatus::Unspecified) | Err(_) => {
            tracing::error!(upstream = "orders", status = order.status, order = %order.id, "an order in a status the gateway does not know");
            return Err(Problem::bad_gateway(
                "the orders service answered with an order status this gateway does not know; it has been logged, please retry",
            ));
        }
    };
    let money = |value| Money::from_proto("orders", value);
    let payment = PaymentSummary {
        status: PaymentStatus::of(&order)?,
        last4: order.payment_last4.clone(),
    };
    let shipment = ShipmentStatus::of(&order)?.map(|status| ShipmentSummary {
        tracking_id: order.tracking_id.clone(),
        status,
    });
    Ok(OrderBody {
        id: order.id,
        status,
        cancel_reason: Some(order.cancel_reason).filter(|reason| !reason.is_empty()),
        email: order.email,
        items: order
            .lines
            .into_iter()
            .map(|line| {
                Ok(OrderItem {
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
        subtotal: money(order.subtotal)?,
        shipping: money(order.shipping)?,
        total: money(order.total)?,
        payment,
        shipment,
        created_at: order.created_at,
    })
}

fn client(state: &GatewayState) -> OrdersClient<UpstreamChannel> {
    OrdersClient::new(state.orders.channel())
}

/// A checkout as the orders service takes it, whichever way the shopper filled it in.
pub struct Checkout {
    pub owner: String,
    /// The same key from the same owner is the same order.
    pub idempotency_key: String,
    pub email: String,
    /// None when the cart holds only downloads (orders refuses it for anything shipped).
    pub address: Option<Address>,
    pub card: Card,
}

// Written by hand so a card can never reach a log through `{:?}`.
impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("owner", &self.owner)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

/// Places the order of `checkout.owner`'s cart: CONFIRMED or CANCELLED when its saga
/// finished within the checkout's wait, else PENDING.
pub async fn place(state: &GatewayState, checkout: Checkout) -> Result<OrderBody, Problem> {
    let order = client(state)
        .place_order(proto::PlaceOrderRequest {
            owner: checkout.owner,
            idempotency_key: checkout.idempotency_key,
            email: checkout.email,
            shipping_address: checkout.address,
            card: Some(checkout.card),
        })
        .await
        .answered_by(&state.orders)?;
    order_body(order)
}

/// `owner`'s orders, newest first.
pub async fn list(state: &GatewayState, owner: &str) -> Result<OrderList, Problem> {
    let orders = client(state)
        .list_orders(proto::ListOrdersRequest {
            owner: owner.to_owned(),
        })
        .await
        .answered_by(&state.orders)?;
    Ok(OrderList {
        items: orders
            .items
            .into_iter()
            .map(order_body)
            .collect::<Result<_, _>>()?,
        next_cursor: None,
    })
}

/// Order `id`, if `owner` placed it (or whoever did, with `any_owner`).
pub async fn get(
    state: &GatewayState,
    owner: &str,
    id: String,
    any_owner: bool,
) -> Result<OrderBody, Problem> {
    let order = client(state)
        .get_order(proto::GetOrderRequest {
            order_id: id,
            owner: owner.to_owned(),
            any_owner,
        })
        .await
        .answered_by(&state.orders)?;
    order_body(order)
}

/// Refunds order `id` (the caller is an admin): the order as it stands after.
pub async fn refund(state: &GatewayState, id: String) -> Result<OrderBody, Problem> {
    let order = client(state)
        .refund_order(proto::RefundOrderRequest { order_id: id })
        .await
        .answered_by(&state.orders)?;
    order_body(order)
}

/// A signed, expiring link to a file an order's buyer is entitled to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Download {
    pub product_id: String,
    /// The product's title, as the order has it.
    pub title: String,
    /// The file's name, e.g. download.mp3 or 720p.mp4.
    pub name: String,
    pub content_type: String,
    pub bytes: u64,
    /// The signed link: `/media/{asset}/{name}?order=…&expires=…&sig=…`.
    pub url: String,
    /// RFC 3339, UTC: the link is refused after this.
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Downloads {
    pub items: Vec<Download>,
}

/// The signed links to the files `owner`'s order `id` entitles them to: 404 for someone
/// else's order, 409 before it is confirmed or when it has no downloads.
pub async fn downloads(
    state: &GatewayState,
    owner: &str,
    id: String,
) -> Result<Downloads, Problem> {
    let order = get(state, owner, id.clone(), false).await?;
    if !order.items.iter().any(|item| item.digital) {
        return Err(Problem::conflict(
            "this order has no downloads: nothing in it is sold as a file",
        ));
    }
    if order.status != OrderStatus::Confirmed {
        return Err(Problem::conflict(
            "the downloads are ready once the order is confirmed: follow it at /api/v1/orders/{id}",
        ));
    }
    let media = state
        .media
        .as_ref()
        .ok_or_else(|| Problem::unavailable("media is not part of this deployment"))?;
    let signed = comb_contracts::media::v1::media_client::MediaClient::new(media.channel())
        .sign_downloads(comb_contracts::media::v1::SignDownloadsRequest {
            order_id: id,
            owner: owner.to_owned(),
            // Orders said this order is the caller's and what it sold as downloads: the
            // links are signed at once, and open once media has recorded the order.
            product_ids: order
                .items
                .iter()
                .filter(|item| item.digital)
                .map(|item| item.product_id.clone())
                .collect(),
        })
        .await
        .answered_by(media)?;
    let title = |product: &str| {
        order
            .items
            .iter()
            .find(|item| item.product_id == product)
            .map(|item| item.title.clone())
            .unwrap_or_default()
    };
    Ok(Downloads {
        items: signed
            .items
            .into_iter()
            .map(|download| Download {
                title: title(&download.product_id),
                product_id: download.product_id,
                name: download.name,
                content_type: download.content_type,
                bytes: download.bytes,
                url: download.url,
                expires_at: download.expires_at,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn usd(amount_minor: i64) -> Option<comb_contracts::catalog::v1::Money> {
        Some(comb_contracts::catalog::v1::Money {
            amount_minor,
            currency: "USD".into(),
        })
    }

    fn order(status: proto::OrderStatus) -> proto::Order {
        proto::Order {
            id: "o-1".into(),
            status: status as i32,
            subtotal: usd(1000),
            shipping: usd(500),
            total: usd(1500),
            payment_state: proto::PaymentState::None as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_order_is_shown_only_in_a_status_and_with_amounts_the_gateway_knows() {
        let shown = order_body(order(proto::OrderStatus::Confirmed)).map(|body| body.status);
        assert_eq!(shown.ok(), Some(OrderStatus::Confirmed));
        let unknown = order_body(proto::Order {
            status: 42,
            ..order(proto::OrderStatus::Pending)
        });
        assert_eq!(
            unknown.map(|_| ()).map_err(|p| p.status_code()),
            Err(StatusCode::BAD_GATEWAY)
        );
        let unspecified = order_body(order(proto::OrderStatus::Unspecified));
        assert!(unspecified.is_err(), "never shown as PENDING");
        let free = order_body(proto::Order {
            total: None,
            ..order(proto::OrderStatus::Pending)
        });
        assert!(free.is_err(), "a missing total is not zero");
    }

    #[test]
    fn payment_and_shipment_statuses_are_known_values_or_a_bad_gateway() {
        let shipped = proto::Order {
            payment_state: proto::PaymentState::Captured as i32,
            tracking_id: "TRK-1".into(),
            shipment_state: proto::ShipmentState::Shipped as i32,
            ..order(proto::OrderStatus::Confirmed)
        };
        let body = order_body(shipped.clone()).expect("shown");
        assert_eq!(body.payment.status, PaymentStatus::Captured);
        let shipment = body.shipment.expect("a shipment");
        assert_eq!(shipment.status, ShipmentStatus::Shipped);
        assert_eq!(
            serde_json::to_value(&shipment).expect("json")["status"],
            "shipped",
            "the REST contract's text"
        );

        // An orders service that sends only the older text forms is understood.
        let older = proto::Order {
            payment_state: 0,
            payment_status: "refunded".into(),
            shipment_state: 0,
            shipment_status: "delivered".into(),
            ..shipped.clone()
        };
        let body = order_body(older).expect("shown");
        assert_eq!(body.payment.status, PaymentStatus::Refunded);
        assert_eq!(
            body.shipment.map(|s| s.status),
            Some(ShipmentStatus::Delivered)
        );

        for unknown in [
            proto::Order {
                payment_state: 99,
                ..shipped.clone()
            },
            proto::Order {
                payment_state: 0,
                payment_status: "pending".into(),
                ..shipped.clone()
            },
            proto::Order {
                shipment_state: 0,
                shipment_status: String::new(),
                ..shipped.clone()
            },
            proto::Order {
                shipment_state: proto::ShipmentState::None as i32,
                ..shipped.clone()
            },
        ] {
            let refused = order_body(unknown).map(|_| ()).map_err(|p| p.status_code());
            assert_eq!(refused, Err(StatusCode::BAD_GATEWAY), "never a default");
        }
        let unshipped = proto::Order {
            tracking_id: String::new(),
            ..shipped
        };
        assert!(order_body(unshipped).expect("shown").shipment.is_none());
    }
}
