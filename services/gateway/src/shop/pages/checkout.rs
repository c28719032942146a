//! The checkout: the form (with its shipping quote), and placing the order once per
//! form shown.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Form, extract::rejection::FormRejection};
use comb_contracts::payments::v1 as payments;
use comb_contracts::shipping::v1 as shipping;
use maud::{Markup, html};
use serde::Deserialize;

use crate::shop::browser::form_token_field;
use crate::shop::{Visitor, foreign_post, problem_page, see_other, visitor};
use crate::{GatewayState, backend};

use super::{capitalize, cart_count, field, page};

/// What the checkout form holds, to show it again with messages.
#[derive(Debug, Default, Deserialize)]
pub(in crate::shop) struct CheckoutForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    line1: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    exp_month: String,
    #[serde(default)]
    exp_year: String,
    #[serde(default)]
    cvc: String,
    /// Made when the form is shown: a form submitted twice places one order.
    #[serde(default)]
    checkout_key: String,
}

const COUNTRIES: &[(&str, &str)] = &[
    ("US", "United States"),
    ("GB", "United Kingdom"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("NL", "Netherlands"),
    ("CA", "Canada"),
    ("JP", "Japan"),
];

/// What shipping to a country costs, as the checkout shows it.
#[derive(Debug, Clone)]
struct Quote {
    country: String,
    cost: String,
    days: u32,
}

/// The last four digits of a card number, when it has that many.
fn last_four(number: &str) -> Option<String> {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 4).then(|| digits[digits.len() - 4..].iter().collect())
}

/// A checkout key as the form should carry: one this page made (a UUID), else a new one.
fn checkout_key(presented: &str) -> String {
    uuid::Uuid::parse_str(presented.trim())
        .unwrap_or_else(|_| uuid::Uuid::new_v4())
        .to_string()
}

/// Whether the visitor's cart holds anything to ship (not only downloads); when the cart
/// cannot be read, it is taken to, so the address is asked for.
async fn cart_ships(state: &GatewayState, owner: Option<&str>) -> bool {
    let Some(owner) = owner else { return true };
    match backend::cart::get(state, owner).await {
        Ok(cart) => cart.items.is_empty() || cart.items.iter().any(|item| !item.digital),
        Err(_) => true,
    }
}

fn checkout_page(
    form_token: &str,
    form: &CheckoutForm,
    errors: &[(String, String)],
    notice: Option<&str>,
    quote: Option<&Quote>,
    ships: bool,
) -> Markup {
    let country = if form.country.is_empty() {
        "US"
    } else {
        form.country.as_str()
    };
    let country_name = |code: &str| {
        COUNTRIES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(code.to_owned(), |(_, name)| (*name).to_owned())
    };
    html! {
        h1 { "Check out" }
        @if !ships {
            p #downloads-only { "Your cart holds downloads only: nothing is shipped, and the links come with your order." }
        }
        @if ships {
        form.quote method="get" action="/shop/checkout" {
            label for="quote-country" { "Shipping to" }
            " "
            select #quote-country name="country" {
                @for (code, name) in COUNTRIES {
                    option value=(code) selected[*code == country] { (name) }
                }
            }
            " "
            button.secondary type="submit" { "Show shipping" }
            @if let Some(quote) = quote {
                p #shipping-quote { "Shipping to " (country_name(&quote.country)) ": " strong { (quote.cost) } ", about " (quote.days) " day" @if quote.days != 1 { "s" } "." }
            }
        }
        }
        @if let Some(notice) = notice {
            div.error-box role="alert" { p { (notice) } }
        }
        @if !errors.is_empty() {
            div.error-box role="alert" { p { "Please correct the marked fields." } }
        }
        form method="post" action="/shop/checkout" novalidate {
            (form_token_field(form_token))
            input type="hidden" name="checkout_key" value=(form.checkout_key);
            fieldset {
                legend { "Contact" }
                (field("email", "Email", &form.email, "email", "email", errors))
            }
            @if ships {
            fieldset {
                legend { "Shipping address" }
                (field("name", "Full name", &form.name, "text", "name", errors))
                (field("line1", "Address", &form.line1, "text", "address-line1", errors))
                (field("city", "City", &form.city, "text", "address-level2", errors))
                (field("postal_code", "Postal code", &form.postal_code, "text", "postal-code", errors))
                div.field {
                    label for="field-country" { "Country" }
                    select #field-country name="country" autocomplete="country" {
                        @for (code, name) in COUNTRIES {
                            option value=(code) selected[*code == country] { (name) }
                        }
                    }
                }
                p.muted { "Shipping is added to the total for the country you ship to." }
            }
            }
            fieldset {
                legend { "Payment (test card 4242 4242 4242 4242)" }
                // A page shown again never carries the card number or its security code.
                @if let Some(last4) = last_four(&form.card_number) {
                    p.muted #card-again { "Enter the card ending " (last4) " again." }
                }
                (field("card_number", "Card number", "", "text", "cc-number", errors))
                (field("exp_month", "Expiry month", &form.exp_month, "text", "cc-exp-month", errors))
                (field("exp_year", "Expiry year", &form.exp_year, "text", "cc-exp-year", errors))
                (field("cvc", "Security code", "", "text", "cc-csc", errors))
            }
            button type="submit" { "Place order" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(in crate::shop) struct CheckoutQuery {
    country: Option<String>,
}

/// The cost of shipping the visitor's cart to `country`, if shipping answers in time.
async fn quote(state: &GatewayState, visitor: &Visitor, country: &str) -> Option<Quote> {
    let items = cart_count(state, visitor).await.unwrap_or(1).max(1);
    let quoted = backend::shipping::quote(state, country, items).await?;
    Some(Quote {
        country: country.to_owned(),
        cost: quoted.cost.to_string(),
        days: quoted.days,
    })
}

/// `GET /shop/checkout[?country=XX]`.
pub(in crate::shop) async fn checkout_form(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(query): Query<CheckoutQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let country = query
        .country
        .filter(|code| COUNTRIES.iter().any(|(c, _)| c == code))
        .unwrap_or_else(|| "US".to_owned());
    let ships = cart_ships(&state, visitor.owner()).await;
    let quote = if ships {
        quote(&state, &visitor, &country).await
    } else {
        None
    };
    let form = CheckoutForm {
        country,
        email: visitor
            .claims
            .as_ref()
            .and_then(|claims| claims.email.clone())
            .unwrap_or_default(),
        name: visitor
            .claims
            .as_ref()
            .and_then(|claims| claims.name.clone())
            .unwrap_or_default(),
        checkout_key: checkout_key(""),
        ..Default::default()
    };
    page(
        &state,
        &visitor,
        "Check out",
        checkout_page(&visitor.form_token, &form, &[], None, quote.as_ref(), ships),
    )
    .await
}

/// `POST /shop/checkout`: places the order and shows it; a field at fault is marked.
pub(in crate::shop) async fn checkout(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    form: Result<Form<CheckoutForm>, FormRejection>,
) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    let mut form = form.map(|Form(form)| form).unwrap_or_default();
    // The key the form was shown with: a second submission of it is the same order.
    form.checkout_key = checkout_key(&form.checkout_key);
    let visitor = visitor(&state, &headers).await;
    let Some(owner) = visitor.owner().map(str::to_owned) else {
        return see_other("/shop/cart", None);
    };
    let mut errors = Vec::new();
    let mut require = |name: &str, value: &str, what: &str| {
        if value.trim().is_empty() {
            errors.push((name.to_owned(), format!("Enter {what}.")));
        }
    };
    let ships = cart_ships(&state, Some(&owner)).await;
    require("email", &form.email, "your email address");
    if ships {
        require("name", &form.name, "the name to ship to");
        require("line1", &form.line1, "the street address");
        require("city", &form.city, "the city");
        require("postal_code", &form.postal_code, "the postal code");
    }
    require("card_number", &form.card_number, "the card number");
    let month: Option<u32> = form
        .exp_month
        .trim()
        .parse()
        .ok()
        .filter(|m| (1..=12).contains(m));
    if month.is_none() {
        errors.push((
            "exp_month".into(),
            "Enter the month as a number from 1 to 12.".into(),
        ));
    }
    let year: Option<u32> = form
        .exp_year
        .trim()
        .parse()
        .ok()
        .map(|y: u32| if y < 100 { y + 2000 } else { y });
    if year.is_none() {
        errors.push(("exp_year".into(), "Enter the year, e.g. 2030.".into()));
    }
    if !errors.is_empty() {
        let page_body = checkout_page(&visitor.form_token, &form, &errors, None, None, ships);
        let mut response = page(&state, &visitor, "Check out", page_body).await;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return response;
    }
    let checkout = backend::orders::Checkout {
        owner,
        idempotency_key: form.checkout_key.clone(),
        email: form.email.trim().to_owned(),
        address: ships.then(|| shipping::Address {
            name: form.name.trim().to_owned(),
            line1: form.line1.trim().to_owned(),
            line2: String::new(),
            city: form.city.trim().to_owned(),
            postal_code: form.postal_code.trim().to_owned(),
            country: form.country.trim().to_owned(),
        }),
        card: payments::Card {
            number: form.card_number.replace([' ', '-'], ""),
            exp_month: month.unwrap_or_default(),
            exp_year: year.unwrap_or_default(),
            cvc: form.cvc.trim().to_owned(),
        },
    };
    match backend::orders::place(&state, checkout).await {
        Ok(order) => see_other(&format!("/shop/orders/{}", order.id), None),
        Err(problem) if problem.status == 422 => {
            let errors: Vec<(String, String)> = problem
                .errors
                .iter()
                .map(|error| {
                    let name = match error.field.as_str() {
                        "payment.card_number" | "card.number" => "card_number",
                        "payment.exp_month" | "card.exp_month" => "exp_month",
                        "payment.exp_year" | "card.exp_year" => "exp_year",
                        "payment.cvc" | "card.cvc" => "cvc",
                        other => other.rsplit('.').next().unwrap_or(other),
                    };
                    (name.to_owned(), capitalize(&error.message))
                })
                .collect();
            let notice = errors.is_empty().then(|| capitalize(&problem.detail));
            let page_body = checkout_page(
                &visitor.form_token,
                &form,
                &errors,
                notice.as_deref(),
                None,
                ships,
            );
            let mut response = page(&state, &visitor, "Check out", page_body).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
        Err(problem) if problem.status == 409 => {
            let page_body = checkout_page(
                &visitor.form_token,
                &form,
                &[],
                Some(&format!("{}.", capitalize(&problem.detail))),
                None,
                ships,
            );
            let mut response = page(&state, &visitor, "Check out", page_body).await;
            *response.status_mut() = StatusCode::CONFLICT;
            response
        }
        Err(problem) => problem_page(&problem),
    }
}
