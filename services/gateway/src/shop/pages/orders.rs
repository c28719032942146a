//! A customer's orders: one order as it goes from PENDING to CONFIRMED, and the list.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

use crate::backend::orders::{OrderBody, OrderStatus};
use crate::shop::{error_page, problem_page, visitor};
use crate::{GatewayState, backend};

use super::page;

/// The status as a person reads it (one the gateway does not know never gets this far:
/// the backend answers 502 for it).
fn status_text(order: &OrderBody) -> (&'static str, &'static str) {
    match order.status {
        OrderStatus::Pending => ("PENDING", "muted"),
        OrderStatus::Confirmed => ("CONFIRMED", "ok"),
        OrderStatus::Cancelled => ("CANCELLED", "bad"),
    }
}

fn cancel_advice(reason: &str) -> &'static str {
    match reason {
        "payment_declined" => {
            "Your card was declined. Nothing was charged. Try again with another card."
        }
        "out_of_stock" => {
            "Something in your order sold out before we could reserve it. Nothing was charged."
        }
        "deadline_exceeded" => {
            "We could not finish your order in time. Nothing was charged; please try again."
        }
        "refunded" => {
            "This order was refunded: the money went back to your card, and its downloads no longer open."
        }
        _ => "Your order could not be completed. Nothing was charged; please try again.",
    }
}

/// `GET /shop/orders/{id}`: one order; refreshes itself while it is pending.
pub(in crate::shop) async fn order(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let Some(owner) = visitor.owner().map(str::to_owned) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "We cannot find that order",
            "Log in with the account that placed it.",
        );
    };
    let order = match backend::orders::get(&state, &owner, id, false).await {
        Ok(order) => order,
        Err(problem) if matches!(problem.status, 403 | 404 | 422) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "We cannot find that order",
                "It is not one of yours, or the link is wrong. See your orders.",
            );
        }
        Err(problem) => return problem_page(&problem),
    };
    let (label, class) = status_text(&order);
    let pending = label == "PENDING";
    // A confirmed order's downloads: fresh signed links at every visit.
    let downloads =
        if order.status == OrderStatus::Confirmed && order.items.iter().any(|item| item.digital) {
            Some(backend::orders::downloads(&state, &owner, order.id.clone()).await)
        } else {
            None
        };
    let body = html! {
        h1 { "Order " span.muted { (order.id) } }
        p { "Status: " strong.(class) #order-status { (label) } }
        @if pending {
            p.notice { "We are confirming your order; this page updates by itself." }
            meta http-equiv="refresh" content="2";
        }
        @if label == "CANCELLED" {
            div.error-box role="alert" { p { (cancel_advice(order.cancel_reason.as_deref().unwrap_or_default())) } p { a href="/shop/checkout" { "Try again" } } }
        }
        @if label == "CONFIRMED" {
            p.ok { "Thank you! A confirmation is in your " a href="/shop/mailbox" { "mailbox" } "." }
        }
        table {
            caption.visually-hidden { "Items in this order" }
            thead { tr { th scope="col" { "Item" } th scope="col" { "Quantity" } th scope="col" { "Total" } } }
            tbody {
                @for line in &order.items {
                    tr { td { (line.title) } td { (line.quantity) } td { (line.line_total) } }
                }
            }
        }
        p { "Subtotal " (order.subtotal) " · shipping " (order.shipping) " · " strong { "total " (order.total) } }
        @if !order.payment.last4.is_empty() {
            p.muted { "Card ending " (order.payment.last4) " · payment " (order.payment.status.as_str()) }
        }
        @if let Some(shipment) = &order.shipment {
            p { "Shipment " (shipment.tracking_id) ": " (shipment.status.as_str()) }
        }
        @match &downloads {
            None => {},
            Some(Ok(links)) => section #downloads aria-labelledby="downloads-heading" {
                h2 #downloads-heading { "Your downloads" }
                @if links.items.is_empty() {
                    p.muted { "No file is available for this order any more." }
                }
                ul {
                    @for link in &links.items {
                        li {
                            a href=(link.url) download { (link.title) " · " (link.name) }
                            " " span.muted { "(" (format!("{:.1} MB", link.bytes as f64 / 1e6)) ", link valid until " (link.expires_at.get(..16).unwrap_or(&link.expires_at).replace('T', " ")) " UTC)" }
                        }
                    }
                }
            },
            Some(Err(_)) => p.notice #downloads { "Your downloads cannot be listed right now; reload this page in a moment." },
        }
    };
    page(&state, &visitor, "Your order", body).await
}

/// `GET /shop/orders`.
pub(in crate::shop) async fn orders(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let list = match visitor.owner() {
        None => Vec::new(),
        Some(owner) => match backend::orders::list(&state, owner).await {
            Ok(found) => found.items,
            Err(problem) => return problem_page(&problem),
        },
    };
    let body = html! {
        h1 { "Your orders" }
        @if list.is_empty() {
            p { "No orders yet." }
        } @else {
            table {
                caption.visually-hidden { "Your orders, newest first" }
                thead { tr { th scope="col" { "Placed" } th scope="col" { "Order" } th scope="col" { "Status" } th scope="col" { "Total" } } }
                tbody {
                    @for order in &list {
                        @let (label, class) = status_text(order);
                        tr {
                            td { (order.created_at.get(..16).unwrap_or(&order.created_at).replace('T', " ")) }
                            td { a href={"/shop/orders/" (order.id)} { (order.id) } }
                            td.(class) { (label) }
                            td { (order.total) }
                        }
                    }
                }
            }
        }
    };
    page(&state, &visitor, "Orders", body).await
}
