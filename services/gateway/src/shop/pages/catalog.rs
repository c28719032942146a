//! The catalog's pages: the home page with its featured shelves, browsing by kind and
//! category, search, a product with its stock, reviews and what is bought with it, the
//! review form, and the covers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, extract::rejection::FormRejection};
use maud::html;
use serde::Deserialize;

use crate::shop::browser::form_token_field;
use crate::shop::{Visitor, error_page, foreign_post, problem_page, see_other, visitor};
use crate::{GatewayState, backend};

use super::{cover, page, preview_player, product_card};
use crate::backend::catalog::{Listing, Read};
use crate::catalog::{ProductKind, malformed};

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
        ("Books", ProductKind::Book),
        ("Music", ProductKind::Music),
        ("Video", ProductKind::Video),
    ];
    let mut sections = Vec::new();
    let mut version = 0;
    for (index, (name, kind)) in kinds.into_iter().enumerate() {
        // One conditional read tells whether the shelves held are still current.
        let if_version = match (index, &held) {
            (0, Some(held)) => held.version,
            _ => 0,
        };
        let listing = Listing {
            kind: Some(kind),
            limit: 4,
            ..Listing::default()
        };
        match backend::catalog::list(&state, listing, if_version).await {
            Ok(Read::Changed {
                version: read_at,
                answer,
            }) => {
                if index == 0 {
                    version = read_at;
                }
                sections.push((name, kind, answer.items));
            }
            Ok(Read::Unchanged) => {
                let Some(held) = &held else {
                    return problem_page(&malformed("shelves not modified that were never held"));
                };
                let shelves = String::from_utf8_lossy(&held.body).into_owned();
                return page_html(&state, &visitor, "Welcome", maud::PreEscaped(shelves)).await;
            }
            Err(problem) => return problem_page(&problem),
        }
    }
    let body = html! {
        h1 { "Books, music and video" }
        p.muted { "Browse the shelves, search, and check out with a test card." }
        @for (name, kind, products) in &sections {
            section aria-labelledby={"featured-" (kind.as_str())} {
                h2 #{"featured-" (kind.as_str())} { (name) }
                ul.grid { @for product in products { (product_card(product)) } }
                p { a href={"/shop/browse?kind=" (kind.as_str())} { "All " (name.to_ascii_lowercase()) } }
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
    let kind = ProductKind::parse(&kind_name);
    let listing = Listing {
        kind,
        category: query.category.clone().unwrap_or_default(),
        limit: 24,
        cursor: query.cursor.clone().unwrap_or_default(),
    };
    let found = match backend::catalog::list(&state, listing, 0)
        .await
        .map(Read::changed)
    {
        Ok(Some(found)) => found,
        Ok(None) => return problem_page(&malformed("a plain read answered not modified")),
        Err(problem) if problem.status == 422 => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "That page does not exist",
                "The link you followed is not one of ours. Start again from the shop's front page.",
            );
        }
        Err(problem) => return problem_page(&problem),
    };
    // The category links are a convenience: the page does without them.
    let categories = backend::catalog::categories(&state, 0)
        .await
        .ok()
        .and_then(Read::changed)
        .map(|found| found.items)
        .unwrap_or_default();
    let heading = match kind {
        Some(ProductKind::Book) => "Books",
        Some(ProductKind::Music) => "Music",
        Some(ProductKind::Video) => "Video",
        None => "Everything",
    };
    let body = html! {
        h1 { (heading) }
        nav aria-label="Categories" {
            ul.inline-list {
                @for category in categories.iter().filter(|c| kind.is_none_or(|k| c.kind == k)) {
                    li { a href={"/shop/browse?kind=" (kind_name) "&category=" (category.slug)} { (category.name) " (" (category.product_count) ")" } }
                }
            }
        }
        @if found.items.is_empty() {
            p { "Nothing here yet." }
        }
        ul.grid { @for product in &found.items { (product_card(product)) } }
        @if let Some(cursor) = &found.next_cursor {
            p { a href={"/shop/browse?kind=" (kind_name) "&category=" (query.category.clone().unwrap_or_default()) "&cursor=" (cursor)} { "More" } }
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
    let found = match backend::catalog::search(&state, words.clone(), 24, 0)
        .await
        .map(Read::changed)
    {
        Ok(Some(found)) => found.items,
        Ok(None) => return problem_page(&malformed("a plain read answered not modified")),
        Err(problem) => return problem_page(&problem),
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
            (cover(product, "(max-width: 600px) 90vw, 320px"))
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
                @if let Some(player) = preview_player(product) {
                    (player)
                }
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
    let review = crate::reviews::ReviewInput {
        rating,
        title: form.title.trim().to_owned(),
        body: form.body.trim().to_owned(),
    };
    match backend::reviews::post(&state, claims, id.clone(), review).await {
        Ok(_) => back("posted"),
        Err(problem) => match problem.status {
            403 => back("not-bought"),
            409 => back("duplicate"),
            422 => back("invalid"),
            _ => problem_page(&problem),
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
