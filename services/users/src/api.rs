//! The users service's gRPC API.

use std::time::Duration;

use comb_contracts::auth::Role;
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_server::Users;
use comb_kit::grpc::invalid_argument;
use comb_kit::problem::FieldError;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::domain::{Email, check_name, check_password};
use crate::passwords;
use crate::store::{Revocation, StoreError, User, UserStore};
use crate::tokens::{Token, TokenError, Tokens};
use comb_kit::clock::{now_ms, now_rfc3339};

/// Refusing a sign-in never says whether the email or the password was wrong.
const BAD_CREDENTIALS: &str = "the email or password is wrong";

/// How far before a watcher's position answers reach back, so a revocation whose write
/// committed after a later one's is still delivered.
const REVOCATION_OVERLAP_MS: i64 = 5_000;
/// The longest a revocation watch waits; another instance's revocations (sharing the
/// database) are looked for at least this often while waiting.
const MAX_REVOCATION_WAIT: Duration = Duration::from_secs(30);
const REVOCATION_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct UsersApi {
    store: UserStore,
    tokens: Tokens,
    /// Bumped after each revocation this instance records, waking its watchers.
    revoked: watch::Sender<u64>,
}

impl UsersApi {
    pub fn new(store: UserStore, tokens: Tokens) -> Self {
        Self {
            store,
            tokens,
            revoked: watch::Sender::new(0),
        }
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    fn session(&self, user: User) -> Result<proto::Session, Status> {
        let Token { token, expires_at } = self
            .tokens
            .issue(
                &user.id,
                user.role,
                Some(&user.email),
                Some(&user.name),
                user.session_generation,
            )
            .map_err(token_status)?;
        Ok(proto::Session {
            token,
            user: Some(user_to_proto(user)),
            expires_at,
        })
    }
}

#[tonic::async_trait]
impl Users for UsersApi {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        let email = Email::parse(&request.email)
            .map_err(|message| errors.push(FieldError::new("email", message)))
            .ok();
        let name = check_name(&request.name)
            .map_err(|message| errors.push(FieldError::new("name", message)))
            .ok();
        if let Some(email) = &email
            && let Err(message) = check_password(&request.password, email)
        {
            errors.push(FieldError::new("password", message));
        }
        let (Some(email), Some(name)) = (email, name) else {
            return Err(invalid_argument(&errors));
        };
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let hash = passwords::hash(request.password)
            .await
            .map_err(hash_status)?;
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.as_str().to_owned(),
            name,
            role: Role::Customer,
            created_at: now_rfc3339(),
            session_generation: 0,
        };
        self.store
            .create(&user, &hash)
            .await
            .map_err(|error| match error {
                StoreError::EmailTaken => Status::already_exists(
                    "an account with this email already exists; log in instead",
                ),
                other => store_status(other),
            })?;
        tracing::info!(user = %user.id, "account registered");
        Ok(Response::new(self.session(user)?))
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let request = request.into_inner();
        let found = match Email::parse(&request.email) {
            Ok(email) => self
                .store
                .find_by_email(email.as_str())
                .await
                .map_err(store_status)?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let password_ok = passwords::verify(request.password, hash)
            .await
            .map_err(hash_status)?;
        match user {
            Some(user) if password_ok => Ok(Response::new(self.session(user)?)),
            _ => Err(Status::unauthenticated(BAD_CREDENTIALS)),
        }
    }

    async fn issue_guest_token(
        &self,
        _request: Request<proto::IssueGuestTokenRequest>,
    ) -> Result<Response<proto::GuestSession>, Status> {
        let guest_id = format!("guest-{}", uuid::Uuid::now_v7());
        let Token { token, expires_at } = self
            .tokens
            .issue(&guest_id, Role::Guest, None, None, 0)
            .map_err(token_status)?;
        Ok(Response::new(proto::GuestSession {
            token,
            guest_id,
            expires_at,
        }))
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let id = request.into_inner().id;
        let plausible = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        let user = if plausible {
            self.store.get(&id).await.map_err(store_status)?
        } else {
            None
        };
        user.map(|user| Response::new(user_to_proto(user)))
            .ok_or_else(|| Status::not_found(format!("there is no user with id {id:?}")))
    }

    async fn get_jwks(
        &self,
        _request: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::Jwks>, Status> {
        let keys = self.tokens.jwks().await.map_err(token_status)?;
        Ok(Response::new(proto::Jwks { keys }))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::RevokeTokenResponse>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        if request.token_id.is_empty() || request.token_id.len() > 64 {
            errors.push(FieldError::new(
                "token_id",
                "must be the token's jti, 1 to 64 characters",
            ));
        }
        if request.subject.is_empty() || request.subject.len() > 128 {
            errors.push(FieldError::new(
                "subject",
                "must be the token's sub, 1 to 128 characters",
            ));
        }
        if request.expires_at == 0 {
            errors.push(FieldError::new("expires_at", "must be the token's exp"));
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        self.store
            .revoke_token(&Revocation {
                subject: request.subject,
                token_id: request.token_id,
                expires_at: request.expires_at,
                sessions_from: 0,
                revoked_at_ms: now_ms(),
            })
            .await
            .map_err(store_status)?;
        self.revoked.send_modify(|count| *count += 1);
        Ok(Response::new(proto::RevokeTokenResponse {}))
    }

    async fn watch_revocations(
        &self,
        request: Request<proto::WatchRevocationsRequest>,
    ) -> Result<Response<proto::Revocations>, Status> {
        let request = request.into_inner();
        let wait = Duration::from_millis(u64::from(request.wait_ms)).min(MAX_REVOCATION_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut revoked = self.revoked.subscribe();
        loop {
            revoked.borrow_and_update();
            let items = self
                .store
                .revocations_after(
                    request.after_ms.saturating_sub(REVOCATION_OVERLAP_MS),
                    now_ms() / 1000,
                )
                .await
                .map_err(store_status)?;
            let news = items
                .iter()
                .any(|item| item.revoked_at_ms > request.after_ms);
            if news || request.after_ms <= 0 || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(proto::Revocations {
                    items: items.into_iter().map(revocation_to_proto).collect(),
                }));
            }
            let poll = deadline.min(tokio::time::Instant::now() + REVOCATION_POLL);
            let _ = tokio::time::timeout_at(poll, revoked.changed()).await;
        }
    }
}

fn revocation_to_proto(revocation: Revocation) -> proto::Revocation {
    proto::Revocation {
        token_id: revocation.token_id,
        subject: revocation.subject,
        expires_at: revocation.expires_at,
        sessions_from: revocation.sessions_from,
        revoked_at_ms: revocation.revoked_at_ms,
    }
}

fn user_to_proto(user: User) -> proto::User {
    proto::User {
        id: user.id,
        email: user.email,
        name: user.name,
        role: role_to_proto(user.role) as i32,
        created_at: user.created_at,
    }
}

/// The wire form of a role.
pub fn role_to_proto(role: Role) -> proto::Role {
    match role {
        Role::Guest => proto::Role::Guest,
        Role::Customer => proto::Role::Customer,
        Role::Admin => proto::Role::Admin,
    }
}

/// A hash refused for want of a turn is a moment's unavailability (the caller is told to
/// retry, and does not retry by itself); any other failure is ours.
fn hash_status(error: passwords::HashError) -> Status {
    match error {
        passwords::HashError::Busy => Status::unavailable(error.to_string()),
        passwords::HashError::Failed(_) => {
            tracing::error!(%error, "hashing a password failed");
            Status::internal("password hashing failed")
        }
    }
}

fn store_status(error: StoreError) -> Status {
    tracing::error!(%error, "users storage failed");
    Status::internal("users storage failed")
}

fn token_status(error: TokenError) -> Status {
    tracing::error!(%error, "token signing failed");
    Status::internal("token signing failed")
}
