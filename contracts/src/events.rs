//! The events services publish: their types and their data. Each travels as a
//! CloudEvents 1.0 envelope whose `type` is one of the constants here and whose `data` is
//! the matching struct as JSON. Consumers must ignore fields they do not know.

use serde::{Deserialize, Serialize};

pub use crate::ids::{OrderId, ProductId, Quantity, Sku};

/// The embedded transport's feed protocol.
pub mod v1 {
    #![allow(unreachable_pub, missing_docs, clippy::all)]
    tonic::include_proto!("comb.events.v1");
}

/// An order was placed (its saga starts).
pub const ORDER_PLACED: &str = "comb.order.placed";
/// An order was confirmed: stock committed, payment captured, shipment created.
pub const ORDER_CONFIRMED: &str = "comb.order.confirmed";
/// An order was cancelled (its compensations follow).
pub const ORDER_CANCELLED: &str = "comb.order.cancelled";
/// A customer account was created.
pub const USER_REGISTERED: &str = "comb.user.registered";
/// A shipment was created for a confirmed order.
pub const SHIPMENT_CREATED: &str = "comb.shipment.created";
/// A shipment reached its recipient.
pub const SHIPMENT_DELIVERED: &str = "comb.shipment.delivered";
/// A shipment left the warehouse.
pub const SHIPMENT_SHIPPED: &str = "comb.shipment.shipped";
/// A product was added to the catalog.
pub const PRODUCT_CREATED: &str = "comb.product.created";
/// A product's fields were replaced.
pub const PRODUCT_UPDATED: &str = "comb.product.updated";
/// A product's price changed.
pub const PRICE_CHANGED: &str = "comb.product.price_changed";
/// A payment was authorized.
pub const PAYMENT_AUTHORIZED: &str = "comb.payment.authorized";
/// A card was declined.
pub const PAYMENT_DECLINED: &str = "comb.payment.declined";
/// A captured payment was given back.
pub const PAYMENT_REFUNDED: &str = "comb.payment.refunded";
/// How many of a SKU can be sold changed (an admin set it, or a sale was committed).
pub const STOCK_CHANGED: &str = "comb.stock.changed";
/// A SKU is running out.
pub const LOW_STOCK: &str = "comb.stock.low";
/// A review was posted.
pub const REVIEW_POSTED: &str = "comb.review.posted";
/// A master file (image, audio or video) was stored for a product and its job queued.
pub const MEDIA_UPLOADED: &str = "comb.media.uploaded";
/// Every rendition of a media asset is written and checked.
pub const MEDIA_READY: &str = "comb.media.ready";
/// A media asset's job failed for good.
pub const MEDIA_FAILED: &str = "comb.media.failed";

/// A line of an order, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub sku: Sku,
    pub title: String,
    pub quantity: Quantity,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
    /// Sold as a download: no stock, no shipment, an entitlement for the buyer. Absent
    /// (false) on physical lines and in events published before downloads were sold.
    #[serde(default, skip_serializing_if = "is_false")]
    pub digital: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
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
    pub order_id: OrderId,
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
    pub product_id: ProductId,
    /// 1..=5.
    pub rating: i32,
    pub author_name: String,
}

/// ShipmentCreated, ShipmentShipped and ShipmentDelivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentShipped {
    pub order_id: OrderId,
    pub tracking_id: String,
    /// The user or guest id to tell.
    pub recipient: String,
    pub email: String,
}

/// ProductCreated and ProductUpdated carry the product as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductChanged {
    pub product_id: ProductId,
    pub sku: Sku,
    /// book, music or video.
    pub kind: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    /// Authors, artists or directors; absent from events published before they were.
    #[serde(default)]
    pub creators: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChanged {
    pub product_id: ProductId,
    pub sku: Sku,
    pub old_price_minor: i64,
    pub new_price_minor: i64,
    pub currency: String,
}

/// PaymentAuthorized, PaymentDeclined and PaymentRefunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    /// The payment's id: the order's id for checkouts.
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub last4: String,
    /// Why a declined payment was declined; empty otherwise.
    pub decline_reason: String,
}

/// StockChanged and LowStock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: Sku,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub owner: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: String,
}

/// MediaUploaded: a master was stored and its job queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUploaded {
    pub asset_id: String,
    pub product_id: ProductId,
    /// image, audio or video.
    pub kind: String,
    pub content_type: String,
    pub bytes: u64,
    pub job_id: String,
}

/// MediaReady: an asset's renditions, every one written and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaReady {
    pub asset_id: String,
    pub product_id: ProductId,
    /// image, audio or video.
    pub kind: String,
    pub renditions: Vec<MediaRendition>,
}

/// One file made from a master, as MediaReady announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRendition {
    /// Its name under the asset: `/media/{asset_id}/{name}`.
    pub name: String,
    pub content_type: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub width: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub height: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub duration_ms: u64,
    /// Whether anyone may fetch it, or only a buyer.
    pub public: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

/// MediaFailed: an asset's job failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFailed {
    pub asset_id: String,
    pub product_id: ProductId,
    pub kind: String,
    pub job_id: String,
    pub reason: String,
}
