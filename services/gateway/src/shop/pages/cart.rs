//! The cart page and its forms: adding a product, changing a quantity.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Form, extract::rejection::FormRejection};
use maud::html;
use serde::Deserialize;

use crate::shop::browser::form_token_field;
use crate::shop::{error_page, foreign_post, problem_page, see_other, shopper, visitor};
use crate::{GatewayState, backend};

use super::page;

/// `GET /shop/cart`.
pub(in crate::shop) async fn cart(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let cart = match visitor.owner() {
        None => None,
        Some(owner) => match backend::cart::get(&state, owner).await {
            Ok(cart) => Some(cart),
            Err(problem) => return problem_page(&problem),
        },
    };
    let lines = cart
        .as_ref()
        .map(|c| c.items.as_slice())
        .unwrap_or_default();
    let body = html! {
        h1 { "Your cart" }
        @if lines.is_empty() {
            p { "Your cart is empty. " a href="/" { "Find something you like." } }
        } @else {
            table {
                caption.visually-hidden { "Items in your cart" }
                thead { tr { th scope="col" { "Item" } th scope="col" { "Price" } th scope="col" { "Quantity" } th scope="col" { "Total" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for line in lines {
                        tr {
                            td { a href={"/shop/products/" (line.product_id)} { (line.title) } }
                            td { (line.unit_price) }
                            td {
                                form.inline method="post" action={"/shop/cart/items/" (line.product_id)} {
                                    (form_token_field(&visitor.form_token))
                                    label.visually-hidden for={"qty-" (line.product_id)} { "Quantity of " (line.title) }
                                    input id={"qty-" (line.product_id)} type="number" name="quantity" value=(line.quantity) min="0" max="99" size="3";
                                    button.secondary type="submit" { "Update" }
                                }
                            }
                            td { (line.line_total) }
                            td {
                                form.inline method="post" action={"/shop/cart/items/" (line.product_id)} {
                                    (form_token_field(&visitor.form_token))
                                    input type="hidden" name="quantity" value="0";
                                    button.secondary type="submit" aria-label={"Remove " (line.title)} { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cart) = &cart {
                p.price { "Total: " (cart.total) }
            }
            p { a.button href="/shop/checkout" { "Check out" } }
        }
    };
    page(&state, &visitor, "Cart", body).await
}

#[derive(Debug, Deserialize)]
pub(in crate::shop) struct AddToCart {
    product_id: String,
    quantity: Option<String>,
}

/// Why the cart refused: the service's own words, field by field when it named them.
fn refusal(problem: &comb_kit::Problem) -> String {
    if problem.errors.is_empty() {
        return problem.detail.clone();
    }
    let said: Vec<String> = problem
        .errors
        .iter()
        .map(|error| format!("{} {}", error.field, error.message))
        .collect();
    said.join("; ")
}

fn quantity(text: Option<&str>, allow_zero: bool) -> Option<i64> {
    let value: i64 = text.unwrap_or("1").trim().parse().ok()?;
    let least = if allow_zero { 0 } else { 1 };
    (least..=99).contains(&value).then_some(value)
}

/// `POST /shop/cart/items`.
pub(in crate::shop) async fn add_to_cart(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    form: Result<Form<AddToCart>, FormRejection>,
) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    let Ok(Form(form)) = form else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "That did not work",
            "The form was incomplete. Go back to the product and try again.",
        );
    };
    let Some(quantity) = quantity(form.quantity.as_deref(), false) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Choose a quantity from 1 to 99",
            "Go back to the product and choose how many you want.",
        );
    };
    let (visitor, cookie) = match shopper(&state, visitor(&state, &headers).await).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let owner = visitor.owner().unwrap_or_default();
    match backend::cart::add(&state, owner, form.product_id, quantity).await {
        Ok(_) => see_other("/shop/cart", cookie),
        Err(problem) if matches!(problem.status, 404 | 422) => error_page(
            StatusCode::BAD_REQUEST,
            "That could not go in your cart",
            &format!("{}. Go back and try again.", refusal(&problem)),
        ),
        Err(problem) => problem_page(&problem),
    }
}

#[derive(Debug, Deserialize)]
pub(in crate::shop) struct ChangeQuantity {
    quantity: Option<String>,
}

/// `POST /shop/cart/items/{product_id}`: a new quantity, 0 removing the line.
pub(in crate::shop) async fn change_quantity(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(product_id): Path<String>,
    form: Result<Form<ChangeQuantity>, FormRejection>,
) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    let quantity = form
        .ok()
        .and_then(|Form(form)| quantity(form.quantity.as_deref(), true));
    let Some(quantity) = quantity else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Choose a quantity from 0 to 99",
            "Go back to your cart; 0 removes the item.",
        );
    };
    let visitor = visitor(&state, &headers).await;
    let Some(owner) = visitor.owner().map(str::to_owned) else {
        return see_other("/shop/cart", None);
    };
    let changed = if quantity == 0 {
        backend::cart::remove(&state, &owner, product_id).await
    } else {
        backend::cart::set_quantity(&state, &owner, product_id, quantity).await
    };
    match changed {
        Ok(_) => see_other("/shop/cart", None),
        Err(problem) => problem_page(&problem),
    }
}
