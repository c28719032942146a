//! The storefront's pages and form handlers, one module per family of pages; what they
//! share (the page frame, product cards, the catalog client) is here.

pub(super) mod account;
pub(super) mod cart;
pub(super) mod catalog;
pub(super) mod checkout;
pub(super) mod orders;

use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{Visitor, layout};
use crate::GatewayState;
use crate::catalog::Product;

/// The cover of a product of this kind (as `ProductKind::label` names it) and title.
fn cover(kind: &str, title: &str) -> Markup {
    let kind = kind.to_ascii_lowercase();
    html! {
        img.cover src={"/shop/covers/" (kind) ".svg"} alt={"Cover of " (title)} width="300" height="400";
    }
}

fn product_card(product: &Product) -> Markup {
    html! {
        li.card {
            a href={"/shop/products/" (product.id)} {
                (cover(product.kind.label(), &product.title))
                h3 { (product.title) }
            }
            p.muted { (product.creators.join(", ")) " · " (product.kind.label()) }
            p.price { (product.price) }
        }
    }
}

async fn cart_count(state: &GatewayState, visitor: &Visitor) -> Option<i64> {
    crate::backend::cart::count(state, visitor.owner()?).await
}

async fn page(state: &GatewayState, visitor: &Visitor, title: &str, body: Markup) -> Response {
    let count = cart_count(state, visitor).await;
    axum::response::Html(layout(title, visitor, count, body).into_string()).into_response()
}

fn field(
    name: &str,
    label: &str,
    value: &str,
    kind: &str,
    autocomplete: &str,
    errors: &[(String, String)],
) -> Markup {
    let message = errors
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, m)| m);
    let id = format!("field-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(value) autocomplete=(autocomplete)
                aria-invalid=[message.map(|_| "true")]
                aria-describedby=[message.map(|_| format!("{id}-message"))];
            @if let Some(message) = message {
                p.message id={(id) "-message"} { (message) }
            }
        }
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
