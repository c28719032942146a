//! The payments service's gRPC API. Card numbers are checked and reduced to their last
//! four digits here; they are never stored or logged.

use comb_contracts::catalog::v1::Money;
use comb_contracts::payments::v1 as proto;
use comb_contracts::payments::v1::payments_server::Payments;
use comb_kit::clock::now_ms;
use comb_kit::grpc::{check_key, invalid_argument};
use comb_kit::problem::FieldError;
use time::OffsetDateTime;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::store::{Payment, PaymentStore, Status, StoreError};
use comb_contracts::cards::{self as card, Verdict};

/// The largest amount one payment may take, in minor units.
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000;

#[derive(Debug, Clone)]
pub struct PaymentsApi {
    store: PaymentStore,
}

impl PaymentsApi {
    pub fn new(store: PaymentStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &PaymentStore {
        &self.store
    }

    /// Moves the payment a request names from one of `from` to `to`.
    async fn transition(
        &self,
        request: Request<proto::PaymentRef>,
        from: &[Status],
        to: Status,
        wanted: &'static str,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        let payment_id = request.into_inner().payment_id;
        check_key("payment_id", &payment_id)?;
        let payment = self
            .store
            .transition(&payment_id, from, to, wanted, now_ms())
            .await
            .map_err(store_status)?;
        Ok(Response::new(payment_to_proto(payment)))
    }
}

#[tonic::async_trait]
impl Payments for PaymentsApi {
    async fn authorize(
        &self,
        request: Request<proto::AuthorizeRequest>,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        let request = request.into_inner();
        check_key("payment_id", &request.payment_id)?;
        if let Some(existing) = self
            .store
            .get(&request.payment_id)
            .await
            .map_err(store_status)?
        {
            return Ok(Response::new(payment_to_proto(existing)));
        }
        let mut errors = Vec::new();
        let amount = request.amount.unwrap_or_default();
        if !(1..=MAX_AMOUNT_MINOR).contains(&amount.amount_minor) {
            errors.push(FieldError::new(
                "amount",
                format!("must be between 1 and {MAX_AMOUNT_MINOR} minor units"),
            ));
        }
        if !(amount.currency.len() == 3 && amount.currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            errors.push(FieldError::new(
                "amount.currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
        let card = request.card.unwrap_or_default();
        let today = OffsetDateTime::now_utc();
        let checked = card::check(
            &card.number,
            card.exp_month,
            card.exp_year,
            &card.cvc,
            (
                u32::try_from(today.year()).unwrap_or(0),
                u32::from(u8::from(today.month())),
            ),
        );
        let checked = match checked {
            Ok(checked) if errors.is_empty() => checked,
            Ok(_) => return Err(invalid_argument(&errors)),
            Err(card_errors) => {
                errors.extend(
                    card_errors
                        .into_iter()
                        .map(|(field, message)| FieldError::new(field, message)),
                );
                return Err(invalid_argument(&errors));
            }
        };
        let (status, decline_reason) = match checked.verdict {
            Verdict::Approve => (Status::Authorized, ""),
            Verdict::Decline(reason) => (Status::Declined, reason),
            Verdict::ProcessorError => {
                tracing::warn!(payment = %request.payment_id, "the card processor failed");
                return Err(GrpcStatus::unavailable(
                    "the card processor did not answer; retry later",
                ));
            }
        };
        let payment = Payment {
            payment_id: request.payment_id,
            status,
            amount_minor: amount.amount_minor,
            currency: amount.currency,
            last4: checked.last4,
            decline_reason: decline_reason.to_owned(),
        };
        let stored = self
            .store
            .record(&payment, now_ms())
            .await
            .map_err(store_status)?;
        tracing::info!(payment = %stored.payment_id, status = %stored.status, last4 = %stored.last4, "authorization");
        Ok(Response::new(payment_to_proto(stored)))
    }

    async fn capture(
        &self,
        request: Request<proto::PaymentRef>,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        self.transition(request, &[Status::Authorized], Status::Captured, "captured")
            .await
    }

    async fn void(
        &self,
        request: Request<proto::PaymentRef>,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        let payment_id = request.into_inner().payment_id;
        check_key("payment_id", &payment_id)?;
        // Voiding what was never authorized leaves a mark, so a late authorization for the
        // same id takes nothing.
        let tombstone = Payment {
            payment_id: payment_id.clone(),
            status: Status::Voided,
            amount_minor: 0,
            currency: "USD".into(),
            last4: String::new(),
            decline_reason: String::new(),
        };
        if self
            .store
            .get(&payment_id)
            .await
            .map_err(store_status)?
            .is_none()
        {
            let stored = self
                .store
                .record(&tombstone, now_ms())
                .await
                .map_err(store_status)?;
            if stored.status == Status::Voided {
                return Ok(Response::new(payment_to_proto(stored)));
            }
        }
        let payment = self
            .store
            .transition(
                &payment_id,
                &[Status::Authorized, Status::Declined],
                Status::Voided,
                "voided",
                now_ms(),
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(payment_to_proto(payment)))
    }

    async fn refund(
        &self,
        request: Request<proto::PaymentRef>,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        self.transition(request, &[Status::Captured], Status::Refunded, "refunded")
            .await
    }

    async fn get_payment(
        &self,
        request: Request<proto::PaymentRef>,
    ) -> Result<Response<proto::Payment>, GrpcStatus> {
        let payment_id = request.into_inner().payment_id;
        check_key("payment_id", &payment_id)?;
        self.store
            .get(&payment_id)
            .await
            .map_err(store_status)?
            .map(|payment| Response::new(payment_to_proto(payment)))
            .ok_or_else(|| GrpcStatus::not_found(format!("there is no payment {payment_id}")))
    }
}

/// The wire form of a status.
pub fn status_to_proto(status: Status) -> proto::PaymentStatus {
    match status {
        Status::Authorized => proto::PaymentStatus::Authorized,
        Status::Declined => proto::PaymentStatus::Declined,
        Status::Captured => proto::PaymentStatus::Captured,
        Status::Voided => proto::PaymentStatus::Voided,
        Status::Refunded => proto::PaymentStatus::Refunded,
    }
}

fn payment_to_proto(payment: Payment) -> proto::Payment {
    proto::Payment {
        payment_id: payment.payment_id,
        status: status_to_proto(payment.status) as i32,
        last4: payment.last4,
        amount: Some(Money {
            amount_minor: payment.amount_minor,
            currency: payment.currency,
        }),
        decline_reason: payment.decline_reason,
    }
}

fn store_status(error: StoreError) -> GrpcStatus {
    match error {
        StoreError::WrongState { .. } => GrpcStatus::failed_precondition(error.to_string()),
        StoreError::Unknown(_) => GrpcStatus::not_found(error.to_string()),
        StoreError::Corrupt(_) | StoreError::Database(_) => {
            tracing::error!(%error, "payments storage failed");
            GrpcStatus::internal("payments storage failed")
        }
    }
}
