//! The users service's storage: accounts and signing keys.

use comb_contracts::auth::Role;
use comb_contracts::events;
use comb_kit::events::{self as kit_events, Event};
use comb_kit::storage::{Database, sql};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sql::DbError),
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    /// Raised whenever the password or role changes; tokens of earlier ones are refused.
    pub session_generation: u64,
}

/// A session ended before its token expired, as gateways learn of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub subject: String,
    /// Empty when every token of `subject` before `sessions_from` is revoked.
    pub token_id: String,
    /// Seconds since the epoch; 0 for never.
    pub expires_at: u64,
    pub sessions_from: u64,
    pub revoked_at_ms: i64,
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

const USER_COLUMNS: &str = "id, email, name, role, created_at, session_generation";

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
        sql::query(
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
            error if error.is_unique_violation() => StoreError::EmailTaken,
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
        let row = sql::query(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.db)
        .await?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sql::query(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Creates the admin account (no event: it is configuration, not a registration). A
    /// replica starting at the same moment may have just created it; that one stands.
    pub async fn create_admin(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        sql::query(
            "INSERT INTO users (id, email, name, password_hash, role, created_at) VALUES ($1, $2, $3, $4, 'admin', $5)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(user.id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(password_hash)
        .bind(user.created_at.as_str())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Gives account `id` the admin role and this password, and starts a new session
    /// generation, revoking every token issued before; returns the new generation.
    pub async fn make_admin(
        &self,
        id: &str,
        password_hash: &str,
        revoked_at_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let generation: i64 = sql::query_scalar(
            "UPDATE users SET password_hash = $1, role = 'admin', session_generation = session_generation + 1
             WHERE id = $2 RETURNING session_generation",
        )
        .bind(password_hash)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        sql::query(
            "INSERT INTO revocations (subject, token_id, expires_at, sessions_from, revoked_at_ms) VALUES ($1, '', 0, $2, $3)
             ON CONFLICT (subject, token_id) DO UPDATE SET sessions_from = excluded.sessions_from, revoked_at_ms = excluded.revoked_at_ms",
        )
        .bind(id)
        .bind(generation)
        .bind(revoked_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(generation).unwrap_or_default())
    }

    /// Records that one token is revoked, and forgets revocations of tokens that have
    /// expired since (they are refused anyway).
    pub async fn revoke_token(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let expires_at = i64::try_from(revocation.expires_at)
            .map_err(|_| StoreError::Corrupt("a token expiry beyond 2^63".into()))?;
        let mut tx = self.db.begin_write().await?;
        sql::query(
            "INSERT INTO revocations (subject, token_id, expires_at, sessions_from, revoked_at_ms) VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (subject, token_id) DO NOTHING",
        )
        .bind(revocation.subject.as_str())
        .bind(revocation.token_id.as_str())
        .bind(expires_at)
        .bind(revocation.revoked_at_ms)
        .execute(&mut *tx)
        .await?;
        sql::query("DELETE FROM revocations WHERE expires_at > 0 AND expires_at < $1")
            .bind(revocation.revoked_at_ms / 1000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The revocations recorded after `after_ms` that still matter at `now_secs`, oldest
    /// first.
    pub async fn revocations_after(
        &self,
        after_ms: i64,
        now_secs: i64,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = sql::query(
            "SELECT subject, token_id, expires_at, sessions_from, revoked_at_ms FROM revocations
             WHERE revoked_at_ms > $1 AND (expires_at = 0 OR expires_at >= $2) ORDER BY revoked_at_ms",
        )
        .bind(after_ms)
        .bind(now_secs)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|row| {
                let unsigned = |column: &str| -> Result<u64, StoreError> {
                    let value: i64 = row.try_get(column)?;
                    u64::try_from(value)
                        .map_err(|_| StoreError::Corrupt(format!("revocations.{column} {value}")))
                };
                Ok(Revocation {
                    subject: row.try_get("subject")?,
                    token_id: row.try_get("token_id")?,
                    expires_at: unsigned("expires_at")?,
                    sessions_from: unsigned("sessions_from")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            })
            .collect()
    }

    /// Every signing key, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sql::query(
            "SELECT kid, private_key, public_key FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.db)
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
        sql::query("INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key.kid.as_str())
            .bind(key.private_key.as_str())
            .bind(key.public_key.as_str())
            .bind(created_at)
            .execute(&self.db)
            .await?;
        Ok(())
    }
}

fn user_from_row(row: &sql::Row) -> Result<User, StoreError> {
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
        session_generation: u64::try_from(row.try_get::<i64, _>("session_generation")?)
            .map_err(|_| StoreError::Corrupt("users.session_generation below 0".into()))?,
    })
}
