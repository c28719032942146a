//! The notifications service: it renders messages from other services' events (an order
//! confirmed or cancelled, an account created) into its own mailbox, and lists a person's
//! messages. It reads the orders, shipping and users feeds; nothing calls it to send.

pub mod render;

use std::sync::Arc;

use axum::Router;
use comb_contracts::events::{
    self as contract, OrderCancelled, OrderConfirmed, ShipmentShipped, UserRegistered,
};
use comb_contracts::media::v1::SignDownloadsRequest;
use comb_contracts::media::v1::media_client::MediaClient;
use comb_contracts::notifications::v1 as proto;
use comb_contracts::notifications::v1::notifications_server::{Notifications, NotificationsServer};
use comb_kit::ServiceConfig;
use comb_kit::client::Upstream;
use comb_kit::clock::{now_ms, rfc3339_from_ms};
use comb_kit::events::{Event, Handler, HandlerError, Transport};
use comb_kit::grpc::{check_key, invalid_argument};
use comb_kit::problem::FieldError;
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::{Database, Migration, Migrations};
use tonic::{Request, Response, Status};

use crate::render::Rendered;
use comb_kit::storage::sql;

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "mailbox",
        sql: include_str!("../migrations/sqlite/0001_mailbox.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "mailbox",
        sql: include_str!("../migrations/postgres/0001_mailbox.sql"),
    }],
};

/// The feeds notifications reads.
pub const PRODUCERS: &[&str] = &["orders", "shipping", "users"];

/// A notifications instance, for `comb_kit::service::run`: its mailbox, and a reader of
/// each producer's feed turning events into messages.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let transport = Transport::from_config(&config).await?;
    let mut service = Service::new(routes(db.clone()));
    let mailbox = Arc::new(Mailbox {
        media: if config.calls("media") {
            Some(Arc::new(Upstream::from_config(&config, "media")?))
        } else {
            None
        },
    });
    for producer in PRODUCERS {
        let consumer = transport
            .consumer(
                &config,
                &db,
                producer,
                Arc::clone(&mailbox) as Arc<dyn Handler>,
            )
            .await?;
        service = service.task("event consumer", consumer.run());
    }
    Ok(service)
}

/// Turns events into messages; a confirmation of downloads carries their signed links,
/// from media.
struct Mailbox {
    media: Option<Arc<Upstream>>,
}

impl Mailbox {
    /// Signed links to an order's downloads, or None (the message then points to the
    /// order page) when media cannot sign them now: a confirmation is never held back.
    async fn downloads(&self, order: &OrderConfirmed) -> Option<Vec<render::DownloadLink>> {
        let digital: Vec<String> = order
            .lines
            .iter()
            .filter(|line| line.digital)
            .map(|line| line.product_id.as_str().to_owned())
            .collect();
        if digital.is_empty() {
            return None;
        }
        let media = self.media.as_ref()?;
        let signed = MediaClient::new(media.channel())
            .sign_downloads(SignDownloadsRequest {
                order_id: order.order_id.as_str().to_owned(),
                owner: order.owner.clone(),
                product_ids: digital,
            })
            .await;
        match signed {
            Ok(signed) => Some(
                signed
                    .into_inner()
                    .items
                    .into_iter()
                    .map(|download| render::DownloadLink {
                        title: order
                            .lines
                            .iter()
                            .find(|line| line.product_id.as_str() == download.product_id)
                            .map(|line| line.title.clone())
                            .unwrap_or_default(),
                        url: download.url,
                        expires_at: download.expires_at,
                    })
                    .collect(),
            ),
            Err(status) => {
                tracing::warn!(order = %order.order_id, %status, "download links could not be signed; the confirmation points to the order page");
                None
            }
        }
    }
}

#[tonic::async_trait]
impl Handler for Mailbox {
    fn wants(&self, kind: &str) -> bool {
        matches!(
            kind,
            contract::ORDER_CONFIRMED
                | contract::ORDER_CANCELLED
                | contract::SHIPMENT_SHIPPED
                | contract::USER_REGISTERED
        )
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let (recipient, email, message) = match event.kind.as_str() {
            contract::ORDER_CONFIRMED => {
                let order: OrderConfirmed = event.data()?;
                let downloads = self.downloads(&order).await;
                (
                    order.owner.clone(),
                    order.email.clone(),
                    render::order_confirmed(&order, downloads.as_deref()),
                )
            }
            contract::ORDER_CANCELLED => {
                let order: OrderCancelled = event.data()?;
                (
                    order.owner.clone(),
                    order.email.clone(),
                    render::order_cancelled(&order),
                )
            }
            contract::SHIPMENT_SHIPPED => {
                let shipment: ShipmentShipped = event.data()?;
                (
                    shipment.recipient.clone(),
                    shipment.email.clone(),
                    render::shipment_shipped(&shipment),
                )
            }
            contract::USER_REGISTERED => {
                let user: UserRegistered = event.data()?;
                (
                    user.user_id.clone(),
                    user.email.clone(),
                    render::welcome(&user),
                )
            }
            other => {
                return Err(HandlerError::Poison(format!(
                    "notifications does not handle {other}"
                )));
            }
        };
        deliver(tx, &event.id, &recipient, &email, &message).await?;
        Ok(())
    }
}

async fn deliver(
    tx: &mut sql::Transaction,
    event_id: &str,
    recipient: &str,
    email: &str,
    message: &Rendered,
) -> Result<(), sql::DbError> {
    sql::query(
        "INSERT INTO messages (id, event_id, recipient, email, kind, subject, body, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(event_id)
    .bind(recipient)
    .bind(email)
    .bind(message.kind)
    .bind(message.subject.as_str())
    .bind(message.body.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    tracing::info!(recipient, kind = message.kind, "message sent");
    Ok(())
}

/// Lists the mailbox.
#[derive(Debug, Clone)]
struct MailboxApi {
    db: Database,
}

#[tonic::async_trait]
impl Notifications for MailboxApi {
    async fn list_messages(
        &self,
        request: Request<proto::ListMessagesRequest>,
    ) -> Result<Response<proto::ListMessagesResponse>, Status> {
        let recipient = request.into_inner().recipient;
        check_key("recipient", &recipient)?;
        let rows = sql::query(
            "SELECT id, recipient, kind, email, subject, body, created_at_ms FROM messages WHERE recipient = $1
             ORDER BY created_at_ms DESC, id DESC LIMIT 500",
        )
        .bind(recipient.as_str())
        .fetch_all(&self.db)
        .await;
        messages(rows)
    }

    async fn recent_messages(
        &self,
        request: Request<proto::RecentMessagesRequest>,
    ) -> Result<Response<proto::ListMessagesResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            limit @ 1..=500 => limit,
            other => {
                return Err(invalid_argument(&[FieldError::new(
                    "limit",
                    format!("must be between 1 and 500, not {other}"),
                )]));
            }
        };
        let rows = sql::query(
            "SELECT id, recipient, kind, email, subject, body, created_at_ms FROM messages
             ORDER BY created_at_ms DESC, id DESC LIMIT CAST($1 AS BIGINT)",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await;
        messages(rows)
    }
}

/// Mailbox rows as messages.
fn messages(
    rows: Result<Vec<sql::Row>, sql::DbError>,
) -> Result<Response<proto::ListMessagesResponse>, Status> {
    let rows = rows.map_err(|error| {
        tracing::error!(%error, "reading the mailbox failed");
        Status::internal("the mailbox cannot be read")
    })?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(proto::Message {
                id: row.try_get("id")?,
                recipient: row.try_get("recipient")?,
                kind: row.try_get("kind")?,
                email: row.try_get("email")?,
                subject: row.try_get("subject")?,
                body: row.try_get("body")?,
                created_at: rfc3339_from_ms(row.try_get("created_at_ms")?),
            })
        })
        .collect::<Result<_, sql::DbError>>()
        .map_err(|error| {
            tracing::error!(%error, "a mailbox row cannot be read");
            Status::internal("the mailbox cannot be read")
        })?;
    Ok(Response::new(proto::ListMessagesResponse { items }))
}

/// How many order confirmation messages each event produced, by event id, for audits
/// (`comb chaos check`: each confirmed order's event must produce exactly one).
pub async fn confirmation_messages(
    db: &Database,
) -> Result<std::collections::HashMap<String, i64>, sql::DbError> {
    comb_kit::events::count_per_event(
        db,
        sql::query("SELECT event_id FROM messages WHERE kind = 'order_confirmed'"),
    )
    .await
}

pub fn routes(db: Database) -> Router {
    server::add_grpc(Router::new(), NotificationsServer::new(MailboxApi { db }))
}
