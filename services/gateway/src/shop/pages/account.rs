//! Accounts: signing in and up (a guest's cart follows), signing out, and the mailbox.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::{Form, extract::rejection::FormRejection};
use maud::{Markup, html};
use serde::Deserialize;

use crate::backend::accounts::Session;
use crate::shop::browser::form_token_field;
use crate::shop::{
    Visitor, cleared_session_cookie, error_page, foreign_post, problem_page, see_other,
    session_cookie, unavailable, visitor,
};
use crate::{GatewayState, backend};

use super::{capitalize, field, page};

#[derive(Debug, Default, Deserialize)]
pub(in crate::shop) struct Credentials {
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
pub(in crate::shop) async fn login_form(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    empty_form(&state, &headers, false).await
}

/// `GET /shop/register`.
pub(in crate::shop) async fn register_form(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    empty_form(&state, &headers, true).await
}

/// The log-in or registration form, not yet filled in.
async fn empty_form(state: &GatewayState, headers: &HeaderMap, register: bool) -> Response {
    let visitor = visitor(state, headers).await;
    let title = if register { "Register" } else { "Log in" };
    let form = account_form(
        &visitor.form_token,
        register,
        &Credentials::default(),
        &[],
        None,
    );
    page(state, &visitor, title, form).await
}

/// After signing in, a guest's cart becomes the customer's.
async fn merge_guest_cart(state: &GatewayState, guest: &Visitor, customer: &str) {
    let Some(claims) = &guest.claims else { return };
    if claims.role != comb_contracts::auth::Role::Guest {
        return;
    }
    crate::backend::cart::merge_guest_cart(state, &claims.sub, customer).await;
}

async fn signed_in(state: &GatewayState, before: &Visitor, session: Session) -> Response {
    merge_guest_cart(state, before, &session.user.id).await;
    see_other("/", session_cookie(&session.token))
}

fn account_errors(problem: &comb_kit::Problem) -> (Vec<(String, String)>, Option<String>) {
    let errors: Vec<(String, String)> = problem
        .errors
        .iter()
        .map(|error| (error.field.clone(), capitalize(&error.message)))
        .collect();
    let notice = errors
        .is_empty()
        .then(|| format!("{}.", capitalize(&problem.detail)));
    (errors, notice)
}

/// `POST /shop/login`.
pub(in crate::shop) async fn login(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    sign_in(state, client, headers, form, false).await
}

/// `POST /shop/register`.
pub(in crate::shop) async fn register(
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
    let result = if register {
        let (email, password, name) =
            (form.email.clone(), form.password.clone(), form.name.clone());
        backend::accounts::register(&state, email, password, name).await
    } else {
        backend::accounts::login(&state, form.email.clone(), form.password.clone()).await
    };
    let problem = match result {
        Ok(session) => return signed_in(&state, &before, session).await,
        Err(problem) => problem,
    };
    let (errors, notice) = match problem.status {
        422 | 409 => account_errors(&problem),
        401 | 404 if !register => (
            Vec::new(),
            Some(
                "That email and password do not match an account. Check them and try again."
                    .to_owned(),
            ),
        ),
        _ => return problem_page(&problem),
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
pub(in crate::shop) async fn logout(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
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
pub(in crate::shop) async fn mailbox(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor(&state, &headers).await;
    let messages = match visitor.owner() {
        None => Ok(Vec::new()),
        Some(owner) => crate::backend::messages::mailbox(&state, owner)
            .await
            .map(|found| found.items),
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
