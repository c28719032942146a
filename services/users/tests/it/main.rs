//! The users service as `comb serve` builds it: registration (normalised emails, refusals
//! field by field), log-in, the configured admin account, guest tokens, the tokens it signs
//! and the keys it publishes to verify them, revoked tokens and the watch that tells of
//! them, and what a restart keeps (the signing key) or changes (a new admin password ends
//! the admin's earlier sessions). On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_testkit::{TestDatabase, TestService};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::Code;
use tonic::transport::Channel;

const ADMIN_EMAIL: &str = "Admin@Comb.Example";
const FIRST_ADMIN_PASSWORD: &str = "first admin secret";
const SECOND_ADMIN_PASSWORD: &str = "second admin secret";
const ADA_PASSWORD: &str = "analytical engine";

struct Users {
    client: UsersClient<Channel>,
    _service: TestService,
}

/// The service with the admin account `ADMIN_EMAIL` / `admin_password`. Starting it again
/// on the same database is a restart.
async fn start(database: &TestDatabase, admin_password: &str) -> Users {
    let config = comb_testkit::config(
        "users",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("COMB_ADMIN_PASSWORD", admin_password.to_owned()),
        ],
    );
    let service = TestService::start(comb_users::build(config).await.unwrap()).await;
    Users {
        client: UsersClient::new(service.channel().await),
        _service: service,
    }
}

impl Users {
    /// Ada's account, registered with her email written untidily.
    async fn register_ada(&mut self) -> proto::Session {
        self.client
            .register(register(" Ada@Example.com ", ADA_PASSWORD, "Ada Lovelace"))
            .await
            .unwrap()
            .into_inner()
    }

    async fn login(
        &mut self,
        email: &str,
        password: &str,
    ) -> Result<proto::Session, tonic::Status> {
        self.client
            .login(proto::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Verifies a token with the published keys, as the gateway does.
    async fn verify(&mut self, token: &str) -> Claims {
        let jwks = self
            .client
            .get_jwks(proto::GetJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let key = jwks
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .expect("the signing key is published");
        assert_eq!(
            (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
            ("OKP", "Ed25519", "EdDSA")
        );
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let decoding = DecodingKey::from_ed_components(&key.x).unwrap();
        jsonwebtoken::decode::<Claims>(token, &decoding, &validation)
            .unwrap()
            .claims
    }

    /// Every revocation still in force, without waiting.
    async fn revocations(&mut self) -> Vec<proto::Revocation> {
        self.client
            .watch_revocations(proto::WatchRevocationsRequest {
                after_ms: 0,
                wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .items
    }
}

fn register(email: &str, password: &str, name: &str) -> proto::RegisterRequest {
    proto::RegisterRequest {
        email: email.into(),
        password: password.into(),
        name: name.into(),
    }
}

fn revoke(claims: &Claims) -> proto::RevokeTokenRequest {
    proto::RevokeTokenRequest {
        token_id: claims.jti.clone(),
        subject: claims.sub.clone(),
        expires_at: claims.exp,
    }
}

async fn registering_normalises_the_email_and_makes_a_customer(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let user = users.register_ada().await.user.unwrap();

    assert_eq!(user.email, "ada@example.com", "emails are normalised");
    assert_eq!(user.role, proto::Role::Customer as i32);
}

async fn a_customers_token_verifies_with_the_published_key_and_names_them(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let session = users.register_ada().await;

    let claims = users.verify(&session.token).await;

    assert_eq!(claims.sub, session.user.unwrap().id);
    assert_eq!(claims.role, Role::Customer);
    assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
    assert_eq!((claims.aud.as_str(), claims.generation), (AUDIENCE, 0));
    assert!(claims.exp > claims.iat);
}

async fn every_token_has_its_own_id(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let registered = users.register_ada().await;

    let logged_in = users.login("ada@example.com", ADA_PASSWORD).await.unwrap();

    assert_ne!(
        users.verify(&logged_in.token).await.jti,
        users.verify(&registered.token).await.jti,
        "every token has its own id"
    );
}

async fn an_email_is_registered_once_whatever_its_case(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    users.register_ada().await;

    let taken = users
        .client
        .register(register("ADA@example.com", "another long one", "Imposter"))
        .await
        .unwrap_err();

    assert_eq!(taken.code(), Code::AlreadyExists);
}

async fn a_bad_registration_is_refused_naming_every_field_at_fault(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let invalid = users
        .client
        .register(register("not-an-email", "short", " "))
        .await
        .unwrap_err();

    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = comb_kit::grpc::field_errors(&invalid)
        .unwrap()
        .into_iter()
        .map(|error| error.field)
        .collect();
    assert_eq!(fields, ["email", "name"]);
}

async fn a_weak_password_is_refused_saying_why(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let weak = users
        .client
        .register(register("bob@example.com", "password1", "Bob"))
        .await
        .unwrap_err();

    assert!(
        weak.message().starts_with("password:"),
        "{}",
        weak.message()
    );
}

async fn logging_in_answers_the_registered_account(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let user = users.register_ada().await.user.unwrap();

    let again = users.login("ada@example.com", ADA_PASSWORD).await.unwrap();

    assert_eq!(again.user.unwrap().id, user.id);
}

async fn a_wrong_password_and_an_unknown_email_are_refused_alike(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    users.register_ada().await;

    let wrong = users
        .login("ada@example.com", "difference engine")
        .await
        .unwrap_err();
    let unknown = users
        .login("nobody@example.com", ADA_PASSWORD)
        .await
        .unwrap_err();

    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "which part was wrong is not told"
    );
}

async fn the_configured_admin_logs_in_with_an_admin_token(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let admin = users
        .login(ADMIN_EMAIL, FIRST_ADMIN_PASSWORD)
        .await
        .unwrap();

    assert_eq!(users.verify(&admin.token).await.role, Role::Admin);
}

async fn a_guest_token_names_the_guest_and_no_email(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let guest = users
        .client
        .issue_guest_token(proto::IssueGuestTokenRequest {})
        .await
        .unwrap()
        .into_inner();

    let claims = users.verify(&guest.token).await;
    assert_eq!(
        (claims.role, claims.sub.as_str()),
        (Role::Guest, guest.guest_id.as_str())
    );
    assert_eq!(claims.email, None);
}

async fn an_account_is_found_by_its_id(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let user = users.register_ada().await.user.unwrap();

    let found = users
        .client
        .get_user(proto::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(found.name, "Ada Lovelace");
}

async fn an_unknown_account_is_not_found(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let missing = users
        .client
        .get_user(proto::GetUserRequest { id: "\0".into() })
        .await
        .unwrap_err();

    assert_eq!(missing.code(), Code::NotFound);
}

async fn a_restart_keeps_the_signing_key_so_earlier_tokens_stay_valid(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let session = users.register_ada().await;
    let kid = jsonwebtoken::decode_header(&session.token).unwrap().kid;
    drop(users);

    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let later = users.login("ada@example.com", ADA_PASSWORD).await.unwrap();
    assert_eq!(jsonwebtoken::decode_header(&later.token).unwrap().kid, kid);
    assert_eq!(
        users.verify(&session.token).await.sub,
        session.user.unwrap().id
    );
}

async fn a_restart_with_a_new_admin_password_applies_it(database: TestDatabase) {
    drop(start(&database, FIRST_ADMIN_PASSWORD).await);

    let mut users = start(&database, SECOND_ADMIN_PASSWORD).await;

    assert!(
        users
            .login(ADMIN_EMAIL, FIRST_ADMIN_PASSWORD)
            .await
            .is_err()
    );
    assert!(
        users
            .login(ADMIN_EMAIL, SECOND_ADMIN_PASSWORD)
            .await
            .is_ok()
    );
}

async fn nothing_is_revoked_at_first(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let revocations = users.revocations().await;

    assert!(revocations.is_empty(), "{revocations:?}");
}

async fn a_revocation_wakes_a_watcher_at_once(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let session = users.register_ada().await;
    let claims = users.verify(&session.token).await;
    // "Now" is read before the revocation is sent (and a millisecond back, since the two
    // may share one), not whenever the watcher's task first runs.
    let after_ms = comb_kit::clock::now_ms() - 1;
    let mut watcher = users.client.clone();
    let waiting = tokio::spawn(async move {
        watcher
            .watch_revocations(proto::WatchRevocationsRequest {
                after_ms,
                wait_ms: 30_000,
            })
            .await
            .map(tonic::Response::into_inner)
    });

    users.client.revoke_token(revoke(&claims)).await.unwrap();

    // Well before the watch's own 30 seconds are up: it was woken, not timed out.
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the watch answers when a token is revoked")
        .unwrap()
        .unwrap();
    assert!(
        heard
            .items
            .iter()
            .any(|item| item.token_id == claims.jti && item.subject == claims.sub),
        "{heard:?}"
    );
}

async fn revoking_a_token_again_is_accepted(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let session = users.register_ada().await;
    let claims = users.verify(&session.token).await;
    users.client.revoke_token(revoke(&claims)).await.unwrap();

    let twice = users.client.revoke_token(revoke(&claims)).await;

    assert!(twice.is_ok(), "revoking is idempotent: {twice:?}");
}

/// Checked before anything is stored, so one backend is enough.
#[tokio::test]
async fn a_revocation_naming_no_token_is_refused() {
    let database = TestDatabase::sqlite();
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let nameless = users
        .client
        .revoke_token(proto::RevokeTokenRequest::default())
        .await
        .unwrap_err();

    assert_eq!(nameless.code(), Code::InvalidArgument);
}

async fn a_restart_with_the_same_admin_password_revokes_nothing(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let first_admin = users
        .login(ADMIN_EMAIL, FIRST_ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(users.verify(&first_admin.token).await.generation, 0);
    let admin_id = first_admin.user.unwrap().id;
    drop(users);

    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;

    let items = users.revocations().await;
    assert!(
        !items.iter().any(|item| item.subject == admin_id),
        "{items:?}"
    );
}

async fn a_new_admin_password_revokes_the_admins_earlier_sessions(database: TestDatabase) {
    let mut users = start(&database, FIRST_ADMIN_PASSWORD).await;
    let admin_id = users
        .login(ADMIN_EMAIL, FIRST_ADMIN_PASSWORD)
        .await
        .unwrap()
        .user
        .unwrap()
        .id;
    drop(users);

    let mut users = start(&database, SECOND_ADMIN_PASSWORD).await;

    let items = users.revocations().await;
    let ended = items
        .iter()
        .find(|item| item.subject == admin_id)
        .expect("the admin's earlier sessions are revoked");
    assert_eq!(
        (
            ended.token_id.as_str(),
            ended.sessions_from,
            ended.expires_at
        ),
        ("", 1, 0)
    );
}

async fn tokens_after_a_new_admin_password_carry_the_next_generation(database: TestDatabase) {
    drop(start(&database, FIRST_ADMIN_PASSWORD).await);
    let mut users = start(&database, SECOND_ADMIN_PASSWORD).await;

    let second_admin = users
        .login(ADMIN_EMAIL, SECOND_ADMIN_PASSWORD)
        .await
        .unwrap();

    assert_eq!(users.verify(&second_admin.token).await.generation, 1);
}

comb_testkit::on_each_backend!(
    registering_normalises_the_email_and_makes_a_customer,
    a_customers_token_verifies_with_the_published_key_and_names_them,
    every_token_has_its_own_id,
    an_email_is_registered_once_whatever_its_case,
    a_bad_registration_is_refused_naming_every_field_at_fault,
    a_weak_password_is_refused_saying_why,
    logging_in_answers_the_registered_account,
    a_wrong_password_and_an_unknown_email_are_refused_alike,
    the_configured_admin_logs_in_with_an_admin_token,
    a_guest_token_names_the_guest_and_no_email,
    an_account_is_found_by_its_id,
    an_unknown_account_is_not_found,
    a_restart_keeps_the_signing_key_so_earlier_tokens_stay_valid,
    a_restart_with_a_new_admin_password_applies_it,
    nothing_is_revoked_at_first,
    a_revocation_wakes_a_watcher_at_once,
    revoking_a_token_again_is_accepted,
    a_restart_with_the_same_admin_password_revokes_nothing,
    a_new_admin_password_revokes_the_admins_earlier_sessions,
    tokens_after_a_new_admin_password_carry_the_next_generation,
);
