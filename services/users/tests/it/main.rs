//! The users service over gRPC, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::auth::{Claims, ISSUER, Role};
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
