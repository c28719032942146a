//! The events services publish: their types and their data. Each travels as a
//! CloudEvents 1.0 envelope whose `type` is one of the constants here and whose `data` is
//! the matching struct as JSON. Consumers must ignore fields they do not know.

use serde::{Deserialize, Serialize};

/// The embedded transport's feed protocol.
pub mod v1 {
    #![allow(unreachable_pub, missing_docs, clippy::all)]
    tonic::include_proto!("comb.events.v1");
}

/// An order was confirmed: stock committed, payment captured, shipment created.
pub const ORDER_CONFIRMED: &str = "comb.order.confirmed";
/// An order was cancelled (its compensations follow).
pub const ORDER_CANCELLED: &str = "comb.order.cancelled";
/// A customer account was created.
pub const USER_REGISTERED: &str = "comb.user.registered";
/// A shipment left the warehouse.
pub const SHIPMENT_SHIPPED: &str = "comb.shipment.shipped";
/// A review was posted.
pub const REVIEW_POSTED: &str = "comb.review.posted";

/// A line of an order, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: String,
    /// The user or guest id that placed it.
    pub owner: String,
    pub email: String,
    pub lines: Vec<OrderLine>,
    pub subtotal_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub tracking_id: String,
    /// RFC 3339.
    pub placed_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    pub owner: String,
    pub email: String,
    /// out_of_stock, payment_declined, payment_failed, deadline_exceeded or
    /// cancelled_by_customer.
    pub reason: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewPosted {
    pub review_id: String,
    pub product_id: String,
    /// 1..=5.
    pub rating: i32,
    pub author_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentShipped {
    pub order_id: String,
    pub tracking_id: String,
    /// The user or guest id to tell.
    pub recipient: String,
    pub email: String,
}
