//! What comb's access tokens say. The users service signs them (EdDSA, keys published as
//! a JWKS); the gateway verifies them and acts on these claims.

use serde::{Deserialize, Serialize};

/// The issuer every comb token names.
pub const ISSUER: &str = "comb";

/// The audience every comb access token names: the public API (and the storefront) behind
/// the gateway. A token minted for anything else is refused there.
pub const AUDIENCE: &str = "comb-api";

/// Who a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A shopper who has not signed in: may keep a cart and check out with an email.
    Guest,
    /// A signed-in customer: sees only their own carts and orders.
    Customer,
    /// Manages the catalog and stock, and reads reports.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guest => "guest",
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// The claims of a comb access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id, or the guest's.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iss: String,
    /// [`AUDIENCE`].
    pub aud: String,
    /// The token's own id, by which logging out revokes it.
    pub jti: String,
    /// The account's session generation when the token was issued: changing an account's
    /// password or role starts a new generation, and older tokens are refused.
    #[serde(default, rename = "gen")]
    pub generation: u64,
    /// Seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
}
