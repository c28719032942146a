//! Account routes: register, log in, guest tokens, who am I, and the public keys that
//! verify comb's tokens. Answered by the users service.

use axum::Json;
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use comb_contracts::auth::{Claims, Role};
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Caller, bearer_token};
pub use crate::backend::accounts::{GuestSession, Me, RoleName, Session};
use crate::body::JsonBody;
use crate::limits::Action;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{AccountsUnavailable, TooManyAttempts};
use crate::{GatewayState, backend};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    /// Your email address; it is your login.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]{1,63}(\.[^@\s.\x00-\x1f\x7f-\x9f]{1,63})+$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// 8 to 128 characters; not a common password, not one character repeated, not your
    /// email address (refused with 422).
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
    /// 1 to 100 characters, not only spaces, no control characters.
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "correct horse battery")]
    pub password: String,
}

fn users(state: &GatewayState) -> UsersClient<comb_kit::grpc::UpstreamChannel> {
    UsersClient::new(state.users.channel())
}

/// Creates a customer account and signs it in.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "accounts",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The account exists and is signed in", body = Session),
        (status = 400, description = "A field is invalid (the problem names it)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "An account with this email exists; log in instead", body = ProblemDoc, content_type = "application/problem+json"),
        TooManyAttempts,
        AccountsUnavailable,
    )
)]
pub async fn register(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<Session>), Problem> {
    state.limits.check(Action::NewSession, client.0, None)?;
    let session = backend::accounts::register(&state, body.email, body.password, body.name).await?;
    merge_guest_cart(&state, &headers, &session.user.id).await;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Signs in with email and password.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "accounts",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 400, description = "The body is malformed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "The email or password is wrong", body = ProblemDoc, content_type = "application/problem+json"),
        TooManyAttempts,
        AccountsUnavailable,
    )
)]
pub async fn login(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Session>, Problem> {
    state
        .limits
        .check(Action::SignIn, client.0, Some(&body.email))?;
    let session = backend::accounts::login(&state, body.email, body.password).await?;
    merge_guest_cart(&state, &headers, &session.user.id).await;
    Ok(Json(session))
}

/// When a guest signs in (their guest token still in `Authorization`), their cart moves
/// into the account's. Signing in does not fail because of it: the guest cart stays.
async fn merge_guest_cart(state: &GatewayState, headers: &HeaderMap, user_id: &str) {
    let Some(token) = bearer_token(headers) else {
        return;
    };
    let Ok(claims) = state.verifier.verify(token).await else {
        return;
    };
    if claims.role != Role::Guest {
        return;
    }
    crate::backend::cart::merge_guest_cart(state, &claims.sub, user_id).await;
}

/// A token for shopping without an account.
#[utoipa::path(
    post,
    path = "/api/v1/auth/guest",
    tag = "accounts",
    responses(
        (status = 201, description = "A guest token", body = GuestSession),
        TooManyAttempts,
        AccountsUnavailable,
    )
)]
pub async fn guest(
    State(state): State<GatewayState>,
    client: crate::forwarded::ClientAddress,
) -> Result<(StatusCode, Json<GuestSession>), Problem> {
    state.limits.check(Action::NewSession, client.0, None)?;
    let guest = backend::accounts::guest(&state).await?;
    Ok((StatusCode::CREATED, Json(guest)))
}

/// Ends the caller's session: the token is refused from now on, by every gateway.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out: the token is revoked"),
        (status = 401, description = "No token, or one that is expired, forged, malformed or already logged out", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Accounts are unavailable, so the token is still valid; retry after Retry-After seconds", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<GatewayState>,
    caller: Caller,
) -> Result<StatusCode, Problem> {
    end_session(&state, &caller.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a verified token with users, and refuses it here at once (other gateways learn
/// of it from users).
pub async fn end_session(state: &GatewayState, claims: &Claims) -> Result<(), Problem> {
    users(state)
        .revoke_token(proto::RevokeTokenRequest {
            token_id: claims.jti.clone(),
            subject: claims.sub.clone(),
            expires_at: claims.exp,
        })
        .await
        .answered_by(&state.users)?;
    state.verifier.revocations().revoked(claims);
    Ok(())
}

/// Who the token in `Authorization` belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No token, or one that is expired, forged or malformed", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn me(caller: Caller) -> Json<Me> {
    let claims = caller.0;
    Json(Me {
        id: claims.sub,
        email: claims.email,
        name: claims.name,
        role: claims.role.into(),
    })
}

/// One public key of comb's token signers (RFC 8037 Ed25519 JWK).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub usage: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The public keys that verify comb's tokens.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "accounts",
    responses(
        (status = 200, description = "The JSON Web Key Set", body = Jwks),
        TooManyAttempts,
        AccountsUnavailable,
    )
)]
pub async fn jwks(State(state): State<GatewayState>) -> Result<impl IntoResponse, Problem> {
    let jwks = users(&state)
        .get_jwks(proto::GetJwksRequest {})
        .await
        .answered_by(&state.users)?;
    let keys = jwks
        .keys
        .into_iter()
        .map(|key| Jwk {
            kid: key.kid,
            kty: key.kty,
            crv: key.crv,
            x: key.x,
            alg: key.alg,
            usage: "sig".into(),
        })
        .collect();
    Ok((
        [(CACHE_CONTROL, "public, max-age=300")],
        Json(Jwks { keys }),
    ))
}
