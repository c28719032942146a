use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use comb_kit::storage::Database;
use serde_json::{Value, json};

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, System, problem};

async fn register(system: &System, email: &str) -> Value {
    let response = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": "a long enough secret", "name": "Grace Hopper"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn login(system: &System, email: &str, password: &str) -> reqwest::Response {
    system
        .post_json(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
}

async fn token_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// A token signed with the users service's own key, with the claims we choose.
pub(crate) async fn forge(system: &System, claims: &Claims) -> String {
    let db = Database::connect(&system.database("users").url)
        .await
        .unwrap();
    let key = comb_users::store::UserStore::new(db)
        .keys()
        .await
        .unwrap()
        .remove(0);
    let der = STANDARD.decode(key.private_key).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn register_log_in_and_ask_who_i_am() {
    let system = System::start().await;
    let session = register(&system, " Grace@Example.com").await;
    assert_eq!(session["user"]["email"], "grace@example.com");
    assert_eq!(session["user"]["role"], "customer");
    let token = session["token"].as_str().unwrap();
    let me: Value = system
        .get_as("/api/v1/me", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me, session["user"]);

    let again = login(&system, "grace@example.com", "a long enough secret").await;
    assert_eq!(again.status(), 200);
    let wrong = login(&system, "grace@example.com", "not the secret").await;
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    problem(wrong, 401).await;

    let taken = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": "GRACE@example.com", "password": "another secret here", "name": "G"}),
        )
        .await;
    let body = problem(taken, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("log in"),
        "{body}"
    );

    let invalid = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": "nope", "password": "123", "name": ""}),
        )
        .await;
    // Well-formed JSON the users service refuses: 422, with every field at fault.
    let body = problem(invalid, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name"], "{body}");

    let guest = system.post_json("/api/v1/auth/guest", json!({})).await;
    assert_eq!(guest.status(), 201);
    let guest: Value = guest.json().await.unwrap();
    let me: Value = system
        .get_as("/api/v1/me", guest["token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "guest");
    assert_eq!(me["id"], guest["guest_id"]);
    assert!(me["email"].is_null());

    let jwks = system.json("/.well-known/jwks.json").await;
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["kid"] == kid.as_str())
    );
}

#[tokio::test]
async fn who_am_i_for_every_kind_of_credential() {
    let system = System::start().await;
    let customer = token_of(login_after_register(&system).await).await;
    let admin = token_of(login(&system, ADMIN_EMAIL, ADMIN_PASSWORD).await).await;
    let guest = token_of(system.post_json("/api/v1/auth/guest", json!({})).await).await;
    let claims = |exp: u64| Claims {
        sub: "someone".into(),
        role: Role::Admin,
        email: None,
        name: None,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        jti: "forged".into(),
        generation: 0,
        iat: now() - 7200,
        exp,
    };
    let expired = forge(&system, &claims(now() - 3600)).await;
    let mut foreign_issuer = claims(now() + 3600);
    foreign_issuer.iss = "elsewhere".into();
    let foreign_issuer = forge(&system, &foreign_issuer).await;
    let mut foreign_audience = claims(now() + 3600);
    foreign_audience.aud = "another-api".into();
    let foreign_audience = forge(&system, &foreign_audience).await;
    let (head, rest) = customer.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let bad_signature = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
    let promoted = {
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["role"] = json!("admin");
        format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let unknown_key = format!(
        "{}.{payload}.{signature}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"k-not-ours"}"#)
    );

    let cases: &[(&str, Option<String>, u16, Option<&str>)] = &[
        ("no token", None, 401, None),
        ("not bearer", Some(format!("Basic {customer}")), 401, None),
        ("garbage", Some("Bearer not.a.token".into()), 401, None),
        ("expired", Some(format!("Bearer {expired}")), 401, None),
        (
            "bad signature",
            Some(format!("Bearer {bad_signature}")),
            401,
            None,
        ),
        (
            "claims edited",
            Some(format!("Bearer {promoted}")),
            401,
            None,
        ),
        (
            "unknown key",
            Some(format!("Bearer {unknown_key}")),
            401,
            None,
        ),
        (
            "foreign issuer",
            Some(format!("Bearer {foreign_issuer}")),
            401,
            None,
        ),
        (
            "foreign audience",
            Some(format!("Bearer {foreign_audience}")),
            401,
            None,
        ),
        ("guest", Some(format!("Bearer {guest}")), 200, Some("guest")),
        (
            "customer",
            Some(format!("Bearer {customer}")),
            200,
            Some("customer"),
        ),
        ("admin", Some(format!("bearer {admin}")), 200, Some("admin")),
    ];
    for (name, authorization, status, role) in cases {
        let mut request = system.http.get(system.url("/api/v1/me"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), *status, "{name}");
        if *status == 401 {
            problem(response, 401).await;
        } else {
            let me: Value = response.json().await.unwrap();
            assert_eq!(me["role"].as_str(), *role, "{name}");
        }
    }
}

async fn login_after_register(system: &System) -> reqwest::Response {
    register(system, "matrix@example.com").await;
    login(system, "matrix@example.com", "a long enough secret").await
}

#[tokio::test]
async fn bodies_that_are_not_what_a_route_reads_get_problems() {
    let system = System::start().await;
    let url = system.url("/api/v1/auth/login");
    let not_json = system.http.post(&url).body("email=a").send().await.unwrap();
    problem(not_json, 415).await;
    let broken = system
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let body = problem(broken, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let missing = system
        .post_json("/api/v1/auth/login", json!({"email": "a@b.co"}))
        .await;
    let body = problem(missing, 400).await;
    assert_eq!(body["errors"][0]["field"], "password", "{body}");
    let wrong_type = system
        .post_json("/api/v1/auth/login", json!({"email": 42, "password": "x"}))
        .await;
    let body = problem(wrong_type, 400).await;
    assert_eq!(body["errors"][0]["field"], "email", "{body}");
    let huge = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": "a@b.co", "password": "x".repeat(200_000), "name": "n"}),
        )
        .await;
    problem(huge, 413).await;
}

#[tokio::test]
async fn known_tokens_verify_while_users_is_down() {
    let mut system = System::start().await;
    let token = token_of(login_after_register(&system).await).await;
    assert_eq!(system.get_as("/api/v1/me", &token).await.status(), 200);
    system.users.stop().await;
    let me = system.get_as("/api/v1/me", &token).await;
    assert_eq!(me.status(), 200, "verified locally with the cached key");
    let register = system
        .post_json(
            "/api/v1/auth/register",
            json!({"email": "late@example.com", "password": "a long enough secret", "name": "Late"}),
        )
        .await;
    problem(register, 503).await;
}

#[tokio::test]
async fn the_twenty_first_wrong_password_in_a_minute_is_refused_with_429() {
    let system = System::start().await;
    register(&system, "target@example.com").await;
    for attempt in 1..=20 {
        let wrong = login(&system, "target@example.com", "not the password at all").await;
        assert_eq!(wrong.status(), 401, "attempt {attempt}");
    }
    let refused = login(&system, "Target@Example.com", "not the password at all").await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = problem(refused, 429).await;
    assert!(
        body["detail"].as_str().unwrap().contains("account"),
        "{body}"
    );
    // Another account is not locked out by it.
    let other = login(
        &system,
        "someone-else@example.com",
        "not the password at all",
    )
    .await;
    assert_eq!(other.status(), 401);
}

#[tokio::test]
async fn logout_revokes_the_token_here_and_at_every_other_gateway() {
    let system = System::start().await;
    let customer = token_of(login_after_register(&system).await).await;
    let other_session =
        token_of(login(&system, "matrix@example.com", "a long enough secret").await).await;
    // A second gateway in front of the same services, as a replica would be.
    let replica = crate::gateway_with(&system.upstreams(), 2_000, &[]).await;
    let me_at = |base: String, token: String| {
        let http = system.http.clone();
        async move {
            http.get(format!("{base}/api/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(me_at(replica.url(), customer.clone()).await.status(), 200);

    let logout = system
        .http
        .post(system.url("/api/v1/auth/logout"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let after = me_at(system.gateway.url(), customer.clone()).await;
    let refused = problem(after, 401).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("session has ended"),
        "{refused}"
    );
    // The replica hears of it from users, without being told.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = me_at(replica.url(), customer.clone()).await.status();
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica still accepts a revoked token"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Only that session ended: the account's other token still works.
    assert_eq!(
        me_at(system.gateway.url(), other_session.clone())
            .await
            .status(),
        200
    );
    // Logging out twice is refused like any ended session; without a token it needs one.
    let again = system
        .http
        .post(system.url("/api/v1/auth/logout"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    problem(again, 401).await;
    let anonymous = system
        .http
        .post(system.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401).await;
}

#[tokio::test]
async fn a_new_gateway_refuses_tokens_revoked_before_it_started() {
    let system = System::start().await;
    let guest = token_of(system.post_json("/api/v1/auth/guest", json!({})).await).await;
    let logout = system
        .http
        .post(system.url("/api/v1/auth/logout"))
        .bearer_auth(&guest)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let later = crate::gateway_with(&system.upstreams(), 2_000, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = system
            .http
            .get(format!("{}/api/v1/me", later.url()))
            .bearer_auth(&guest)
            .send()
            .await
            .unwrap();
        if response.status() == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a gateway started later accepts a revoked token"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_admin_password_ends_the_admins_earlier_sessions() {
    let system = System::start().await;
    let before = token_of(login(&system, ADMIN_EMAIL, ADMIN_PASSWORD).await).await;
    let me = |token: String| {
        let http = system.http.clone();
        let url = system.url("/api/v1/me");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(before.clone()).await, 200);
    // Users starts again with another admin password (a second instance on the same
    // database, as a rolling restart would).
    let new_password = "a brand new admin password";
    let restarted = crate::config(
        "users",
        system.database("users"),
        &[
            ("COMB_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("COMB_ADMIN_PASSWORD", new_password.to_owned()),
        ],
    );
    comb_users::open(&restarted).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while me(before.clone()).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "a token from before the new password still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let old = login(&system, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(old.status(), 401, "the old password is gone");
    let after = token_of(login(&system, ADMIN_EMAIL, new_password).await).await;
    assert_eq!(
        me(after).await,
        200,
        "a session of the new generation works"
    );
}
