//! The users service over gRPC, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_kit::ServiceConfig;
use comb_testkit::{TestDatabase, TestServer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::Code;
use tonic::transport::Channel;

const ADMIN_EMAIL: &str = "Admin@Comb.Example";

async fn start(
    database: &TestDatabase,
    admin_password: &str,
) -> (UsersClient<Channel>, TestServer) {
    let env = [
        ("COMB_DATABASE_URL", database.url.clone()),
        ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("COMB_ADMIN_PASSWORD", admin_password.to_owned()),
    ];
    let config = ServiceConfig::resolve("users", BTreeMap::new(), env).unwrap();
    let api = comb_users::open(&config).await.unwrap();
    let server = TestServer::start(comb_users::routes(api)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (UsersClient::new(channel), server)
}

/// Verifies a token with the published keys, as the gateway does.
async fn verify(client: &mut UsersClient<Channel>, token: &str) -> Claims {
    let jwks = client
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

fn register(email: &str, password: &str, name: &str) -> proto::RegisterRequest {
    proto::RegisterRequest {
        email: email.into(),
        password: password.into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn accounts_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn accounts_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    let (mut client, server) = start(database, "first admin secret").await;

    let session = client
        .register(register(
            " Ada@Example.com ",
            "analytical engine",
            "Ada Lovelace",
        ))
        .await
        .unwrap()
        .into_inner();
    let user = session.user.clone().unwrap();
    assert_eq!(user.email, "ada@example.com", "emails are normalised");
    assert_eq!(user.role, proto::Role::Customer as i32);
    let claims = verify(&mut client, &session.token).await;
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.role, Role::Customer);
    assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
    assert!(claims.exp > claims.iat);

    let taken = client
        .register(register("ADA@example.com", "another long one", "Imposter"))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    let invalid = client
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
    let weak = client
        .register(register("bob@example.com", "password1", "Bob"))
        .await
        .unwrap_err();
    assert!(
        weak.message().starts_with("password:"),
        "{}",
        weak.message()
    );

    let login = |email: &str, password: &str| proto::LoginRequest {
        email: email.into(),
        password: password.into(),
    };
    let again = client
        .login(login("ada@example.com", "analytical engine"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.user.unwrap().id, user.id);
    let wrong = client
        .login(login("ada@example.com", "difference engine"))
        .await
        .unwrap_err();
    let unknown = client
        .login(login("nobody@example.com", "analytical engine"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "which part was wrong is not told"
    );

    let admin = client
        .login(login(ADMIN_EMAIL, "first admin secret"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verify(&mut client, &admin.token).await.role, Role::Admin);

    let guest = client
        .issue_guest_token(proto::IssueGuestTokenRequest {})
        .await
        .unwrap()
        .into_inner();
    let claims = verify(&mut client, &guest.token).await;
    assert_eq!(
        (claims.role, claims.sub.as_str()),
        (Role::Guest, guest.guest_id.as_str())
    );
    assert_eq!(claims.email, None);

    let found = client
        .get_user(proto::GetUserRequest {
            id: user.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.name, "Ada Lovelace");
    let missing = client
        .get_user(proto::GetUserRequest { id: "\0".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A restart keeps the signing key (old tokens stay valid) and applies a new admin password.
    let kid = jsonwebtoken::decode_header(&session.token).unwrap().kid;
    drop(server);
    let (mut client, _server) = start(database, "second admin secret").await;
    let later = client
        .login(login("ada@example.com", "analytical engine"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jsonwebtoken::decode_header(&later.token).unwrap().kid, kid);
    assert_eq!(verify(&mut client, &session.token).await.sub, user.id);
    assert!(
        client
            .login(login(ADMIN_EMAIL, "first admin secret"))
            .await
            .is_err()
    );
    assert!(
        client
            .login(login(ADMIN_EMAIL, "second admin secret"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn sessions_on_sqlite() {
    sessions(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn sessions_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    sessions(&database).await;
}

/// Logging out revokes one token, and watchers hear of it at once; a new admin password
/// starts a new session generation, while a restart with the same one changes nothing.
async fn sessions(database: &TestDatabase) {
    let (mut client, server) = start(database, "first admin secret").await;
    let login = |password: &str| proto::LoginRequest {
        email: ADMIN_EMAIL.into(),
        password: password.into(),
    };
    let everything = || proto::WatchRevocationsRequest {
        after_ms: 0,
        wait_ms: 0,
    };
    let revocations = client
        .watch_revocations(everything())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(revocations.is_empty(), "{revocations:?}");

    let session = client
        .register(register("grace@example.com", "compiler pioneer", "Grace"))
        .await
        .unwrap()
        .into_inner();
    let claims = verify(&mut client, &session.token).await;
    assert_eq!((claims.aud.as_str(), claims.generation), (AUDIENCE, 0));
    let other = client
        .login(proto::LoginRequest {
            email: "grace@example.com".into(),
            password: "compiler pioneer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        verify(&mut client, &other.token).await.jti,
        claims.jti,
        "every token has its own id"
    );

    // A watcher waiting from now is woken by the revocation, long before its wait ends.
    // "Now" is read before the revocation is sent (and a millisecond back, since the two
    // may share one), not whenever the watcher's task first runs.
    let after_ms = comb_kit::clock::now_ms() - 1;
    let mut watcher = client.clone();
    let waiting = tokio::spawn(async move {
        watcher
            .watch_revocations(proto::WatchRevocationsRequest {
                after_ms,
                wait_ms: 30_000,
            })
            .await
            .map(tonic::Response::into_inner)
    });
    client
        .revoke_token(proto::RevokeTokenRequest {
            token_id: claims.jti.clone(),
            subject: claims.sub.clone(),
            expires_at: claims.exp,
        })
        .await
        .unwrap();
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
    let twice = client
        .revoke_token(proto::RevokeTokenRequest {
            token_id: claims.jti.clone(),
            subject: claims.sub.clone(),
            expires_at: claims.exp,
        })
        .await;
    assert!(twice.is_ok(), "revoking is idempotent: {twice:?}");
    let nameless = client
        .revoke_token(proto::RevokeTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(nameless.code(), Code::InvalidArgument);

    let first_admin = client
        .login(login("first admin secret"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verify(&mut client, &first_admin.token).await.generation, 0);
    let admin_id = first_admin.user.unwrap().id;

    // The same settings again: nothing about the admin's sessions changes.
    drop(server);
    let (mut client, server) = start(database, "first admin secret").await;
    let items = client
        .watch_revocations(everything())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(
        !items.iter().any(|item| item.subject == admin_id),
        "{items:?}"
    );

    // A new password: tokens of the earlier generation are revoked, new ones carry the next.
    drop(server);
    let (mut client, _server) = start(database, "second admin secret").await;
    let items = client
        .watch_revocations(everything())
        .await
        .unwrap()
        .into_inner()
        .items;
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
    let second_admin = client
        .login(login("second admin secret"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verify(&mut client, &second_admin.token).await.generation, 1);
}
