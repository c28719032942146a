//! Who the client is when requests come through proxies. `X-Forwarded-For` and
//! `X-Forwarded-Proto` are believed only from the proxies the `trusted_proxies` setting
//! names (addresses or CIDR ranges, comma-separated; none by default). From anyone else
//! they are ignored, so a client can neither claim another address to escape its rate
//! limits nor claim HTTPS.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::GatewayState;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1` (an address alone is a range of one).
    pub fn parse(text: &str) -> Result<Self, String> {
        let nets = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// The setting `trusted_proxies` (`COMB_TRUSTED_PROXIES`).
    pub fn from_config(config: &comb_kit::ServiceConfig) -> anyhow::Result<Self> {
        match config.setting("trusted_proxies") {
            None => Ok(Self::default()),
            Some(text) => Self::parse(text).map_err(|message| {
                anyhow::anyhow!(
                    "setting trusted_proxies (COMB_TRUSTED_PROXIES): {message}; give addresses or CIDR ranges separated by commas"
                )
            }),
        }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    /// address in `X-Forwarded-For` that is not one (read from the right, as each proxy
    /// appends the address it heard from).
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.into_iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else {
                // Garbage from a client the proxy relayed: the last address known stands.
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        Some(client)
    }

    /// Whether the request reached the first proxy over HTTPS: only a trusted proxy can
    /// say so (`X-Forwarded-Proto: https`); the gateway itself serves plain HTTP.
    pub fn https(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        peer.is_some_and(|peer| self.trusts(peer))
            && headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// The peer address of a request's connection, when the server recorded it.
pub fn peer(parts_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// The client's address as far as the gateway can tell (see [`TrustedProxies::client`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<GatewayState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            state
                .proxies
                .client(peer(&parts.extensions), &parts.headers),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, axum::http::HeaderValue::from_static(value));
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let proxies = TrustedProxies::default();
        let claims = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &claims),
            ip("203.0.113.9")
        );
        assert!(!proxies.https(ip("203.0.113.9"), &claims));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_scheme() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap_or_default();
        let relayed = headers(&[
            // The client claimed 1.2.3.4 itself; the outer proxy heard 198.51.100.1.
            ("x-forwarded-for", "1.2.3.4, 198.51.100.1"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &relayed),
            ip("198.51.100.1")
        );
        assert!(proxies.https(ip("10.9.9.9"), &relayed));
        let plain = headers(&[("x-forwarded-proto", "http")]);
        assert!(!proxies.https(ip("127.0.0.1"), &plain));
        assert_eq!(proxies.client(ip("127.0.0.1"), &plain), ip("127.0.0.1"));
        let garbage = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &garbage), ip("127.0.0.1"));
    }

    #[test]
    fn a_setting_that_is_not_addresses_is_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/8, proxy.local").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }
}
