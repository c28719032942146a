//! The storefront's defences that sit in front of every page, in one layer:
//!
//! - **Form tokens.** Every visitor holds a random form token in a cookie; every form
//!   carries it back in a hidden field, and a post whose field does not match the cookie is
//!   refused (403) before any page code runs. This is in addition to the `Origin` check the
//!   handlers make, so a cross-site post fails even from a browser that sends no `Origin`.
//! - **Cookie scope.** When the visitor came over HTTPS (said by a trusted proxy, see
//!   [`crate::forwarded`]), comb's cookies are set as `__Host-` cookies with `Secure`, and
//!   only such cookies are read: a cookie planted over plain HTTP or by a sibling domain
//!   cannot stand in for them. Over plain HTTP the plain names are used.
//!
//! Page code never sees the difference: the layer presents the cookies under their plain
//! names and rewrites the ones the answer sets.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use maud::{Markup, html};

use super::{SESSION_COOKIE, SESSION_MAX_AGE_SECS, error_page};
use crate::GatewayState;

/// The cookie holding the visitor's form token.
pub(super) const FORM_TOKEN_COOKIE: &str = "comb_form";
/// The hidden field every form carries it back in.
pub(super) const FORM_TOKEN_FIELD: &str = "form_token";
/// The prefix browsers only accept with `Secure`, `Path=/` and no `Domain`.
const SECURE_PREFIX: &str = "__Host-";
/// The largest form the storefront reads (its biggest, checkout, is well under 4 KiB).
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The cookies this layer scopes.
const SCOPED: [&str; 2] = [SESSION_COOKIE, FORM_TOKEN_COOKIE];

/// The value of cookie `name` in a request's headers (after this layer, plain names).
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies(headers)
        .into_iter()
        .find(|(cookie, _)| cookie == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The hidden field that carries the visitor's form token back.
pub(super) fn form_token_field(token: &str) -> Markup {
    html! { input type="hidden" name=(FORM_TOKEN_FIELD) value=(token); }
}

/// The layer: scopes cookies to the scheme, gives a visitor without one a form token, and
/// refuses a post that does not carry it back.
pub(super) async fn guard(
    State(state): State<GatewayState>,
    request: Request,
    next: Next,
) -> Response {
    let https = state.proxies.https(
        crate::forwarded::peer(request.extensions()),
        request.headers(),
    );
    let (mut parts, body) = request.into_parts();
    scope_request_cookies(&mut parts.headers, https);
    let issued = match cookie(&parts.headers, FORM_TOKEN_COOKIE) {
        Some(_) => None,
        None => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            // This request is read as carrying the token its answer sets, so the page it
            // renders puts the same token in its forms.
            if let Ok(value) = HeaderValue::from_str(&format!("{FORM_TOKEN_COOKIE}={token}")) {
                parts.headers.append(header::COOKIE, value);
            }
            Some(token)
        }
    };
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "This form is too large",
                    "No form in the shop is this large. Go back and try again.",
                );
            }
        };
        let expected = cookie(&parts.headers, FORM_TOKEN_COOKIE).unwrap_or_default();
        let sent = form_field(&bytes, FORM_TOKEN_FIELD).unwrap_or_default();
        if issued.is_some() || !same(&sent, &expected) {
            return error_page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "For your safety, each form in the shop carries a token from the page it came from, and this one did not match. Go back, reload the page and send it again.",
            );
        }
        Body::from(bytes)
    } else {
        body
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    // Only a page hands out the token it embeds: a stylesheet or cover fetched alongside
    // a first page must not set a different one.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if let Some(token) = issued.filter(|_| is_page)
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{FORM_TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE_SECS}"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    if https {
        secure_response_cookies(response.headers_mut());
    }
    response
}

/// Over HTTPS only the `__Host-` cookies count, presented under their plain names; over
/// plain HTTP a `__Host-` cookie (which a browser would not send) is ignored.
fn scope_request_cookies(headers: &mut HeaderMap, https: bool) {
    let all = cookies(headers);
    let kept: Vec<String> = all
        .into_iter()
        .filter_map(|(name, value)| {
            let plain = name.strip_prefix(SECURE_PREFIX);
            match plain {
                Some(plain) if SCOPED.contains(&plain) => https.then(|| format!("{plain}={value}")),
                None if SCOPED.contains(&name.as_str()) => {
                    (!https).then(|| format!("{name}={value}"))
                }
                _ => Some(format!("{name}={value}")),
            }
        })
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// comb's cookies set by the answer become `__Host-` cookies with `Secure`.
fn secure_response_cookies(headers: &mut HeaderMap) {
    let set: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in set {
        let scoped = value.to_str().ok().and_then(|text| {
            let name = text.split('=').next()?;
            SCOPED
                .contains(&name)
                .then(|| format!("{SECURE_PREFIX}{text}; Secure"))
        });
        let value = scoped
            .and_then(|text| HeaderValue::from_str(&text).ok())
            .unwrap_or(value);
        headers.append(header::SET_COOKIE, value);
    }
}

/// The value of field `name` in a URL-encoded form body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.into_owned())
}

/// Equal, in a time that does not depend on where they differ.
fn same(sent: &str, expected: &str) -> bool {
    !expected.is_empty() && comb_kit::faults::same_secret(sent.as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_https_only_host_cookies_count_and_over_http_only_plain_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "comb_session=planted; __Host-comb_session=real; theme=dark; __Host-comb_form=f",
            ),
        );
        let mut secure = headers.clone();
        scope_request_cookies(&mut secure, true);
        assert_eq!(cookie(&secure, SESSION_COOKIE).as_deref(), Some("real"));
        assert_eq!(cookie(&secure, FORM_TOKEN_COOKIE).as_deref(), Some("f"));
        assert_eq!(cookie(&secure, "theme").as_deref(), Some("dark"));
        let mut plain = headers;
        scope_request_cookies(&mut plain, false);
        assert_eq!(cookie(&plain, SESSION_COOKIE).as_deref(), Some("planted"));
        assert_eq!(cookie(&plain, FORM_TOKEN_COOKIE), None);
    }

    #[test]
    fn answers_over_https_set_host_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("comb_session=t; Path=/; HttpOnly; SameSite=Lax"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("other=1"));
        secure_response_cookies(&mut headers);
        let set: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        assert_eq!(
            set,
            [
                "__Host-comb_session=t; Path=/; HttpOnly; SameSite=Lax; Secure",
                "other=1"
            ]
        );
    }

    #[test]
    fn form_tokens_must_match_exactly() {
        assert_eq!(
            form_field(b"a=1&form_token=abc%20d&b=2", FORM_TOKEN_FIELD).as_deref(),
            Some("abc d")
        );
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc"));
        assert!(!same("", ""));
        assert!(!same("abcd", "abc"));
    }
}
