//! The storefront as a browser meets it: security headers on every page, a checkout page
//! shown again that never carries the card, one order per checkout form however often it
//! is submitted, form tokens, cookies scoped to the scheme, and a sign-out that ends the
//! session.

use std::collections::BTreeMap;

use reqwest::header::{self, HeaderMap};
use serde_json::json;

use crate::System;
use crate::checkout::products;

const FORM: &str = "application/x-www-form-urlencoded";

/// Fields as a browser posts a form.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(byte).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn assert_browser_security(headers: &HeaderMap, what: &str) {
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp}"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin", "{what}");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
}

/// A browser that keeps cookies and sends forms as the pages it has seen set them up.
struct Visit {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Visit {
    fn new(base: String) -> Self {
        Self {
            http: browser(),
            base,
            cookies: BTreeMap::new(),
        }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for set in response.headers().get_all(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The page at `path`, as text.
    async fn page(&mut self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        self.keep(&response);
        response.text().await.unwrap()
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, FORM)
            .body(form(fields))
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }
}

/// The value of the hidden `name` input of a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_carry_security_headers_and_personal_ones_are_not_stored() {
    let system = System::start().await;
    let (id, _) = products(&system, 1).await.remove(0);
    let browser = browser();
    for path in [
        "/",
        "/shop/browse?kind=book",
        &format!("/shop/products/{id}"),
        "/shop/cart",
    ] {
        let page = browser.get(system.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        assert_browser_security(page.headers(), path);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store", "{path}");
    }
    let stylesheet = browser
        .get(system.url("/shop/assets/shop.css"))
        .send()
        .await
        .unwrap();
    assert!(
        !stylesheet.headers().contains_key(header::SET_COOKIE),
        "an asset sets no form token: it would race the page's"
    );
    assert!(
        stylesheet.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .starts_with("public"),
        "shared assets stay cacheable"
    );
    let api = browser
        .get(system.url("/api/v1/products?limit=1"))
        .send()
        .await
        .unwrap();
    assert_browser_security(api.headers(), "the API");
}

#[tokio::test]
async fn a_checkout_page_shown_again_has_no_card_and_a_form_places_one_order() {
    let system = System::start().await;
    let (id, _) = products(&system, 1).await.remove(0);
    let mut visit = Visit::new(system.url(""));
    let product_page = visit.page(&format!("/shop/products/{id}")).await;
    let token = hidden(&product_page, "form_token");
    let added = visit
        .post(
            "/shop/cart/items",
            &[
                ("form_token", token.as_str()),
                ("product_id", id.as_str()),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_eq!(added.status(), 303);
    let form_page = visit.page("/shop/checkout").await;
    assert_eq!(
        hidden(&form_page, "form_token"),
        token,
        "one token per visitor"
    );
    let key = hidden(&form_page, "checkout_key");
    let mut fields = vec![
        ("form_token", token.as_str()),
        ("checkout_key", key.as_str()),
        ("email", "shopper@example.com"),
        ("name", ""),
        ("line1", "1 Engine Way"),
        ("city", "London"),
        ("postal_code", "N1 9GU"),
        ("country", "GB"),
        ("card_number", "4000 0566 5566 5556"),
        ("exp_month", "12"),
        ("exp_year", "2099"),
        ("cvc", "987"),
    ];
    let again = visit.post("/shop/checkout", &fields).await;
    assert_eq!(again.status(), 422, "the name is missing");
    let page = again.text().await.unwrap();
    for secret in ["4000 0566 5566 5556", "4000056655665556", "value=\"987\""] {
        assert!(!page.contains(secret), "{secret:?} shown again: {page}");
    }
    assert!(page.contains("ending 5556"), "{page}");
    assert_eq!(hidden(&page, "checkout_key"), key, "the same form goes on");

    fields[3] = ("name", "Ada Lovelace");
    fields[8] = ("card_number", "4242 4242 4242 4242");
    let mut placed = Vec::new();
    for _ in 0..2 {
        let response = visit.post("/shop/checkout", &fields).await;
        assert_eq!(response.status(), 303);
        placed.push(
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(placed[0].starts_with("/shop/orders/"), "{placed:?}");
    assert_eq!(placed[0], placed[1], "one order for one form");
}

#[tokio::test]
async fn a_form_post_without_the_visitors_form_token_is_refused() {
    let system = System::start().await;
    let (id, _) = products(&system, 1).await.remove(0);
    let mut visit = Visit::new(system.url(""));
    let page = visit.page(&format!("/shop/products/{id}")).await;
    let token = hidden(&page, "form_token");
    assert_eq!(token.len(), 32, "a random token: {token}");
    let add = |token: &'static str| [("form_token", token), ("quantity", "1")];
    for (what, fields) in [
        ("no token", &add("")[1..]),
        (
            "a wrong token",
            &add("0123456789abcdef0123456789abcdef")[..],
        ),
    ] {
        let mut fields = fields.to_vec();
        fields.push(("product_id", id.as_str()));
        let refused = visit.post("/shop/cart/items", &fields).await;
        assert_eq!(refused.status(), 403, "{what}");
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("This form has expired"),
            "{what}"
        );
    }
    // A browser that never loaded a page has no token to send back.
    let mut stranger = Visit::new(system.url(""));
    let refused = stranger
        .post(
            "/shop/cart/items",
            &[
                ("form_token", token.as_str()),
                ("product_id", id.as_str()),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 403, "a token without its cookie");
    let accepted = visit
        .post(
            "/shop/cart/items",
            &[
                ("form_token", token.as_str()),
                ("product_id", id.as_str()),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_eq!(accepted.status(), 303);
}

#[tokio::test]
async fn cookies_are_host_only_and_secure_when_a_trusted_proxy_says_https() {
    let system = System::start().await;
    let behind_proxy = crate::gateway_with(
        &system.upstreams(),
        2_000,
        &[("COMB_TRUSTED_PROXIES", "127.0.0.1/32".to_owned())],
    )
    .await;
    let set_cookies = |response: &reqwest::Response| -> Vec<String> {
        response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    };
    let get = |base: String, proto: Option<&'static str>| async move {
        let mut request = browser().get(format!("{base}/shop/login"));
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        request.send().await.unwrap()
    };
    let https = get(behind_proxy.url(), Some("https")).await;
    let cookies = set_cookies(&https);
    assert!(
        !cookies.is_empty()
            && cookies
                .iter()
                .all(|cookie| cookie.starts_with("__Host-comb_")
                    && cookie.contains("; Secure")
                    && cookie.contains("Path=/")
                    && !cookie.contains("Domain")),
        "{cookies:?}"
    );
    let http = get(behind_proxy.url(), Some("http")).await;
    let cookies = set_cookies(&http);
    assert!(
        cookies
            .iter()
            .all(|cookie| cookie.starts_with("comb_") && !cookie.contains("Secure")),
        "{cookies:?}"
    );
    // Nobody is trusted by default: a client claiming HTTPS gets plain cookies.
    let claimed = get(system.url(""), Some("https")).await;
    let cookies = set_cookies(&claimed);
    assert!(
        cookies
            .iter()
            .all(|cookie| cookie.starts_with("comb_") && !cookie.contains("Secure")),
        "{cookies:?}"
    );

    // Over HTTPS a plain cookie (planted over HTTP or by a sibling site) does not count.
    let page = https.text().await.unwrap();
    let token = hidden(&page, "form_token");
    let posted = browser()
        .post(format!("{}/shop/login", behind_proxy.url()))
        .header("x-forwarded-proto", "https")
        .header(header::COOKIE, format!("comb_form={token}"))
        .header(header::CONTENT_TYPE, FORM)
        .body(form(&[
            ("form_token", token.as_str()),
            ("email", "a@example.com"),
            ("password", "x"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 403);
}

#[tokio::test]
async fn signing_out_of_the_storefront_ends_the_session_everywhere() {
    let system = System::start().await;
    let registered = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": "shopper@example.com", "password": "a long enough secret", "name": "Shopper"}),
        )
        .await;
    assert_eq!(registered.status(), 201);
    let mut visit = Visit::new(system.url(""));
    let login_page = visit.page("/shop/login").await;
    let token = hidden(&login_page, "form_token");
    let signed_in = visit
        .post(
            "/shop/login",
            &[
                ("form_token", token.as_str()),
                ("email", "shopper@example.com"),
                ("password", "a long enough secret"),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    let session = visit.cookies["comb_session"].clone();
    let me = |session: String| {
        let http = system.http.clone();
        let url = system.url("/api/v1/me");
        async move {
            http.get(url)
                .bearer_auth(session)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(session.clone()).await, 200);
    let home = visit.page("/").await;
    assert!(home.contains("Log out"), "{home}");
    let signed_out = visit
        .post("/shop/logout", &[("form_token", token.as_str())])
        .await;
    assert_eq!(signed_out.status(), 303);
    assert!(
        !visit.cookies.contains_key("comb_session"),
        "the cookie is cleared"
    );
    assert_eq!(me(session).await, 401, "the token itself is revoked");
}
