//! The payments service as `comb serve` builds it: authorizations (idempotent per payment
//! id, declined cards, processor errors), captures, voids and refunds and the order they
//! are allowed in, input refused field by field, the events it announces, and that no card
//! number is ever kept or announced. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use comb_contracts::catalog::v1::Money;
use comb_contracts::payments::v1 as proto;
use comb_contracts::payments::v1::PaymentStatus as S;
use comb_contracts::payments::v1::payments_client::PaymentsClient;
use comb_kit::storage::{Database, sql};
use comb_testkit::{TestDatabase, TestService};
use tonic::Code;
use tonic::transport::Channel;

const GOOD_CARD: &str = "4242424242424242";
const DECLINED_CARD: &str = "4000000000000002";
const PROCESSOR_ERROR_CARD: &str = "4000000000000119";

struct Payments {
    client: PaymentsClient<Channel>,
    /// The service's own database, to see what it stored.
    db: Database,
    _service: TestService,
}

async fn start(database: &TestDatabase) -> Payments {
    let config = comb_testkit::config("payments", &[("COMB_DATABASE_URL", database.url.clone())]);
    let service = TestService::start(comb_payments::build(config).await.unwrap()).await;
    Payments {
        client: PaymentsClient::new(service.channel().await),
        db: Database::connect(&database.url).await.unwrap(),
        _service: service,
    }
}

impl Payments {
    async fn authorize(&mut self, payment_id: &str, number: &str) -> proto::Payment {
        self.client
            .authorize(authorize(payment_id, number))
            .await
            .unwrap()
            .into_inner()
    }

    async fn capture(&mut self, payment_id: &str) -> Result<proto::Payment, tonic::Status> {
        answer(self.client.capture(reference(payment_id)).await)
    }

    async fn void(&mut self, payment_id: &str) -> Result<proto::Payment, tonic::Status> {
        answer(self.client.void(reference(payment_id)).await)
    }

    async fn refund(&mut self, payment_id: &str) -> Result<proto::Payment, tonic::Status> {
        answer(self.client.refund(reference(payment_id)).await)
    }

    /// The events the service has put in its outbox, oldest first: what its feed serves.
    /// Read from the database because a feed read that does not wait may not yet know of
    /// a commit made a moment before.
    async fn announced(&self) -> Vec<comb_kit::events::Event> {
        comb_kit::events::read_outbox(&self.db, "payments", 0, 100)
            .await
            .unwrap()
    }
}

fn answer(
    answer: Result<tonic::Response<proto::Payment>, tonic::Status>,
) -> Result<proto::Payment, tonic::Status> {
    answer.map(tonic::Response::into_inner)
}

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

fn status(payment: &proto::Payment) -> S {
    S::try_from(payment.status).unwrap()
}

async fn a_good_card_is_authorized_keeping_its_last_four_digits(database: TestDatabase) {
    let mut payments = start(&database).await;

    let paid = payments.authorize("order-1", "4242 4242 4242 4242").await;

    assert_eq!(
        (status(&paid), paid.last4.as_str()),
        (S::Authorized, "4242")
    );
}

async fn authorizing_a_payment_id_again_answers_the_first_payment(database: TestDatabase) {
    let mut payments = start(&database).await;
    let paid = payments.authorize("order-1", GOOD_CARD).await;

    let again = payments.authorize("order-1", DECLINED_CARD).await;

    assert_eq!(again, paid, "the same key answers with the same payment");
}

async fn capturing_is_idempotent(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;

    assert_eq!(
        status(&payments.capture("order-1").await.unwrap()),
        S::Captured
    );
    assert_eq!(
        status(&payments.capture("order-1").await.unwrap()),
        S::Captured
    );
}

async fn a_captured_payment_cannot_be_voided(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;
    payments.capture("order-1").await.unwrap();

    let void = payments.void("order-1").await.unwrap_err();

    assert_eq!(void.code(), Code::FailedPrecondition);
}

async fn refunding_a_captured_payment_is_idempotent(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;
    payments.capture("order-1").await.unwrap();

    assert_eq!(
        status(&payments.refund("order-1").await.unwrap()),
        S::Refunded
    );
    assert_eq!(
        status(&payments.refund("order-1").await.unwrap()),
        S::Refunded
    );
}

async fn a_declined_card_is_recorded_with_the_reason(database: TestDatabase) {
    let mut payments = start(&database).await;

    let declined = payments.authorize("order-2", DECLINED_CARD).await;

    assert_eq!(
        (status(&declined), declined.decline_reason.as_str()),
        (S::Declined, "card_declined")
    );
}

async fn a_declined_payment_cannot_be_captured(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-2", DECLINED_CARD).await;

    let capture = payments.capture("order-2").await.unwrap_err();

    assert_eq!(capture.code(), Code::FailedPrecondition);
}

async fn a_processor_error_is_unavailable_and_records_nothing(database: TestDatabase) {
    let mut payments = start(&database).await;

    let failed = payments
        .client
        .authorize(authorize("order-3", PROCESSOR_ERROR_CARD))
        .await
        .unwrap_err();

    assert_eq!(
        failed.code(),
        Code::Unavailable,
        "a processor error is for retrying"
    );
    let missing = payments
        .client
        .get_payment(reference("order-3"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "nothing was recorded");
}

async fn an_authorization_retried_after_a_processor_error_goes_through(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments
        .client
        .authorize(authorize("order-3", PROCESSOR_ERROR_CARD))
        .await
        .unwrap_err();

    let retried = payments.authorize("order-3", GOOD_CARD).await;

    assert_eq!(status(&retried), S::Authorized);
}

async fn voiding_an_authorized_payment_is_idempotent(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-3", GOOD_CARD).await;

    assert_eq!(status(&payments.void("order-3").await.unwrap()), S::Voided);
    assert_eq!(status(&payments.void("order-3").await.unwrap()), S::Voided);
}

async fn an_authorization_overtaken_by_its_void_takes_nothing(database: TestDatabase) {
    let mut payments = start(&database).await;

    assert_eq!(status(&payments.void("order-4").await.unwrap()), S::Voided);
    let late = payments.authorize("order-4", GOOD_CARD).await;

    assert_eq!(status(&late), S::Voided);
}

async fn a_bad_authorization_is_refused_naming_every_field_at_fault(database: TestDatabase) {
    let mut payments = start(&database).await;

    let invalid = payments
        .client
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
}

async fn authorizations_declines_and_refunds_are_announced_but_not_captures_or_voids(
    database: TestDatabase,
) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;
    payments.capture("order-1").await.unwrap();
    payments.refund("order-1").await.unwrap();
    payments.authorize("order-2", DECLINED_CARD).await;
    payments
        .client
        .authorize(authorize("order-3", PROCESSOR_ERROR_CARD))
        .await
        .unwrap_err();
    payments.authorize("order-3", GOOD_CARD).await;
    payments.void("order-3").await.unwrap();
    payments.void("order-4").await.unwrap();
    payments.authorize("order-4", GOOD_CARD).await;

    let announced = payments.announced().await;

    let kinds: Vec<&str> = announced.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "comb.payment.authorized",
            "comb.payment.refunded",
            "comb.payment.declined",
            "comb.payment.authorized"
        ]
    );
}

async fn no_card_number_is_announced(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;
    payments.capture("order-1").await.unwrap();
    payments.refund("order-1").await.unwrap();
    payments.authorize("order-2", DECLINED_CARD).await;

    let announced = payments.announced().await;

    assert_eq!(announced.len(), 3, "{announced:?}");
    assert!(
        announced.iter().all(|event| !event.data.contains("424242")),
        "no card number in events"
    );
}

async fn only_the_last_four_digits_of_a_card_are_stored(database: TestDatabase) {
    let mut payments = start(&database).await;
    payments.authorize("order-1", GOOD_CARD).await;
    payments.authorize("order-2", DECLINED_CARD).await;
    payments.authorize("order-3", "4242 4242 4242 4242").await;
    payments.void("order-3").await.unwrap();

    let rows = sql::query("SELECT payment_id, last4, decline_reason, status FROM payments")
        .fetch_all(&payments.db)
        .await
        .unwrap();

    assert_eq!(rows.len(), 3);
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

comb_testkit::on_each_backend!(
    a_good_card_is_authorized_keeping_its_last_four_digits,
    authorizing_a_payment_id_again_answers_the_first_payment,
    capturing_is_idempotent,
    a_captured_payment_cannot_be_voided,
    refunding_a_captured_payment_is_idempotent,
    a_declined_card_is_recorded_with_the_reason,
    a_declined_payment_cannot_be_captured,
    a_processor_error_is_unavailable_and_records_nothing,
    an_authorization_retried_after_a_processor_error_goes_through,
    voiding_an_authorized_payment_is_idempotent,
    an_authorization_overtaken_by_its_void_takes_nothing,
    a_bad_authorization_is_refused_naming_every_field_at_fault,
    authorizations_declines_and_refunds_are_announced_but_not_captures_or_voids,
    no_card_number_is_announced,
    only_the_last_four_digits_of_a_card_are_stored,
);
