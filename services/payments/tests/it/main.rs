//! The payments service over gRPC, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use comb_contracts::catalog::v1::Money;
use comb_contracts::payments::v1 as proto;
use comb_contracts::payments::v1::payments_client::PaymentsClient;
use comb_kit::ServiceConfig;
use comb_kit::storage::Database;
use comb_kit::storage::sql;
use comb_testkit::{TestDatabase, TestServer};
use tonic::Code;

fn authorize(payment_id: &str, number: &str) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        payment_id: payment_id.into(),
        card: Some(proto::Card {
            number: number.into(),
            exp_month: 12,
            exp_year: 2099,
            cvc: "123".into(),
        }),
        amount: Some(Money {
            amount_minor: 2599,
            currency: "USD".into(),
        }),
    }
}

fn reference(payment_id: &str) -> proto::PaymentRef {
    proto::PaymentRef {
        payment_id: payment_id.into(),
    }
}

fn status(payment: &proto::Payment) -> proto::PaymentStatus {
    proto::PaymentStatus::try_from(payment.status).unwrap()
}

#[tokio::test]
async fn payments_on_sqlite() {
    exercise(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn payments_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    exercise(&database).await;
}

async fn exercise(database: &TestDatabase) {
    let config = ServiceConfig::resolve(
        "payments",
        BTreeMap::new(),
        [("COMB_DATABASE_URL", database.url.clone())],
    )
    .unwrap();
    let server = TestServer::start(comb_payments::routes(
        comb_payments::open(&config).await.unwrap(),
    ))
    .await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PaymentsClient::new(channel);
    use proto::PaymentStatus as S;

    let paid = client
        .authorize(authorize("order-1", "4242 4242 4242 4242"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status(&paid), paid.last4.as_str()),
        (S::Authorized, "4242")
    );
    let again = client
        .authorize(authorize("order-1", "4000000000000002"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, paid, "the same key answers with the same payment");
    assert_eq!(
        status(
            &client
                .capture(reference("order-1"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Captured
    );
    assert_eq!(
        status(
            &client
                .capture(reference("order-1"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Captured
    );
    let void = client.void(reference("order-1")).await.unwrap_err();
    assert_eq!(void.code(), Code::FailedPrecondition);
    assert_eq!(
        status(
            &client
                .refund(reference("order-1"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Refunded
    );
    assert_eq!(
        status(
            &client
                .refund(reference("order-1"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Refunded
    );

    let declined = client
        .authorize(authorize("order-2", "4000000000000002"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status(&declined), declined.decline_reason.as_str()),
        (S::Declined, "card_declined")
    );
    assert_eq!(
        client
            .capture(reference("order-2"))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    let failed = client
        .authorize(authorize("order-3", "4000000000000119"))
        .await
        .unwrap_err();
    assert_eq!(
        failed.code(),
        Code::Unavailable,
        "a processor error is for retrying"
    );
    let missing = client.get_payment(reference("order-3")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "nothing was recorded");
    let retried = client
        .authorize(authorize("order-3", "4242424242424242"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&retried), S::Authorized);
    assert_eq!(
        status(
            &client
                .void(reference("order-3"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Voided
    );
    assert_eq!(
        status(
            &client
                .void(reference("order-3"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Voided
    );

    // A void that overtakes its authorization: the late authorization takes nothing.
    assert_eq!(
        status(
            &client
                .void(reference("order-4"))
                .await
                .unwrap()
                .into_inner()
        ),
        S::Voided
    );
    let late = client
        .authorize(authorize("order-4", "4242424242424242"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&late), S::Voided);

    let invalid = client
        .authorize(proto::AuthorizeRequest {
            payment_id: "order-5".into(),
            card: Some(proto::Card {
                number: "4242424242424241".into(),
                exp_month: 13,
                exp_year: 2020,
                cvc: "12".into(),
            }),
            amount: Some(Money {
                amount_minor: 0,
                currency: "usd".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = comb_kit::grpc::field_errors(&invalid)
        .unwrap()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "amount",
            "amount.currency",
            "card_number",
            "exp_month",
            "cvc"
        ]
    );

    // Authorizations, declines and refunds went out as events (not voids, not captures).
    let db = Database::connect(&database.url).await.unwrap();
    let published = comb_kit::events::read_outbox(&db, "payments", 0, 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = published.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "comb.payment.authorized",
            "comb.payment.refunded",
            "comb.payment.declined",
            "comb.payment.authorized"
        ]
    );
    assert!(
        published.iter().all(|event| !event.data.contains("424242")),
        "no card number in events"
    );

    // Only the last four digits are ever kept.
    let rows = sql::query("SELECT payment_id, last4, decline_reason, status FROM payments")
        .fetch_all(&db)
        .await
        .unwrap();
    for row in rows {
        for column in ["payment_id", "last4", "decline_reason", "status"] {
            let value: String = row.try_get(column).unwrap();
            assert!(
                !value.contains("424242"),
                "a card number in payments.{column}: {value}"
            );
        }
    }
}
