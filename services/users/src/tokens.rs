//! Access tokens: JWTs signed with Ed25519 (EdDSA). The private key never leaves this
//! service; the public keys are published as a JWKS so the gateway verifies tokens itself.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use comb_contracts::auth::{AUDIENCE, Claims, ISSUER, Role};
use comb_contracts::users::v1 as proto;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{StoreError, StoredKey, UserStore};
use comb_kit::clock::now_rfc3339;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed token and when it expires (RFC 3339).
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub expires_at: String,
}

/// Issues tokens with the service's signing key.
#[derive(Clone)]
pub struct Tokens {
    store: UserStore,
    kid: String,
    key: EncodingKey,
    customer_ttl: Duration,
    guest_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads the signing key, creating one on first start. Replicas starting together may
    /// each create one; all then sign with the oldest, and all keys are published.
    pub async fn load_or_create(
        store: UserStore,
        customer_ttl: Duration,
        guest_ttl: Duration,
    ) -> Result<Self, TokenError> {
        let mut keys = store.keys().await?;
        if keys.is_empty() {
            store.add_key(&generate_key()?, &now_rfc3339()).await?;
            keys = store.keys().await?;
        }
        let signing = keys
            .first()
            .ok_or_else(|| TokenError::Key("no signing key after creating one".into()))?;
        let der = STANDARD.decode(&signing.private_key).map_err(|error| {
            TokenError::Key(format!("key {} is not base64: {error}", signing.kid))
        })?;
        Ok(Self {
            kid: signing.kid.clone(),
            key: EncodingKey::from_ed_der(&der),
            store,
            customer_ttl,
            guest_ttl,
        })
    }

    /// A token for `subject` in `role`, of the account's session `generation`.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        email: Option<&str>,
        name: Option<&str>,
        generation: u64,
    ) -> Result<Token, TokenError> {
        let now = OffsetDateTime::now_utc();
        let ttl = if role == Role::Guest {
            self.guest_ttl
        } else {
            self.customer_ttl
        };
        let expires = now + ttl;
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            email: email.map(str::to_owned),
            name: name.map(str::to_owned),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            generation,
            iat: now.unix_timestamp().max(0) as u64,
            exp: expires.unix_timestamp().max(0) as u64,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(Token {
            token: jsonwebtoken::encode(&header, &claims, &self.key)?,
            expires_at: expires.format(&Rfc3339).unwrap_or_default(),
        })
    }

    /// The public keys that verify this service's tokens.
    pub async fn jwks(&self) -> Result<Vec<proto::Jwk>, TokenError> {
        Ok(self
            .store
            .keys()
            .await?
            .into_iter()
            .map(|key| proto::Jwk {
                kid: key.kid,
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: key.public_key,
                alg: "EdDSA".into(),
            })
            .collect())
    }
}

fn generate_key() -> Result<StoredKey, TokenError> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = signing
        .to_pkcs8_der()
        .map_err(|error| TokenError::Key(format!("cannot encode a new key: {error}")))?;
    let public_key = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
    Ok(StoredKey {
        kid: format!("k-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        private_key: STANDARD.encode(der.as_bytes()),
        public_key,
    })
}
