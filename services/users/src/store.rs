//! The users service's storage: accounts and signing keys.

use comb_contracts::auth::Role;
use comb_contracts::events;
use comb_kit::events::{self as kit_events, Event};
use comb_kit::storage::Database;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    /// PKCS#8 DER, base64.
    pub private_key: String,
    /// Base64url, no padding.
    pub public_key: String,
}

#[derive(Debug, Clone)]
pub struct UserStore {
    db: Database,
}

const USER_COLUMNS: &str = "id, email, name, role, created_at";

impl UserStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates an account and publishes its registration in the same transaction.
    pub async fn create(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let registered = Event::new(
            "users",
            events::USER_REGISTERED,
            &user.id,
            &events::UserRegistered {
                user_id: user.id.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
            },
        )
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(password_hash)
        .bind(user.role.as_str())
        .bind(user.created_at.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::EmailTaken,
            _ => StoreError::Database(error),
        })?;
        kit_events::publish(&self.db, &mut tx, &registered).await?;
        kit_events::commit(&self.db, tx).await?;
        Ok(())
    }

    /// The service's database, whose outbox is its event feed.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The account with this (normalised) email and its password hash.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Makes `user` the admin account: created if its email is new, else given the admin
    /// role and this password.
    pub async fn upsert_admin(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, role, created_at) VALUES ($1, $2, $3, $4, 'admin', $5)
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, role = 'admin'",
        )
        .bind(user.id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(password_hash)
        .bind(user.created_at.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Every signing key, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_key FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    private_key: row.try_get("private_key")?,
                    public_key: row.try_get("public_key")?,
                })
            })
            .collect()
    }

    pub async fn add_key(&self, key: &StoredKey, created_at: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key.kid.as_str())
            .bind(key.private_key.as_str())
            .bind(key.public_key.as_str())
            .bind(created_at)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role = match row.try_get::<String, _>("role")?.as_str() {
        "customer" => Role::Customer,
        "admin" => Role::Admin,
        other => return Err(StoreError::Corrupt(format!("users.role {other:?}"))),
    };
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role,
        created_at: row.try_get("created_at")?,
    })
}
