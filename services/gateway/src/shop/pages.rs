//! The storefront's pages and form handlers.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, extract::rejection::FormRejection};
use comb_contracts::cart::v1 as cart;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_contracts::catalog::v1 as catalog;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_contracts::notifications::v1 as notifications;
use comb_contracts::notifications::v1::notifications_client::NotificationsClient;
use comb_contracts::orders::v1 as orders;
use comb_contracts::orders::v1::orders_client::OrdersClient;
use comb_contracts::payments::v1 as payments;
use comb_contracts::shipping::v1 as shipping;
use comb_contracts::users::v1 as users;
use comb_contracts::users::v1::users_client::UsersClient;
use maud::{Markup, html};
use serde::Deserialize;

use super::browser::form_token_field;
use super::{
    Visitor, cleared_session_cookie, error_page, foreign_post, layout, money, see_other,
    session_cookie, shopper, unavailable, visitor,
};
use crate::GatewayState;

/// How long a page waits for a part it can do without (reviews, recommendations, stock).
const SIDE_DEADLINE: Duration = Duration::from_millis(300);

fn kind_of(name: &str) -> Option<catalog::ProductKind> {
    match name {
        "book" => Some(catalog::ProductKind::Book),
        "music" => Some(catalog::ProductKind::Music),
        "video" => Some(catalog::ProductKind::Video),
        _ => None,
    }
}

fn kind_label(kind: i32) -> &'static str {
    match catalog::ProductKind::try_from(kind) {
        Ok(catalog::ProductKind::Book) => "Book",
        Ok(catalog::ProductKind::Music) => "Music",
        Ok(catalog::ProductKind::Video) => "Video",
        _ => "Item",
    }
}

fn cover(product: &catalog::Product) -> Markup {
    let kind = kind_label(product.kind).to_ascii_lowercase();
    html! {
        img.cover src={"/shop/covers/" (kind) ".svg"} alt={"Cover of " (product.title)} width="300" height="400";
    }
}

fn product_card(product: &catalog::Product) -> Markup {
    html! {
        li.card {
            a href={"/shop/products/" (product.id)} {
                (cover(product))
                h3 { (product.title) }
            }
            p.muted { (product.creators.join(", ")) " · " (kind_label(product.kind)) }
            p.price { (money(product.price.as_ref())) }
        }
    }
}

async fn cart_count(state: &GatewayState, visitor: &Visitor) -> Option<i64> {
    let owner = visitor.owner()?.to_owned();
    let view = tokio::time::timeout(
        SIDE_DEADLINE,
        CartClient::new(state.cart.channel()).get_cart(cart::GetCartRequest { owner }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some(view.lines.iter().map(|line| line.quantity).sum())
}

async fn page(state: &GatewayState, visitor: &Visitor, title: &str, body: Markup) -> Response {
    let count = cart_count(state, visitor).await;
    axum::response::Html(layout(title, visitor, count, body).into_string()).into_response()
}

fn catalog_client(state: &GatewayState) -> CatalogClient<comb_kit::grpc::UpstreamChannel> {
    CatalogClient::new(state.catalog.channel())
}

/// `GET /`: featured books, music and video.
///
/// The featured shelves show catalog data alone, all of one catalog version, so they are
/// rendered once per version: while the catalog's version is the one they were rendered
/// at they are served as they are; else one conditional read tells whether they are
/// still current, and only a new version costs the other reads and the rendering.
pub(super) async fn home(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    const SHELVES: &str = "shop:home";
    let visitor = visitor(&state, &headers).await;
    let held = state.rendered.get(SHELVES);
    if let Some(held) = held
        .as_ref()
        .filter(|held| state.watches.catalog.is_current(held.version))
    {
        let shelves = String::from_utf8_lossy(&held.body).into_owned();
        return page_html(&state, &visitor, "Welcome", maud::PreEscaped(shelves)).await;
    }
    let kinds = [
        ("Books", catalog::ProductKind::Book),
        ("Music", catalog::ProductKind::Music),
        ("Video", catalog::ProductKind::Video),
    ];
    let mut sections = Vec::new();
    let mut version = 0;
    for (index, (name, kind)) in kinds.into_iter().enumerate() {
        let found = catalog_client(&state)
            .list_products(catalog::ListProductsRequest {
                kind: kind as i32,
                limit: 4,
                if_version: if index == 0 {
                    held.as_ref().map_or(0, |held| held.version)
                } else {
                    0
                },
                ..Default::default()
            })
            .await;
        match found {
            Ok(page) => {
                let page = page.into_inner();
                if page.not_modified
                    && let Some(held) = &held
                {
                    let shelves = String::from_utf8_lossy(&held.body).into_owned();
                    return page_html(&state, &visitor, "Welcome", maud::PreEscaped(shelves)).await;
                }
                if index == 0 {
                    version = page.version;
                }
                sections.push((name, kind, page.items));
            }
            Err(status) => return unavailable(&state.catalog.problem(&status).detail),
        }
    }
    let body = html! {
        h1 { "Books, music and video" }
        p.muted { "Browse the shelves, search, and check out with a test card." }
        @for (name, kind, products) in &sections {
            section aria-labelledby={"featured-" (kind.as_str_name())} {
                h2 #{"featured-" (kind.as_str_name())} { (name) }
                ul.grid { @for product in products { (product_card(product)) } }
                p { a href={"/shop/browse?kind=" (name.to_ascii_lowercase().trim_end_matches('s'))} { "All " (name.to_ascii_lowercase()) } }
            }
        }
    };
    if version != 0 {
        state.rendered.keep(
            SHELVES.to_owned(),
            version,
            axum::body::Bytes::from(body.clone().into_string()),
        );
    }
    page(&state, &visitor, "Welcome", body).await
}

/// A page whose body is HTML rendered earlier.
async fn page_html(
    state: &GatewayState,
    visitor: &Visitor,
    title: &str,
    body: maud::PreEscaped<String>,
) -> Response {
    page(state, visitor, title, html! { (body) }).await
}

#[derive(Debug, Deserialize)]
pub(super) struct BrowseQuery {
    kind: Option<String>,
    category: Option<String>,
    cursor: Option<String>,
}

/// `GET /shop/browse`: one kind (and category), a page at a time.
pub(super) async fn browse(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(query): Query<BrowseQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let kind_name = query.kind.clone().unwrap_or_default();
    let kind = kind_of(&kind_name);
    let found = catalog_client(&state)
        .list_products(catalog::ListProductsRequest {
            kind: kind.map_or(0, |k| k as i32),
            category: query.category.clone().unwrap_or_default(),
            limit: 24,
            cursor: query.cursor.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await;
    let found = match found {
        Ok(found) => found.into_inner(),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "That page does not exist",
                "The link you followed is not one of ours. Start again from the shop's front page.",
            );
        }
        Err(status) => return unavailable(&state.catalog.problem(&status).detail),
    };
    let categories = catalog_client(&state)
        .list_categories(catalog::ListCategoriesRequest::default())
        .await
        .map(|found| found.into_inner().items)
        .unwrap_or_default();
    let heading = match kind {
        Some(catalog::ProductKind::Book) => "Books",
        Some(catalog::ProductKind::Music) => "Music",
        Some(catalog::ProductKind::Video) => "Video",
        _ => "Everything",
    };
    let body = html! {
        h1 { (heading) }
        nav aria-label="Categories" {
            ul.inline-list {
                @for category in categories.iter().filter(|c| kind.is_none_or(|k| c.kind == k as i32)) {
                    li { a href={"/shop/browse?kind=" (kind_name) "&category=" (category.slug)} { (category.name) " (" (category.product_count) ")" } }
                }
            }
        }
        @if found.items.is_empty() {
            p { "Nothing here yet." }
        }
        ul.grid { @for product in &found.items { (product_card(product)) } }
        @if !found.next_cursor.is_empty() {
            p { a href={"/shop/browse?kind=" (kind_name) "&category=" (query.category.clone().unwrap_or_default()) "&cursor=" (found.next_cursor)} { "More" } }
        }
    };
    page(&state, &visitor, heading, body).await
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
}

/// `GET /shop/search?q=`.
pub(super) async fn search(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let words = query.q.unwrap_or_default().trim().to_owned();
    if words.is_empty() {
        let body = html! {
            h1 { "Search" }
            p { "Type a title, an author or artist, or a subject in the search box above." }
        };
        return page(&state, &visitor, "Search", body).await;
    }
    if words.chars().count() > 200 {
        return error_page(
            StatusCode::BAD_REQUEST,
            "That search is too long",
            "Search with at most 200 characters.",
        );
    }
    let found = catalog_client(&state)
        .search_products(catalog::SearchProductsRequest {
            query: words.clone(),
            limit: 24,
            ..Default::default()
        })
        .await;
    let found = match found {
        Ok(found) => found.into_inner().items,
        Err(status) => return unavailable(&state.catalog.problem(&status).detail),
    };
    let body = html! {
        h1 { "Results for “" (words) "”" }
        @if found.is_empty() {
            p { "Nothing matches. Try fewer or other words." }
        }
        ul.grid { @for product in &found { (product_card(product)) } }
    };
    page(&state, &visitor, "Search", body).await
}

/// `GET /shop/products/{id}`: details, price, stock, reviews and what is bought with it;
/// the last three each say so when their service does not answer in time.
pub(super) async fn product(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ProductQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let product = match crate::catalog::product(&state, &id).await {
        Ok(product) => product,
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) =>
        {
            return error_page(
                StatusCode::NOT_FOUND,
                "We cannot find that product",
                "It may have been removed, or the link is wrong. Search for it, or browse the shelves.",
            );
        }
        Err(status) => return unavailable(&state.catalog.problem(&status).detail),
    };
    let stock = crate::catalog::available(&state, product.sku.clone());
    let reviews = crate::reviews::newest(&state, id.clone());
    let recommendations = crate::catalog::bought_with(&state, id.clone());
    let deadline = tokio::time::Instant::now() + SIDE_DEADLINE;
    let (stock, reviews, recommendations) = comb_kit::deadline::within(deadline, async {
        tokio::join!(
            tokio::time::timeout(SIDE_DEADLINE, stock),
            tokio::time::timeout(SIDE_DEADLINE, reviews),
            tokio::time::timeout(SIDE_DEADLINE, recommendations),
        )
    })
    .await;
    let stock = stock.ok().flatten();
    let reviews = reviews.ok().and_then(Result::ok);
    let recommendations = recommendations.ok().and_then(Result::ok);
    let body = html! {
        article.product {
            (cover(&product))
            div {
                h1 { (product.title) }
                p.muted { (product.creators.join(", ")) " · " (kind_label(product.kind)) " · " (product.category) }
                p.price { (money(product.price.as_ref())) }
                @match stock {
                    Some(0) => p.bad #stock { "Sold out" },
                    Some(left) if left <= 5 => p.ok #stock { "In stock: only " (left) " left" },
                    Some(_) => p.ok #stock { "In stock" },
                    None => p.muted #stock { "Stock is unavailable right now" },
                }
                @if let Some(rating) = &product.rating {
                    @if rating.count > 0 {
                        p { "Rated " (format!("{:.1}", rating.average)) " out of 5 by " (rating.count) " buyer" @if rating.count != 1 { "s" } }
                    }
                }
                form method="post" action="/shop/cart/items" {
                    (form_token_field(&visitor.form_token))
                    input type="hidden" name="product_id" value=(product.id);
                    div.field {
                        label for="quantity" { "Quantity" }
                        input #quantity type="number" name="quantity" value="1" min="1" max="99" required;
                    }
                    button type="submit" disabled[stock == Some(0)] { "Add to cart" }
                }
                p { (product.description) }
            }
        }
        section aria-labelledby="reviews-heading" #reviews {
            h2 #reviews-heading { "Reviews" }
            @if let Some(message) = query.review.as_deref().and_then(review_message) {
                p.notice role="status" { (message) }
            }
            @match &reviews {
                None => p.notice { "Reviews are unavailable right now." },
                Some(list) if list.is_empty() => p.muted { "No reviews yet." },
                Some(list) => ul {
                    @for review in list.iter() {
                        li { strong { (review.title) } " · " (review.rating) "/5 · " span.muted { (review.author_name) } p { (review.body) } }
                    }
                },
            }
            @if visitor.customer_name().is_some() && reviews.is_some() {
                form method="post" action={"/shop/products/" (product.id) "/reviews"} {
                    (form_token_field(&visitor.form_token))
                    h3 { "Review this product" }
                    div.field {
                        label for="review-rating" { "Rating" }
                        select #review-rating name="rating" {
                            @for stars in (1..=5).rev() { option value=(stars) { (stars) " out of 5" } }
                        }
                    }
                    div.field {
                        label for="review-title" { "Title" }
                        input #review-title name="title" type="text" maxlength="120" required;
                    }
                    div.field {
                        label for="review-body" { "Your review" }
                        textarea #review-body name="body" rows="4" maxlength="4000" {}
                    }
                    button type="submit" { "Post review" }
                }
            }
        }
        section aria-labelledby="recommendations-heading" #recommendations {
            h2 #recommendations-heading { "Bought together" }
            @match &recommendations {
                None => p.notice { "Recommendations are unavailable right now." },
                Some(list) if list.is_empty() => p.muted { "Nothing yet." },
                Some(list) => ul.grid {
                    @for other in list.iter() {
                        li.card { a href={"/shop/products/" (other.id)} { (other.title) } " " span.price { (money(Some(&comb_contracts::catalog::v1::Money { amount_minor: other.price.amount_minor, currency: other.price.currency.clone() }))) } }
                    }
                },
            }
        }
    };
    page(&state, &visitor, &product.title, body).await
}

#[derive(Debug, Deserialize)]
pub(super) struct ProductQuery {
    /// What became of a review just posted.
    review: Option<String>,
}

fn review_message(outcome: &str) -> Option<&'static str> {
    match outcome {
        "posted" => Some("Thank you: your review is posted."),
        "not-bought" => Some(
            "Only customers who bought this product can review it. If you just did, try again in a moment.",
        ),
        "duplicate" => Some("You have reviewed this product already."),
        "invalid" => {
            Some("A review needs a rating from 1 to 5 and a title of at most 120 characters.")
        }
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ReviewForm {
    #[serde(default)]
    rating: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

/// `POST /shop/products/{id}/reviews`: a customer's review of something they bought.
pub(super) async fn post_review(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ReviewForm>, FormRejection>,
) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    let visitor = visitor(&state, &headers).await;
    let Some(claims) = visitor
        .claims
        .clone()
        .filter(|_| visitor.customer_name().is_some())
    else {
        return see_other("/shop/login", None);
    };
    let form = form.map(|Form(form)| form).unwrap_or_default();
    let back = |outcome: &str| {
        see_other(
            &format!("/shop/products/{id}?review={outcome}#reviews"),
            None,
        )
    };
    let Ok(rating) = form.rating.trim().parse::<i32>() else {
        return back("invalid");
    };
    let posted =
        comb_contracts::reviews::v1::reviews_client::ReviewsClient::new(state.reviews.channel())
            .post_review(comb_contracts::reviews::v1::PostReviewRequest {
                author: claims.sub,
                author_name: claims.name.unwrap_or_default(),
                product_id: id.clone(),
                rating,
                title: form.title.trim().to_owned(),
                body: form.body.trim().to_owned(),
            })
            .await;
    state.watches.reviews.wrote();
    match posted {
        Ok(_) => back("posted"),
        Err(status) => match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition => back("not-bought"),
            tonic::Code::AlreadyExists => back("duplicate"),
            tonic::Code::InvalidArgument => back("invalid"),
            _ => unavailable(&state.reviews.problem(&status).detail),
        },
    }
}

/// `GET /shop/cart`.
pub(super) async fn cart(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
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
pub(super) struct AddToCart {
    product_id: String,
    quantity: Option<String>,
}

fn quantity(text: Option<&str>, allow_zero: bool) -> Option<i64> {
    let value: i64 = text.unwrap_or("1").trim().parse().ok()?;
    let least = if allow_zero { 0 } else { 1 };
    (least..=99).contains(&value).then_some(value)
}

/// `POST /shop/cart/items`.
pub(super) async fn add_to_cart(
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
pub(super) struct ChangeQuantity {
    quantity: Option<String>,
}

/// `POST /shop/cart/items/{product_id}`: a new quantity, 0 removing the line.
pub(super) async fn change_quantity(
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

/// What the checkout form holds, to show it again with messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CheckoutForm {
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

fn checkout_page(
    form_token: &str,
    form: &CheckoutForm,
    errors: &[(String, String)],
    notice: Option<&str>,
    quote: Option<&Quote>,
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
pub(super) struct CheckoutQuery {
    country: Option<String>,
}

/// The cost of shipping the visitor's cart to `country`, if shipping answers in time.
async fn quote(state: &GatewayState, visitor: &Visitor, country: &str) -> Option<Quote> {
    let shipping = state.shipping.as_ref()?;
    let items = cart_count(state, visitor).await.unwrap_or(1).max(1);
    let quoted = tokio::time::timeout(
        SIDE_DEADLINE,
        comb_contracts::shipping::v1::shipping_client::ShippingClient::new(shipping.channel())
            .quote(shipping::QuoteRequest {
                // The price depends on the country alone; the RPC checks a whole address,
                // which the shopper has not typed yet, so the rest stands in for it.
                address: Some(shipping::Address {
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
    Some(Quote {
        country: country.to_owned(),
        cost: money(quoted.cost.as_ref()),
        days: quoted.days,
    })
}

/// `GET /shop/checkout[?country=XX]`.
pub(super) async fn checkout_form(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Query(query): Query<CheckoutQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let country = query
        .country
        .filter(|code| COUNTRIES.iter().any(|(c, _)| c == code))
        .unwrap_or_else(|| "US".to_owned());
    let quote = quote(&state, &visitor, &country).await;
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
        checkout_page(&visitor.form_token, &form, &[], None, quote.as_ref()),
    )
    .await
}

/// `POST /shop/checkout`: places the order and shows it; a field at fault is marked.
pub(super) async fn checkout(
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
    require("email", &form.email, "your email address");
    require("name", &form.name, "the name to ship to");
    require("line1", &form.line1, "the street address");
    require("city", &form.city, "the city");
    require("postal_code", &form.postal_code, "the postal code");
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
        let page_body = checkout_page(&visitor.form_token, &form, &errors, None, None);
        let mut response = page(&state, &visitor, "Check out", page_body).await;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return response;
    }
    let placed = OrdersClient::new(state.orders.channel())
        .place_order(orders::PlaceOrderRequest {
            owner,
            idempotency_key: form.checkout_key.clone(),
            email: form.email.trim().to_owned(),
            shipping_address: Some(shipping::Address {
                name: form.name.trim().to_owned(),
                line1: form.line1.trim().to_owned(),
                line2: String::new(),
                city: form.city.trim().to_owned(),
                postal_code: form.postal_code.trim().to_owned(),
                country: form.country.trim().to_owned(),
            }),
            card: Some(payments::Card {
                number: form.card_number.replace([' ', '-'], ""),
                exp_month: month.unwrap_or_default(),
                exp_year: year.unwrap_or_default(),
                cvc: form.cvc.trim().to_owned(),
            }),
        })
        .await;
    match placed {
        Ok(order) => see_other(&format!("/shop/orders/{}", order.into_inner().id), None),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let errors: Vec<(String, String)> = comb_kit::grpc::field_errors(&status)
                .unwrap_or_default()
                .into_iter()
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
            let notice = errors.is_empty().then(|| status.message().to_owned());
            let page_body =
                checkout_page(&visitor.form_token, &form, &errors, notice.as_deref(), None);
            let mut response = page(&state, &visitor, "Check out", page_body).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            let page_body = checkout_page(
                &visitor.form_token,
                &form,
                &[],
                Some(&format!("{}.", capitalize(status.message()))),
                None,
            );
            let mut response = page(&state, &visitor, "Check out", page_body).await;
            *response.status_mut() = StatusCode::CONFLICT;
            response
        }
        Err(status) => unavailable(&state.orders.problem(&status).detail),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

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
pub(super) async fn order(
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
pub(super) async fn orders(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
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

#[derive(Debug, Default, Deserialize)]
pub(super) struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
}

fn account_form(
    form_token: &str,
    register: bool,
    form: &Credentials,
    errors: &[(String, String)],
    notice: Option<&str>,
) -> Markup {
    let (title, action, button) = if register {
        ("Create an account", "/shop/register", "Register")
    } else {
        ("Log in", "/shop/login", "Log in")
    };
    html! {
        h1 { (title) }
        @if let Some(notice) = notice {
            div.error-box role="alert" { p { (notice) } }
        }
        form method="post" action=(action) novalidate {
            (form_token_field(form_token))
            @if register {
                (field("name", "Name", &form.name, "text", "name", errors))
            }
            (field("email", "Email", &form.email, "email", "email", errors))
            (field("password", "Password", "", "password", if register { "new-password" } else { "current-password" }, errors))
            button type="submit" { (button) }
        }
        @if register {
            p { "Have an account? " a href="/shop/login" { "Log in" } }
        } @else {
            p { "New here? " a href="/shop/register" { "Create an account" } }
        }
    }
}

/// `GET /shop/login`.
pub(super) async fn login_form(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let visitor = visitor(&state, &headers).await;
    page(
        &state,
        &visitor,
        "Log in",
        account_form(
            &visitor.form_token,
            false,
            &Credentials::default(),
            &[],
            None,
        ),
    )
    .await
}

/// `GET /shop/register`.
pub(super) async fn register_form(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    page(
        &state,
        &visitor,
        "Register",
        account_form(
            &visitor.form_token,
            true,
            &Credentials::default(),
            &[],
            None,
        ),
    )
    .await
}

/// After signing in, a guest's cart becomes the customer's.
async fn merge_guest_cart(state: &GatewayState, guest: &Visitor, customer: &str) {
    let Some(claims) = &guest.claims else { return };
    if claims.role != comb_contracts::auth::Role::Guest {
        return;
    }
    let merged = CartClient::new(state.cart.channel())
        .merge(cart::MergeRequest {
            from_owner: claims.sub.clone(),
            to_owner: customer.to_owned(),
        })
        .await;
    if let Err(status) = merged {
        tracing::warn!(code = ?status.code(), "the guest cart could not be merged at sign-in");
    }
}

async fn signed_in(state: &GatewayState, before: &Visitor, session: users::Session) -> Response {
    let customer = session
        .user
        .as_ref()
        .map(|user| user.id.clone())
        .unwrap_or_default();
    merge_guest_cart(state, before, &customer).await;
    see_other("/", session_cookie(&session.token))
}

fn account_errors(status: &tonic::Status) -> (Vec<(String, String)>, Option<String>) {
    let errors: Vec<(String, String)> = comb_kit::grpc::field_errors(status)
        .unwrap_or_default()
        .into_iter()
        .map(|error| (error.field.clone(), capitalize(&error.message)))
        .collect();
    let notice = errors
        .is_empty()
        .then(|| format!("{}.", capitalize(status.message())));
    (errors, notice)
}

/// `POST /shop/login`.
pub(super) async fn login(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    sign_in(state, client, headers, form, false).await
}

/// `POST /shop/register`.
pub(super) async fn register(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    sign_in(state, client, headers, form, true).await
}

/// Logs in, or registers then logs in; a refusal shows the form again, marked.
async fn sign_in(
    state: GatewayState,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    form: Result<Form<Credentials>, FormRejection>,
    register: bool,
) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    let form = form.map(|Form(form)| form).unwrap_or_default();
    let (action, account) = if register {
        (crate::limits::Action::NewSession, None)
    } else {
        (crate::limits::Action::SignIn, Some(form.email.as_str()))
    };
    if let Err(problem) = state.limits.check(action, client.0, account) {
        let mut page = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            &format!("{}.", capitalize(&problem.detail)),
        );
        if let Some(after) = problem.retry_after {
            page.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(after.as_secs()),
            );
        }
        return page;
    }
    let before = visitor(&state, &headers).await;
    let mut users_client = UsersClient::new(state.users.channel());
    let result = if register {
        users_client
            .register(users::RegisterRequest {
                email: form.email.clone(),
                password: form.password.clone(),
                name: form.name.clone(),
            })
            .await
    } else {
        users_client
            .login(users::LoginRequest {
                email: form.email.clone(),
                password: form.password.clone(),
            })
            .await
    };
    let status = match result {
        Ok(session) => return signed_in(&state, &before, session.into_inner()).await,
        Err(status) => status,
    };
    let (errors, notice) = match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::AlreadyExists => account_errors(&status),
        tonic::Code::Unauthenticated | tonic::Code::NotFound if !register => (
            Vec::new(),
            Some(
                "That email and password do not match an account. Check them and try again."
                    .to_owned(),
            ),
        ),
        _ => return unavailable(&state.users.problem(&status).detail),
    };
    let body = account_form(
        &before.form_token,
        register,
        &form,
        &errors,
        notice.as_deref(),
    );
    let title = if register { "Register" } else { "Log in" };
    let mut response = page(&state, &before, title, body).await;
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}

/// `POST /shop/logout`: the session's token is revoked, not only forgotten by the browser.
pub(super) async fn logout(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    if let Some(refused) = foreign_post(&headers) {
        return refused;
    }
    if let Some(claims) = visitor(&state, &headers).await.claims
        && let Err(problem) = crate::accounts::end_session(&state, &claims).await
    {
        // Forgetting the cookie would only look like signing out while the token lives on.
        tracing::warn!(detail = %problem.detail, "a storefront sign-out could not revoke its token");
        return unavailable("Signing out could not be completed, so you are still signed in");
    }
    let mut response = see_other("/", None);
    response
        .headers_mut()
        .append(header::SET_COOKIE, cleared_session_cookie());
    response
}

/// `GET /shop/mailbox`: the messages sent to the visitor.
pub(super) async fn mailbox(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let visitor = visitor(&state, &headers).await;
    let messages = match visitor.owner() {
        None => Ok(Vec::new()),
        Some(owner) => NotificationsClient::new(state.notifications.channel())
            .list_messages(notifications::ListMessagesRequest {
                recipient: owner.to_owned(),
            })
            .await
            .map(|found| found.into_inner().items),
    };
    let body = html! {
        h1 { "Your mailbox" }
        @match &messages {
            Err(_) => p.notice { "Your mailbox is unavailable right now. Your messages are safe; try again in a moment." },
            Ok(list) if list.is_empty() => p { "No messages yet." },
            Ok(list) => ul {
                @for message in list {
                    li.card {
                        h2 { (message.subject) }
                        p.muted { (message.created_at) " · to " (message.email) }
                        pre.message { (message.body) }
                    }
                }
            },
        }
    };
    page(&state, &visitor, "Mailbox", body).await
}

/// `GET /shop/covers/{kind}.svg`: a plain cover per kind of product.
pub(super) async fn cover_image(Path(file): Path<String>) -> Response {
    let (label, color) = match file.as_str() {
        "book.svg" => ("BOOK", "#2846b8"),
        "music.svg" => ("MUSIC", "#1f7a3a"),
        "video.svg" => ("VIDEO", "#8a2b8f"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 400" role="img"><rect width="300" height="400" fill="{color}"/><text x="150" y="210" font-family="sans-serif" font-size="36" fill="#fff" text-anchor="middle">{label}</text></svg>"##
    );
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        svg,
    )
        .into_response()
}
