//! The catalog's pages: the home page with its featured shelves, browsing by kind and
//! category, search, a product with its stock, reviews and what is bought with it, the
//! review form, and the covers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, extract::rejection::FormRejection};
use comb_contracts::catalog::v1 as catalog;
use maud::html;
use serde::Deserialize;

use crate::shop::browser::form_token_field;
use crate::shop::{
    Visitor, error_page, foreign_post, problem_page, see_other, unavailable, visitor,
};
use crate::{GatewayState, backend};

use super::{catalog_client, cover, kind_of, page, product_card};

/// `GET /`: featured books, music and video.
///
/// The featured shelves show catalog data alone, all of one catalog version, so they are
/// rendered once per version: while the catalog's version is the one they were rendered
/// at they are served as they are; else one conditional read tells whether they are
/// still current, and only a new version costs the other reads and the rendering.
pub(in crate::shop) async fn home(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
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
pub(in crate::shop) struct BrowseQuery {
    kind: Option<String>,
    category: Option<String>,
    cursor: Option<String>,
}

/// `GET /shop/browse`: one kind (and category), a page at a time.
pub(in crate::shop) async fn browse(
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
pub(in crate::shop) struct SearchQuery {
    q: Option<String>,
}

/// `GET /shop/search?q=`.
pub(in crate::shop) async fn search(
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
pub(in crate::shop) async fn product(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ProductQuery>,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let detail = match backend::catalog::product_detail(&state, id).await {
        Ok(detail) => detail,
        Err(problem) if matches!(problem.status, 404 | 422) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "We cannot find that product",
                "It may have been removed, or the link is wrong. Search for it, or browse the shelves.",
            );
        }
        Err(problem) => return problem_page(&problem),
    };
    let product = &detail.product;
    let stock = detail.stock.map(|stock| stock.available);
    let reviews = detail.reviews.as_ref();
    let recommendations = detail.recommendations.as_ref();
    let body = html! {
        article.product {
            (cover(product.kind.label(), &product.title))
            div {
                h1 { (product.title) }
                p.muted { (product.creators.join(", ")) " · " (product.kind.label()) " · " (product.category) }
                p.price { (product.price) }
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
            @match reviews {
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
            @match recommendations {
                None => p.notice { "Recommendations are unavailable right now." },
                Some(list) if list.is_empty() => p.muted { "Nothing yet." },
                Some(list) => ul.grid {
                    @for other in list.iter() {
                        li.card { a href={"/shop/products/" (other.id)} { (other.title) } " " span.price { (other.price) } }
                    }
                },
            }
        }
    };
    page(&state, &visitor, &product.title, body).await
}

#[derive(Debug, Deserialize)]
pub(in crate::shop) struct ProductQuery {
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
pub(in crate::shop) struct ReviewForm {
    #[serde(default)]
    rating: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

/// `POST /shop/products/{id}/reviews`: a customer's review of something they bought.
pub(in crate::shop) async fn post_review(
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

/// `GET /shop/covers/{kind}.svg`: a plain cover per kind of product.
pub(in crate::shop) async fn cover_image(Path(file): Path<String>) -> Response {
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
