//! The notifications service as `comb serve` builds it: a message in the recipient's
//! mailbox for each event it renders, from every producer it follows, once each. On
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use comb_contracts::events::{self as contract, UserRegistered};
use comb_contracts::notifications::v1 as proto;
use comb_contracts::notifications::v1::notifications_client::NotificationsClient;
use comb_kit::events::Event;
use comb_testkit::{TestDatabase, TestFeed, TestService, order_confirmed};
use tonic::Code;
use tonic::transport::Channel;

async fn mailbox(
    client: &mut NotificationsClient<Channel>,
    recipient: &str,
) -> Vec<proto::Message> {
    client
        .list_messages(proto::ListMessagesRequest {
            recipient: recipient.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// The recipient's mailbox once it holds `count` messages (events are read in the
/// background), or as it is after ten seconds.
async fn mailbox_of(
    client: &mut NotificationsClient<Channel>,
    recipient: &str,
    count: usize,
) -> Vec<proto::Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let messages = mailbox(client, recipient).await;
        if messages.len() >= count || tokio::time::Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn each_event_becomes_one_message_for_its_recipient(database: TestDatabase) {
    let mut feeds = Vec::new();
    for producer in comb_notifications::PRODUCERS {
        feeds.push((*producer, TestFeed::start(producer).await));
    }
    let feed = |name: &str| {
        &feeds
            .iter()
            .find(|(producer, _)| *producer == name)
            .unwrap()
            .1
    };
    let mut settings = vec![("COMB_DATABASE_URL", database.url.clone())];
    for (producer, feed) in &feeds {
        let key = match *producer {
            "orders" => "COMB_UPSTREAM_ORDERS",
            "shipping" => "COMB_UPSTREAM_SHIPPING",
            _ => "COMB_UPSTREAM_USERS",
        };
        settings.push((key, feed.url()));
    }
    let config = comb_testkit::config("notifications", &settings);
    let service = TestService::start(comb_notifications::build(config).await.unwrap()).await;
    let channel = service.channel().await;
    let mut client = NotificationsClient::new(channel);
    assert!(mailbox(&mut client, "u-1").await.is_empty());

    let welcome = Event::new(
        "users",
        contract::USER_REGISTERED,
        "u-1",
        &UserRegistered {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
        },
    )
    .unwrap();
    feed("users").publish(&welcome).await;
    feed("orders")
        .publish(&order_confirmed("o-1", "u-1", &["p-1"]))
        .await;
    feed("orders")
        .publish(&order_confirmed("o-2", "u-2", &["p-2"]))
        .await;

    let messages = mailbox_of(&mut client, "u-1", 2).await;
    let mut kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["order_confirmed", "welcome"], "{messages:?}");
    let confirmation = messages
        .iter()
        .find(|m| m.kind == "order_confirmed")
        .unwrap();
    assert_eq!(confirmation.email, "u-1@example.com");
    assert!(confirmation.body.contains("o-1"), "{}", confirmation.body);
    assert!(messages.iter().all(|m| m.recipient == "u-1"));
    let others = mailbox_of(&mut client, "u-2", 1).await;
    assert_eq!(
        others.len(),
        1,
        "one confirmation, nothing of u-1's: {others:?}"
    );

    let refused = client
        .list_messages(proto::ListMessagesRequest {
            recipient: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

comb_testkit::on_each_backend!(each_event_becomes_one_message_for_its_recipient);
