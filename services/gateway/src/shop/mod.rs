//! The storefront: the pages a person shops with, rendered on the server from the same
//! services the REST API calls. Every page works without JavaScript (links and forms);
//! assets are served from here, so nothing comes from a CDN.
//!
//! A visitor is known by a session cookie holding their token (a guest's until they sign
//! in). Forms post back to the page's own path and answer with a redirect (303), so a
//! reload never repeats a purchase. The cookie is `HttpOnly` and `SameSite=Lax` (and a
//! `Secure` `__Host-` cookie over HTTPS); every form post must come from this site
//! (`Origin` checked) and carry the visitor's form token ([`browser`]), so another site
//! cannot post for a visitor.

mod browser;
mod pages;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use comb_contracts::auth::Claims;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::GatewayState;

/// The cookie carrying the visitor's token.
pub const SESSION_COOKIE: &str = "comb_session";
/// A week, as long as a guest token lives.
pub(crate) const SESSION_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// The storefront's routes.
pub fn routes(state: GatewayState) -> Router {
    Router::new()
        .route("/", get(pages::catalog::home))
        .route("/shop/browse", get(pages::catalog::browse))
        .route("/shop/search", get(pages::catalog::search))
        .route("/shop/products/{id}", get(pages::catalog::product))
        .route(
            "/shop/products/{id}/reviews",
            post(pages::catalog::post_review),
        )
        .route("/shop/cart", get(pages::cart::cart))
        .route("/shop/cart/items", post(pages::cart::add_to_cart))
        .route(
            "/shop/cart/items/{product_id}",
            post(pages::cart::change_quantity),
        )
        .route(
            "/shop/checkout",
            get(pages::checkout::checkout_form).post(pages::checkout::checkout),
        )
        .route("/shop/orders", get(pages::orders::orders))
        .route("/shop/orders/{id}", get(pages::orders::order))
        .route(
            "/shop/login",
            get(pages::account::login_form).post(pages::account::login),
        )
        .route(
            "/shop/register",
            get(pages::account::register_form).post(pages::account::register),
        )
        .route("/shop/logout", post(pages::account::logout))
        .route("/shop/mailbox", get(pages::account::mailbox))
        .route("/shop/assets/shop.css", get(stylesheet))
        .route("/shop/covers/{file}", get(pages::catalog::cover_image))
        // Unknown shop addresses get a page a person can read, not the API's problem+json.
        .route("/shop", get(no_such_page))
        .route("/shop/{*rest}", get(no_such_page))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ))
        .with_state(state)
}

async fn no_such_page() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "There is no such page",
        "The address may be mistyped, or the page has moved. Try the search box or browse from the home page.",
    )
}

/// Who is looking: their verified token, if they have one, and the form token their
/// forms carry.
#[derive(Debug, Clone, Default)]
pub struct Visitor {
    pub token: Option<String>,
    pub claims: Option<Claims>,
    pub form_token: String,
}

impl Visitor {
    /// Signed in with an account (not a guest).
    pub fn customer_name(&self) -> Option<String> {
        let claims = self.claims.as_ref()?;
        (claims.role != comb_contracts::auth::Role::Guest).then(|| {
            claims
                .name
                .clone()
                .or_else(|| claims.email.clone())
                .unwrap_or_else(|| "you".to_owned())
        })
    }

    pub fn owner(&self) -> Option<&str> {
        self.claims.as_ref().map(|claims| claims.sub.as_str())
    }
}

/// The session token in a request's cookies.
fn session_token(headers: &HeaderMap) -> Option<String> {
    browser::cookie(headers, SESSION_COOKIE)
}

/// The visitor of a request; an expired, forged or revoked cookie counts as none.
pub async fn visitor(state: &GatewayState, headers: &HeaderMap) -> Visitor {
    let form_token = browser::cookie(headers, browser::FORM_TOKEN_COOKIE).unwrap_or_default();
    let Some(token) = session_token(headers) else {
        return Visitor {
            form_token,
            ..Visitor::default()
        };
    };
    match state.verifier.verify(&token).await {
        Ok(claims) => Visitor {
            token: Some(token),
            claims: Some(claims),
            form_token,
        },
        Err(_) => Visitor {
            form_token,
            ..Visitor::default()
        },
    }
}

/// The visitor, made a guest if they were nobody yet; with the cookie to set if so.
pub async fn shopper(
    state: &GatewayState,
    visitor: Visitor,
) -> Result<(Visitor, Option<HeaderValue>), Box<Response>> {
    if visitor.claims.is_some() {
        return Ok((visitor, None));
    }
    let guest = crate::backend::accounts::guest(state)
        .await
        .map_err(|problem| Box::new(problem_page(&problem)))?;
    let claims = state
        .verifier
        .verify(&guest.token)
        .await
        .map_err(|problem| Box::new(unavailable(&problem.detail)))?;
    let cookie = session_cookie(&guest.token);
    Ok((
        Visitor {
            token: Some(guest.token),
            claims: Some(claims),
            form_token: visitor.form_token,
        },
        cookie,
    ))
}

pub fn session_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE_SECS}"
    ))
    .ok()
}

pub fn cleared_session_cookie() -> HeaderValue {
    HeaderValue::from_static("comb_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The refusal of a form post from another site (browsers send `Origin` with every
/// post); `None` when the post came from here.
pub fn foreign_post(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    (origin == "null" || origin_host != host).then(|| {
        error_page(
            StatusCode::FORBIDDEN,
            "This form came from somewhere else",
            "For your safety, comb only takes forms sent from its own pages. Go back to the shop and try again.",
        )
    })
}

/// A redirect after a form post (303: the browser follows with a GET).
pub fn see_other(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut response = Redirect::to(to).into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The page frame: header with search, navigation and the visitor's links.
pub fn layout(title: &str, visitor: &Visitor, cart_count: Option<i64>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · comb" }
                link rel="stylesheet" href="/shop/assets/shop.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "comb" }
                    nav aria-label="Shop sections" {
                        a href="/shop/browse?kind=book" { "Books" }
                        a href="/shop/browse?kind=music" { "Music" }
                        a href="/shop/browse?kind=video" { "Video" }
                    }
                    form.search role="search" method="get" action="/shop/search" {
                        label.visually-hidden for="site-search" { "Search the shop" }
                        input #site-search type="search" name="q" placeholder="Search books, music, video";
                        button type="submit" { "Search" }
                    }
                    nav.account aria-label="Your account" {
                        a href="/shop/cart" {
                            "Cart"
                            @if let Some(count) = cart_count.filter(|count| *count > 0) {
                                " (" (count) ")"
                            }
                        }
                        a href="/shop/orders" { "Orders" }
                        a href="/shop/mailbox" { "Mailbox" }
                        @if let Some(name) = visitor.customer_name() {
                            span.who { "Hello, " (name) }
                            form.inline method="post" action="/shop/logout" {
                                (browser::form_token_field(&visitor.form_token))
                                button type="submit" { "Log out" }
                            }
                        } @else {
                            a href="/shop/login" { "Log in" }
                            a href="/shop/register" { "Register" }
                        }
                    }
                }
                main #main { (body) }
                footer { p { "comb is a demonstration store: nothing is shipped and no card is charged. Test card 4242 4242 4242 4242 succeeds; 4000 0000 0000 0002 is declined." } }
            }
        }
    }
}

/// A friendly error page.
pub fn error_page(status: StatusCode, title: &str, advice: &str) -> Response {
    let page = layout(
        title,
        &Visitor::default(),
        None,
        html! {
            h1 { (title) }
            p { (advice) }
            p { a href="/" { "Back to the shop" } }
        },
    );
    (status, axum::response::Html(page.into_string())).into_response()
}

/// The page for a problem a page cannot do anything about: the service it needs is down
/// (503), or answered with something the shop cannot show (502).
pub fn problem_page(problem: &comb_kit::Problem) -> Response {
    if problem.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
        return unavailable(&problem.detail);
    }
    error_page(
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY),
        "Something went wrong on our side",
        &format!("{}. Please try again in a moment.", problem.detail),
    )
}

/// The page to show when a service the page needs is down.
pub fn unavailable(detail: &str) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "This part of the shop is unavailable right now",
        &format!("{detail}. Please try again in a moment."),
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        PreEscaped(STYLESHEET).into_string(),
    )
        .into_response()
}

const STYLESHEET: &str = r#"
:root { --ink:#1b1f2a; --muted:#545b6b; --line:#d9dde5; --bg:#fbfbfc; --accent:#2846b8; --ok:#1f7a3a; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:var(--bg); }
a { color:var(--accent); }
a:focus, button:focus, input:focus, select:focus { outline:3px solid #f0b400; outline-offset:2px; }
.skip { position:absolute; left:-999px; } .skip:focus { left:8px; top:8px; background:#fff; padding:4px 8px; }
.visually-hidden { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); }
header.top { display:flex; flex-wrap:wrap; gap:16px; align-items:center; padding:12px 20px; background:#fff; border-bottom:1px solid var(--line); }
.brand { font-weight:700; font-size:22px; text-decoration:none; color:var(--ink); }
header nav { display:flex; gap:14px; }
form.search { display:flex; gap:6px; flex:1; min-width:220px; }
form.search input { flex:1; }
input, select, button, textarea { font:inherit; padding:6px 10px; border:1px solid #8a91a0; border-radius:4px; }
button, .button { background:var(--accent); color:#fff; border-color:var(--accent); cursor:pointer; text-decoration:none; display:inline-block; }
button.secondary { background:#fff; color:var(--accent); }
form.inline { display:inline; }
main { max-width:1100px; margin:0 auto; padding:20px; }
footer { color:var(--muted); font-size:14px; padding:20px; text-align:center; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(200px, 1fr)); gap:16px; padding:0; list-style:none; }
.card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:12px; }
.card img, .cover { width:100%; height:auto; aspect-ratio:3/4; object-fit:cover; border-radius:4px; background:#e8ebf2; }
.preview { margin:1rem 0; } .preview audio, .preview video { width:100%; max-width:480px; height:auto; }
.price { font-weight:700; }
.muted { color:var(--muted); }
.ok { color:var(--ok); } .bad { color:var(--bad); }
.notice { border-left:4px solid var(--muted); background:#fff; padding:8px 12px; }
.error-box { border-left:4px solid var(--bad); background:#fff3f2; padding:8px 12px; }
.field { margin:10px 0; } .field label { display:block; font-weight:600; }
.field .message { color:var(--bad); font-size:14px; }
input[aria-invalid="true"] { border-color:var(--bad); border-width:2px; }
table { border-collapse:collapse; width:100%; background:#fff; }
th, td { text-align:left; padding:8px; border-bottom:1px solid var(--line); }
pre.message { white-space:pre-wrap; font:inherit; }
.product { display:grid; grid-template-columns:minmax(180px, 300px) 1fr; gap:24px; }
@media (max-width: 640px) { .product { grid-template-columns:1fr; } header.top { gap:8px; } }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_comes_from_its_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; comb_session=abc.def; other=1"),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("abc.def"));
        headers.insert(header::COOKIE, HeaderValue::from_static("comb_session="));
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(
            foreign_post(&headers).is_none(),
            "no Origin: a same-site form"
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(foreign_post(&headers).is_none());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(foreign_post(&headers).is_some());
    }
}
