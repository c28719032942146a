//! The cart page and its forms: adding a product, changing a quantity.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Form, extract::rejection::FormRejection};
use comb_contracts::cart::v1 as cart;
use comb_contracts::cart::v1::cart_client::CartClient;
use maud::html;
use serde::Deserialize;

use crate::GatewayState;
use crate::shop::browser::form_token_field;
use crate::shop::{error_page, foreign_post, money, see_other, shopper, unavailable, visitor};

use super::page;

/// `GET /shop/cart`.
pub(in crate::shop) async fn cart(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let view = match visitor.owner() {
        None => None,
        Some(owner) => match CartClient::new(state.cart.channel())
            .get_cart(cart::GetCartRequest {
                owner: owner.to_owned(),
            })
            .await
        {
            Ok(view) => Some(view.into_inner()),
            Err(status) => return unavailable(&state.cart.problem(&status).detail),
        },
    };
    let lines = view
        .as_ref()
        .map(|v| v.lines.as_slice())
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
                            td { (money(line.unit_price.as_ref())) }
                            td {
                                form.inline method="post" action={"/shop/cart/items/" (line.product_id)} {
                                    (form_token_field(&visitor.form_token))
                                    label.visually-hidden for={"qty-" (line.product_id)} { "Quantity of " (line.title) }
                                    input id={"qty-" (line.product_id)} type="number" name="quantity" value=(line.quantity) min="0" max="99" size="3";
                                    button.secondary type="submit" { "Update" }
                                }
                            }
                            td { (money(line.line_total.as_ref())) }
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
            p.price { "Total: " (money(view.as_ref().and_then(|v| v.total.as_ref()))) }
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
    let added = CartClient::new(state.cart.channel())
        .add_item(cart::AddItemRequest {
            owner: visitor.owner().unwrap_or_default().to_owned(),
            product_id: form.product_id,
            quantity,
        })
        .await;
    match added {
        Ok(_) => see_other("/shop/cart", cookie),
        Err(status)
            if status.code() == tonic::Code::InvalidArgument
                || status.code() == tonic::Code::NotFound =>
        {
            error_page(
                StatusCode::BAD_REQUEST,
                "That could not go in your cart",
                &format!("{}. Go back and try again.", status.message()),
            )
        }
        Err(status) => unavailable(&state.cart.problem(&status).detail),
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
    let mut client = CartClient::new(state.cart.channel());
    let changed = if quantity == 0 {
        client
            .remove_item(cart::RemoveItemRequest { owner, product_id })
            .await
    } else {
        client
            .set_quantity(cart::SetQuantityRequest {
                owner,
                product_id,
                quantity,
            })
            .await
    };
    match changed {
        Ok(_) => see_other("/shop/cart", None),
        Err(status) => unavailable(&state.cart.problem(&status).detail),
    }
}
