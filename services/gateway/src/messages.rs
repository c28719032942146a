//! The caller's mailbox: the messages comb sent them, from the notifications service.

use axum::Json;
use axum::extract::State;
use comb_contracts::notifications::v1 as proto;
use comb_contracts::notifications::v1::notifications_client::NotificationsClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;
use crate::auth::Caller;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::Unauthorized;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    /// order_confirmed, order_cancelled, shipment_shipped or welcome.
    pub kind: String,
    pub subject: String,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub items: Vec<Message>,
    pub next_cursor: Option<String>,
}

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
    let messages = NotificationsClient::new(state.notifications.channel())
        .list_messages(proto::ListMessagesRequest {
            recipient: caller.0.sub,
        })
        .await
        .answered_by(&state.notifications)?;
    Ok(Json(MessageList {
        items: messages
            .items
            .into_iter()
            .map(|message| Message {
                id: message.id,
                kind: message.kind,
                subject: message.subject,
                body: message.body,
                created_at: message.created_at,
            })
            .collect(),
        next_cursor: None,
    }))
}
