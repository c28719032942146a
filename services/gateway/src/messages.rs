//! The caller's mailbox: the messages comb sent them, from the notifications service.

use axum::Json;
use axum::extract::State;
use comb_kit::Problem;

use crate::auth::Caller;
pub use crate::backend::messages::{Message, MessageList};
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::Unauthorized;
use crate::{GatewayState, backend};

/// The caller's messages, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's messages", body = MessageList),
        Unauthorized,
        (status = 503, description = "Notifications are unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn list_messages(
    State(state): State<GatewayState>,
    caller: Caller,
) -> Result<Json<MessageList>, Problem> {
    Ok(Json(
        backend::messages::mailbox(&state, &caller.0.sub).await?,
    ))
}
