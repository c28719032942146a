//! Who is calling: tokens are verified here, at the edge, with the users service's public
//! keys, cached. Users is asked for keys only when a token names a key not seen yet, so it
//! is not called on every request and a known token still verifies while it is down.

use comb_kit::grpc::Answer;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_kit::Problem;
use comb_kit::grpc::Upstream;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::GatewayState;
use crate::sessions::Revocations;

/// The least time between two key fetches caused by unknown key ids, so a stream of forged
/// tokens cannot turn into a stream of calls to users.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Clock skew tolerated when checking expiry.
const LEEWAY_SECS: u64 = 5;

/// Verifies access tokens with cached public keys.
pub struct Verifier {
    users: Arc<Upstream>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    revocations: Arc<Revocations>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(users: Arc<Upstream>, revocations: Arc<Revocations>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            users,
            keys: RwLock::new(HashMap::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            validation,
            revocations,
        }
    }

    /// The sessions ended before their tokens expire.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The claims of a valid token, or the problem to answer.
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Problem::unauthorized("the token is malformed; log in again for a new one")
        })?;
        let kid = header.kid.ok_or_else(|| {
            Problem::unauthorized("the token names no signing key; it was not issued by comb")
        })?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh(&kid).await?;
                self.key(&kid).ok_or_else(|| {
                    Problem::unauthorized("the token was signed by a key comb does not know")
                })?
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                Problem::unauthorized(match error.kind() {
                    ErrorKind::ExpiredSignature => {
                        "the token has expired; log in again (or get a new guest token)"
                    }
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
                        "the token was not issued for this API; log in again for a new one"
                    }
                    _ => "the token is not valid; log in again for a new one",
                })
            })?;
        if self.revocations.refuses(&claims) {
            return Err(Problem::unauthorized(
                "this session has ended (logged out, or the account's password or role changed); log in again",
            ));
        }
        Ok(claims)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kid)
            .cloned()
    }

    /// Fetches the key set from users, unless another request just did.
    async fn refresh(&self, kid: &str) -> Result<(), Problem> {
        let mut last = self.last_refresh.lock().await;
        if self.key(kid).is_some() || last.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(());
        }
        let jwks = UsersClient::new(self.users.channel())
            .get_jwks(proto::GetJwksRequest {})
            .await
            .answered_by(&self.users)?;
        *last = Some(Instant::now());
        let mut fresh = HashMap::new();
        for key in jwks.keys {
            match DecodingKey::from_ed_components(&key.x) {
                Ok(decoding) => {
                    fresh.insert(key.kid, decoding);
                }
                Err(error) => {
                    tracing::warn!(kid = %key.kid, %error, "users published a key that cannot be used")
                }
            }
        }
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }
}

/// A verified caller with the admin role. As an extractor it runs before the body is
/// read, so a non-admin learns nothing about what an admin route accepts.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl FromRequestParts<GatewayState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(claims) = Caller::from_request_parts(parts, state).await?;
        if claims.role == Role::Admin {
            Ok(Self(claims))
        } else {
            Err(Problem::forbidden("this needs the admin role"))
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// The verified caller of a route that needs a token.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }
}

impl FromRequestParts<GatewayState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Err(Problem::unauthorized(
                "this needs a token: send Authorization: Bearer TOKEN, with a token from /api/v1/auth/login, /api/v1/auth/register or /api/v1/auth/guest",
            ));
        }
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            Problem::unauthorized("use the Bearer scheme: Authorization: Bearer TOKEN")
        })?;
        state.verifier.verify(token).await.map(Caller)
    }
}
