//! A customer's orders: one order as it goes from PENDING to CONFIRMED, and the list.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use comb_contracts::orders::v1 as orders;
use comb_contracts::orders::v1::orders_client::OrdersClient;
use maud::html;

use crate::GatewayState;
use crate::shop::{error_page, money, unavailable, visitor};

use super::page;

/// The status as a person reads it; one the storefront does not know is said to be
/// unknown, never shown as pending.
fn status_text(order: &orders::Order) -> (&'static str, &'static str) {
    match orders::OrderStatus::try_from(order.status) {
        Ok(orders::OrderStatus::Pending) => ("PENDING", "muted"),
        Ok(orders::OrderStatus::Confirmed) => ("CONFIRMED", "ok"),
        Ok(orders::OrderStatus::Cancelled) => ("CANCELLED", "bad"),
        Ok(orders::OrderStatus::Unspecified) | Err(_) => ("UNKNOWN", "muted"),
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
    let found = OrdersClient::new(state.orders.channel())
        .get_order(orders::GetOrderRequest {
            order_id: id,
            owner,
            any_owner: false,
        })
        .await;
    let order = match found {
        Ok(order) => order.into_inner(),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
            ) =>
        {
            return error_page(
                StatusCode::NOT_FOUND,
                "We cannot find that order",
                "It is not one of yours, or the link is wrong. See your orders.",
            );
        }
        Err(status) => return unavailable(&state.orders.problem(&status).detail),
    };
    let (label, class) = status_text(&order);
    let pending = label == "PENDING";
    let (payment, shipment) = match (
        crate::orders::PaymentStatus::of(&order),
        crate::orders::ShipmentStatus::of(&order),
    ) {
        (Ok(payment), Ok(shipment)) => (payment, shipment),
        (Err(problem), _) | (_, Err(problem)) => {
            return error_page(
                StatusCode::BAD_GATEWAY,
                "We cannot show this order right now",
                &problem.detail,
            );
        }
    };
    let body = html! {
        h1 { "Order " span.muted { (order.id) } }
        p { "Status: " strong.(class) #order-status { (label) } }
        @if pending {
            p.notice { "We are confirming your order; this page updates by itself." }
            meta http-equiv="refresh" content="2";
        }
        @if label == "CANCELLED" {
            div.error-box role="alert" { p { (cancel_advice(&order.cancel_reason)) } p { a href="/shop/checkout" { "Try again" } } }
        }
        @if label == "CONFIRMED" {
            p.ok { "Thank you! A confirmation is in your " a href="/shop/mailbox" { "mailbox" } "." }
        }
        table {
            caption.visually-hidden { "Items in this order" }
            thead { tr { th scope="col" { "Item" } th scope="col" { "Quantity" } th scope="col" { "Total" } } }
            tbody {
                @for line in &order.lines {
                    tr { td { (line.title) } td { (line.quantity) } td { (money(line.line_total.as_ref())) } }
                }
            }
        }
        p { "Subtotal " (money(order.subtotal.as_ref())) " · shipping " (money(order.shipping.as_ref())) " · " strong { "total " (money(order.total.as_ref())) } }
        @if !order.payment_last4.is_empty() {
            p.muted { "Card ending " (order.payment_last4) " · payment " (payment.as_str()) }
        }
        @if let Some(shipment) = shipment {
            p { "Shipment " (order.tracking_id) ": " (shipment.as_str()) }
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
        Some(owner) => match OrdersClient::new(state.orders.channel())
            .list_orders(orders::ListOrdersRequest {
                owner: owner.to_owned(),
            })
            .await
        {
            Ok(found) => found.into_inner().items,
            Err(status) => return unavailable(&state.orders.problem(&status).detail),
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
                            td { (money(order.total.as_ref())) }
                        }
                    }
                }
            }
        }
    };
    page(&state, &visitor, "Orders", body).await
}
