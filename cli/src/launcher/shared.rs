//! The dashboard shared beyond this machine (`comb up --dashboard-address ADDR`): its
//! pages only (instances, traces, logs, mailbox; nothing that changes the system, no
//! discovery, no database URLs), on a listener of their own, and only with the dashboard's
//! token. The control API stays on loopback.
//!
//! The token comes in once, as `?token=` on a link, and is then kept in a cookie
//! (`HttpOnly`, `SameSite=Strict`) after a redirect that takes it out of the address;
//! scripts send `Authorization: Bearer TOKEN`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::control::Control;
use super::dashboard;

/// The cookie that keeps the token once presented.
const COOKIE: &str = "comb_dashboard";
/// Short tokens can be guessed by anyone who can reach the address.
pub const MIN_TOKEN_LEN: usize = 16;

/// The dashboard's second listener, bound before anything starts.
#[derive(Debug)]
pub struct SharedDashboard {
    listener: TcpListener,
    token: Arc<str>,
    pub url: String,
}

impl SharedDashboard {
    /// Binds `address`, refusing a token too short to keep anyone out. Every address needs
    /// the token, loopback too: whoever can reach the port sees traces and logs.
    pub async fn bind(address: SocketAddr, token: Option<&str>) -> anyhow::Result<Self> {
        let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
            bail!(
                "--dashboard-address {address} shares the dashboard with whoever can reach it: set a token with --dashboard-token or COMB_DASHBOARD_TOKEN"
            );
        };
        if token.len() < MIN_TOKEN_LEN {
            bail!(
                "the dashboard token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 16`)"
            );
        }
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot open the shared dashboard at {address}"))?;
        let bound = listener
            .local_addr()
            .context("cannot open the shared dashboard")?;
        Ok(Self {
            listener,
            token: token.into(),
            url: format!("http://{bound}"),
        })
    }

    /// Serves the dashboard's pages until `stop` resolves.
    pub fn serve(
        self,
        control: Control,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let app = dashboard::pages()
            .with_state(control)
            .layer(axum::middleware::from_fn_with_state(self.token, with_token));
        let server = comb_kit::server::Server::from_listener(self.listener)
            .context("cannot serve the shared dashboard")?;
        Ok(tokio::spawn(async move {
            let served = server
                .run(
                    app,
                    comb_kit::server::Readiness::default(),
                    stop,
                    std::time::Duration::from_secs(2),
                )
                .await;
            if let Err(error) = served {
                eprintln!("comb | the shared dashboard stopped: {error}");
            }
        }))
    }
}

/// Lets in a request carrying the token; takes a token from the address into a cookie.
async fn with_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if let Some(presented) = query_token(request.uri().query()) {
        if !same(&presented, &token) {
            return refused();
        }
        let mut response = (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, request.uri().path().to_owned())],
        )
            .into_response();
        if let Ok(cookie) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    if presented(request.headers()).is_some_and(|presented| same(&presented, &token)) {
        return next.run(request).await;
    }
    refused()
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CACHE_CONTROL, "no-store")],
        "this comb dashboard needs its token: open it with ?token=TOKEN once, or send Authorization: Bearer TOKEN\n",
    )
        .into_response()
}

/// The token of `?token=...`, if the address has one.
fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// The token a request carries in `Authorization` or in the cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())
    })
}

fn same(presented: &str, token: &str) -> bool {
    comb_kit::faults::same_secret(presented.as_bytes(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_address_the_header_or_the_cookie() {
        assert_eq!(
            query_token(Some("service=a&token=abc%2Fd")).as_deref(),
            Some("abc/d")
        );
        assert_eq!(query_token(Some("service=a")), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; comb_dashboard=secret"),
        );
        assert_eq!(presented(&headers).as_deref(), Some("secret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer from-header"),
        );
        assert_eq!(presented(&headers).as_deref(), Some("from-header"));
        assert!(same("secret", "secret"));
        assert!(!same("secreT", "secret"));
        assert!(!same("secre", "secret"));
    }

    #[tokio::test]
    async fn a_missing_or_short_token_is_refused_before_binding() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(SharedDashboard::bind(any, None).await.is_err());
        assert!(SharedDashboard::bind(any, Some("short")).await.is_err());
        assert!(
            SharedDashboard::bind(any, Some("0123456789abcdef"))
                .await
                .is_ok()
        );
    }
}
