//! The users service: customer accounts (argon2id password hashes, normalised emails),
//! the admin account from configuration, guest identities, and the EdDSA-signed tokens
//! that prove who a caller is. Its public keys are published as a JWKS, so the gateway
//! verifies tokens without calling this service on every request.

pub mod api;
pub mod domain;
pub mod passwords;
pub mod store;
pub mod tokens;

use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use comb_contracts::auth::Role;
use comb_contracts::users::v1::users_server::UsersServer;
use comb_kit::ServiceConfig;
use comb_kit::events::Transport;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};
use comb_kit::{events, server};

use crate::api::UsersApi;
use crate::domain::{Email, check_password};
use crate::store::{User, UserStore};
use crate::tokens::Tokens;
use comb_kit::clock::now_rfc3339;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "users",
            sql: include_str!("../migrations/sqlite/0001_users.sql"),
        },
        Migration {
            version: 2,
            description: "sessions",
            sql: include_str!("../migrations/sqlite/0002_sessions.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "users",
            sql: include_str!("../migrations/postgres/0001_users.sql"),
        },
        Migration {
            version: 2,
            description: "sessions",
            sql: include_str!("../migrations/postgres/0002_sessions.sql"),
        },
    ],
};

/// A users instance, for `comb_kit::service::run`.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let api = open(&config).await?;
    let transport = Transport::from_config(&config).await?;
    let db = api.store().database().clone();
    Ok(Service::new(routes(api)).producing(&transport, &db, "users"))
}

/// Opens the database, loads (or creates) the signing key, and makes sure the admin
/// account from `admin_email`/`admin_password` exists when they are set.
pub async fn open(config: &ServiceConfig) -> anyhow::Result<UsersApi> {
    // How many password hashes run at once.
    let hashes = config.number(
        "password_hashes",
        1..=64,
        "password hashes run at once",
        passwords::DEFAULT_CONCURRENT_HASHES,
    )?;
    passwords::set_concurrency(hashes);
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let store = UserStore::new(db);
    let tokens = Tokens::load_or_create(
        store.clone(),
        config.seconds("token_ttl_secs", Duration::from_secs(24 * 3600))?,
        config.seconds("guest_token_ttl_secs", Duration::from_secs(7 * 24 * 3600))?,
    )
    .await
    .context("loading the token signing key")?;
    ensure_admin(config, &store).await?;
    Ok(UsersApi::new(store, tokens))
}

async fn ensure_admin(config: &ServiceConfig, store: &UserStore) -> anyhow::Result<()> {
    let (email, password) = match (
        config.setting("admin_email"),
        config.setting("admin_password"),
    ) {
        (None, None) => return Ok(()),
        (Some(email), Some(password)) => (email, password),
        _ => bail!(
            "set both COMB_ADMIN_EMAIL and COMB_ADMIN_PASSWORD to create the admin account, or neither"
        ),
    };
    let email =
        Email::parse(email).map_err(|message| anyhow::anyhow!("COMB_ADMIN_EMAIL {message}"))?;
    check_password(password, &email)
        .map_err(|message| anyhow::anyhow!("COMB_ADMIN_PASSWORD {message}"))?;
    // A restart with the same settings changes nothing; a new password or a promoted
    // account ends every session signed in before.
    if let Some((user, stored)) = store.find_by_email(email.as_str()).await? {
        let same_password = passwords::verify(password.to_owned(), Some(stored)).await?;
        if user.role == Role::Admin && same_password {
            tracing::info!(email = %user.email, "admin account ready");
            return Ok(());
        }
        let hash = passwords::hash(password.to_owned()).await?;
        let generation = store
            .make_admin(&user.id, &hash, comb_kit::clock::now_ms())
            .await?;
        tracing::info!(email = %user.email, generation, "admin account changed; its earlier sessions are revoked");
        return Ok(());
    }
    let hash = passwords::hash(password.to_owned()).await?;
    let admin = User {
        id: uuid::Uuid::now_v7().to_string(),
        email: email.as_str().to_owned(),
        name: "Administrator".into(),
        role: Role::Admin,
        created_at: now_rfc3339(),
        session_generation: 0,
    };
    store.create_admin(&admin, &hash).await?;
    tracing::info!(email = %admin.email, "admin account ready");
    Ok(())
}

/// The users API and the feed of the events users publishes.
pub fn routes(api: UsersApi) -> Router {
    let db = api.store().database().clone();
    events::feed_routes(
        server::add_grpc(Router::new(), UsersServer::new(api)),
        &db,
        "users",
    )
}
