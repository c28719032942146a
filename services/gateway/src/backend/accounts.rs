//! Accounts: registering and signing in, answered by the users service.

use comb_contracts::auth::Role;
use comb_contracts::users::v1 as proto;
use comb_contracts::users::v1::users_client::UsersClient;
use comb_kit::Problem;
use comb_kit::grpc::{Answer, UpstreamChannel};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Guest,
    Customer,
    Admin,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Guest => Self::Guest,
            Role::Customer => Self::Customer,
            Role::Admin => Self::Admin,
        }
    }
}

/// Who a token belongs to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: String,
    /// Null for guests.
    pub email: Option<String>,
    /// Null for guests.
    pub name: Option<String>,
    pub role: RoleName,
}

/// A signed-in session: send `token` as `Authorization: Bearer TOKEN`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
    pub user: Me,
}

/// A guest's session: a cart and a checkout without an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GuestSession {
    pub token: String,
    pub expires_at: String,
    pub guest_id: String,
}

fn client(state: &GatewayState) -> UsersClient<UpstreamChannel> {
    UsersClient::new(state.users.channel())
}

/// The view of a session; 502 when users answered without the account or with a role the
/// gateway does not know (never taken for a customer).
fn session(session: proto::Session) -> Result<Session, Problem> {
    let unusable = |what: &str| {
        tracing::error!(
            upstream = "users",
            problem = what,
            "an answer the gateway cannot use"
        );
        Problem::bad_gateway(
            "the users service gave an answer that cannot be used; it has been logged, please retry",
        )
    };
    let user = session
        .user
        .ok_or_else(|| unusable("a session without its user"))?;
    let role = match proto::Role::try_from(user.role) {
        Ok(proto::Role::Admin) => RoleName::Admin,
        Ok(proto::Role::Guest) => RoleName::Guest,
        Ok(proto::Role::Customer) => RoleName::Customer,
        Ok(proto::Role::Unspecified) | Err(_) => {
            return Err(unusable("a session with no known role"));
        }
    };
    Ok(Session {
        token: session.token,
        expires_at: session.expires_at,
        user: Me {
            id: user.id,
            email: Some(user.email),
            name: Some(user.name),
            role,
        },
    })
}

/// Creates a customer account and signs it in.
pub async fn register(
    state: &GatewayState,
    email: String,
    password: String,
    name: String,
) -> Result<Session, Problem> {
    let created = client(state)
        .register(proto::RegisterRequest {
            email,
            password,
            name,
        })
        .await
        .answered_by(&state.users)?;
    session(created)
}

/// Signs in with email and password.
pub async fn login(
    state: &GatewayState,
    email: String,
    password: String,
) -> Result<Session, Problem> {
    let signed_in = client(state)
        .login(proto::LoginRequest { email, password })
        .await
        .answered_by(&state.users)?;
    session(signed_in)
}

/// A token for shopping without an account.
pub async fn guest(state: &GatewayState) -> Result<GuestSession, Problem> {
    let issued = client(state)
        .issue_guest_token(proto::IssueGuestTokenRequest {})
        .await
        .answered_by(&state.users)?;
    Ok(GuestSession {
        token: issued.token,
        expires_at: issued.expires_at,
        guest_id: issued.guest_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(role: i32) -> proto::Session {
        proto::Session {
            token: "t".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
            user: Some(proto::User {
                id: "u-1".into(),
                email: "a@example.com".into(),
                name: "A".into(),
                role,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_session_is_shown_only_with_its_account_and_a_role_the_gateway_knows() {
        let customer = session(answer(proto::Role::Customer as i32)).map(|s| s.user.id);
        assert_eq!(customer.ok().as_deref(), Some("u-1"));
        for unknown in [proto::Role::Unspecified as i32, 42] {
            let refused = session(answer(unknown)).map(|_| ()).map_err(|p| p.status);
            assert_eq!(refused, Err(502), "never taken for a customer");
        }
        let without_user = proto::Session {
            user: None,
            ..answer(proto::Role::Customer as i32)
        };
        assert!(session(without_user).is_err());
    }
}
