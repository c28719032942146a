//! Mailboxes, answered by the notifications service.

use comb_contracts::notifications::v1 as proto;
use comb_contracts::notifications::v1::notifications_client::NotificationsClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GatewayState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    /// order_confirmed, order_cancelled, shipment_shipped or welcome.
    pub kind: String,
    /// The address it was sent to.
    pub email: String,
    pub subject: String,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub items: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// The messages sent to `recipient`, newest first.
pub async fn mailbox(state: &GatewayState, recipient: &str) -> Result<MessageList, Problem> {
    let messages = NotificationsClient::new(state.notifications.channel())
        .list_messages(proto::ListMessagesRequest {
            recipient: recipient.to_owned(),
        })
        .await
        .answered_by(&state.notifications)?;
    Ok(MessageList {
        items: messages
            .items
            .into_iter()
            .map(|message| Message {
                id: message.id,
                kind: message.kind,
                email: message.email,
                subject: message.subject,
                body: message.body,
                created_at: message.created_at,
            })
            .collect(),
        next_cursor: None,
    })
}
