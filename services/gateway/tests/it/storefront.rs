//! The storefront as a browser meets it: security headers on every page, a checkout page
//! shown again that never carries the card, and one order per checkout form however often
//! it is submitted.

use reqwest::header::{self, HeaderMap};

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
    let browser = browser();
    let added = browser
        .post(system.url("/shop/cart/items"))
        .header(header::CONTENT_TYPE, FORM)
        .body(form(&[("product_id", id.as_str()), ("quantity", "1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 303);
    let cookie = added.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let form_page = browser
        .get(system.url("/shop/checkout"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = hidden(&form_page, "checkout_key");
    let mut fields = vec![
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
    let again = browser
        .post(system.url("/shop/checkout"))
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, FORM)
        .body(form(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 422, "the name is missing");
    let page = again.text().await.unwrap();
    for secret in ["4000 0566 5566 5556", "4000056655665556", "value=\"987\""] {
        assert!(!page.contains(secret), "{secret:?} shown again: {page}");
    }
    assert!(page.contains("ending 5556"), "{page}");
    assert_eq!(hidden(&page, "checkout_key"), key, "the same form goes on");

    fields[2] = ("name", "Ada Lovelace");
    fields[7] = ("card_number", "4242 4242 4242 4242");
    let mut placed = Vec::new();
    for _ in 0..2 {
        let response = browser
            .post(system.url("/shop/checkout"))
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, FORM)
            .body(form(&fields))
            .send()
            .await
            .unwrap();
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
