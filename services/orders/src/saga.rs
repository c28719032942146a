//! The checkout saga, orchestrated here:
//!
//! ```text
//! reserve stock ─▶ authorize payment ─▶ confirm: commit stock, capture, ship, empty cart
//!      │                  │
//!      └──── cancel ◀─────┘   compensate: release stock, void the authorization
//! ```
//!
//! Every step is written to the database before it is acted on, every remote call is
//! idempotent (keyed by the order id), transient failures are retried with jittered
//! backoff until the saga's deadline, and an instance that starts resumes every saga left
//! unfinished. Once an order is confirmed it is pushed forward however long that takes;
//! once cancelled, its compensations are retried until they are done.
//!
//! A confirmed order can be refunded later ([`Saga::refund`]): it is cancelled as
//! `refunded` and goes through the same compensation, whose void of a captured payment
//! becomes a refund.
//!
//! The card is needed only to authorize. It is kept in memory, never stored: a saga
//! resumed by another instance (or after a restart) before authorizing cannot authorize,
//! and is cancelled as `payment_failed`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use comb_contracts::cart::v1 as cart;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_contracts::catalog::v1::Money;
use comb_contracts::events;
use comb_contracts::inventory::v1 as inventory;
use comb_contracts::inventory::v1::inventory_client::InventoryClient;
use comb_contracts::payments::v1 as payments;
use comb_contracts::payments::v1::payments_client::PaymentsClient;
use comb_contracts::shipping::v1 as shipping;
use comb_contracts::shipping::v1::shipping_client::ShippingClient;
use comb_kit::clock::{now_ms, rfc3339_from_ms};
use comb_kit::events::Event;
use comb_kit::grpc::Upstream;
use tonic::{Code, Status};

use crate::store::{Order, OrderStatus, OrderStore, PaymentStatus, Step, StoreError};

/// The cancellation reason of a refunded order.
pub const REFUNDED: &str = "refunded";

/// Why an order cannot be refunded.
#[derive(Debug, thiserror::Error)]
pub enum RefundRefused {
    #[error("there is no order {0:?}")]
    NotFound(String),
    #[error("order {id} is {status}; only a confirmed order can be refunded")]
    NotConfirmed { id: String, status: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The services the saga calls.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub cart: Arc<Upstream>,
    pub inventory: Arc<Upstream>,
    pub payments: Arc<Upstream>,
    pub shipping: Arc<Upstream>,
}

/// How long a saga may take before an unpaid order is cancelled, and how long a
/// reservation outlives that deadline.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub deadline: Duration,
    pub reservation_margin: Duration,
}

/// What one step decided.
enum Outcome {
    /// Write this progress and go on.
    Advance(Box<Order>),
    /// A transient failure: try the same step again after a pause.
    Retry,
}

/// Drives sagas: one task per order, at most one per order in this instance.
pub struct Saga {
    store: OrderStore,
    upstreams: Upstreams,
    timing: Timing,
    cards: Mutex<HashMap<String, payments::Card>>,
    driving: Mutex<HashSet<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a failed call may succeed if tried again: anything but the callee's verdict on
/// the request itself. A callee's internal failure (a database hiccup) is retried too: a
/// saga must not cancel a healthy order, or drop a compensation, because of one.
fn transient(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// The event a step's progress announces: a confirmation when the order is confirmed, a
/// cancellation when it is cancelled (not again when its compensations finish).
fn announcement(next: &Order, from: Step) -> Option<Event> {
    let lines = || {
        next.lines
            .iter()
            .map(|line| events::OrderLine {
                product_id: line.product_id.as_str().into(),
                sku: line.sku.as_str().into(),
                title: line.title.clone(),
                quantity: line.quantity.into(),
                unit_price_minor: line.unit_price_minor,
                line_total_minor: line.line_total_minor,
                digital: line.digital,
            })
            .collect()
    };
    let event = match (next.status, next.step) {
        (OrderStatus::Confirmed, Step::Done) => Event::new(
            "orders",
            events::ORDER_CONFIRMED,
            &next.id,
            &events::OrderConfirmed {
                order_id: next.id.as_str().into(),
                owner: next.owner.clone(),
                email: next.email.clone(),
                lines: lines(),
                subtotal_minor: next.subtotal_minor,
                shipping_minor: next.shipping_minor,
                total_minor: next.total_minor,
                currency: next.currency.clone(),
                tracking_id: next.tracking_id.clone(),
                placed_at: rfc3339_from_ms(next.created_at_ms),
            },
        ),
        (OrderStatus::Cancelled, Step::Compensate) if from != Step::Compensate => Event::new(
            "orders",
            events::ORDER_CANCELLED,
            &next.id,
            &events::OrderCancelled {
                order_id: next.id.as_str().into(),
                owner: next.owner.clone(),
                email: next.email.clone(),
                reason: next.cancel_reason.clone(),
                lines: lines(),
                total_minor: next.total_minor,
                currency: next.currency.clone(),
                placed_at: rfc3339_from_ms(next.created_at_ms),
            },
        ),
        _ => return None,
    };
    match event {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::error!(order = %next.id, %error, "cannot encode the order's event");
            None
        }
    }
}

/// Business metrics for an order's final outcome: counted once, when the saga step that
/// decides it is written (confirmation, or the move into compensation).
fn record_outcome(next: &Order, from: Step) {
    let took = (now_ms() - next.created_at_ms).max(0) as f64 / 1000.0;
    match (next.status, next.step) {
        (OrderStatus::Confirmed, Step::Done) => {
            metrics::counter!("comb_orders_confirmed_total").increment(1);
            metrics::counter!("comb_revenue_minor_total", "currency" => next.currency.clone())
                .increment(u64::try_from(next.total_minor).unwrap_or(0));
            metrics::histogram!("comb_saga_duration_seconds", "outcome" => "confirmed")
                .record(took);
        }
        (OrderStatus::Cancelled, Step::Compensate) if from != Step::Compensate => {
            metrics::counter!("comb_orders_cancelled_total", "reason" => next.cancel_reason.clone()).increment(1);
            metrics::histogram!("comb_saga_duration_seconds", "outcome" => "cancelled")
                .record(took);
        }
        _ => {}
    }
}

/// Jittered exponential backoff: 100 ms doubling to 2 s, each wait 50–100% of that.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1 << attempt.min(5)).min(2_000);
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    Duration::from_millis((ceiling as f64 * jitter) as u64)
}

// Written by hand so the cards it holds can never reach a log through `{:?}`.
impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Saga {
    pub fn new(store: OrderStore, upstreams: Upstreams, timing: Timing) -> Arc<Self> {
        Arc::new(Self {
            store,
            upstreams,
            timing,
            cards: Mutex::new(HashMap::new()),
            driving: Mutex::new(HashSet::new()),
        })
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Keeps the card of a new order for its authorization.
    pub fn hold_card(&self, order_id: &str, card: payments::Card) {
        lock(&self.cards).insert(order_id.to_owned(), card);
    }

    /// Drives an order's saga until nothing is left to do, and answers with the order as
    /// it ended (`None` when another driver has it, or it is gone). Returns at once if
    /// this instance is driving it already.
    pub async fn drive(self: Arc<Self>, order_id: String) -> Option<Order> {
        if !lock(&self.driving).insert(order_id.clone()) {
            return None;
        }
        let mut attempt = 0;
        // The order as this driver last wrote it; read again only when that is unknown.
        let mut known: Option<Order> = None;
        let mut finished = None;
        loop {
            let order = match known.take() {
                Some(order) => order,
                None => match self.store.get(&order_id).await {
                    Ok(Some(order)) => order,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(order = %order_id, %error, "cannot read the order; will retry");
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                },
            };
            let step = order.step;
            let outcome = match step {
                Step::Reserve => self.reserve(order).await,
                Step::Authorize => self.authorize(order).await,
                Step::Confirm => self.confirm(order).await,
                Step::Compensate => self.compensate(order).await,
                Step::Done => {
                    finished = Some(order);
                    break;
                }
            };
            match outcome {
                Outcome::Advance(next) => {
                    attempt = 0;
                    let event = announcement(&next, step);
                    match self
                        .store
                        .advance(&next, step, now_ms(), event.as_ref())
                        .await
                    {
                        Ok(true) => {
                            if next.step != Step::Authorize {
                                lock(&self.cards).remove(&order_id);
                            }
                            record_outcome(&next, step);
                            if next.step == Step::Done || next.step == Step::Compensate {
                                tracing::info!(
                                    order = %order_id,
                                    status = next.status.as_str(),
                                    reason = %next.cancel_reason,
                                    "saga step: {} → {}",
                                    step.as_str(),
                                    next.step.as_str()
                                );
                            }
                            known = Some(*next);
                        }
                        // Another driver moved it on; read it again.
                        Ok(false) => {}
                        Err(error) => {
                            tracing::warn!(order = %order_id, %error, "cannot write saga progress; will retry");
                            tokio::time::sleep(backoff(1)).await;
                        }
                    }
                }
                Outcome::Retry => {
                    attempt += 1;
                    // A heartbeat: other instances leave a saga alone while it is driven.
                    let _ = self.store.touch(&order_id, now_ms()).await;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        lock(&self.driving).remove(&order_id);
        lock(&self.cards).remove(&order_id);
        finished
    }

    /// Refunds a confirmed order: written as CANCELLED (`refunded`) with its payment to
    /// give back, announced (so media revokes its downloads), then compensated here, where
    /// the void of a captured payment becomes a refund. Its stock stays committed: shipped
    /// goods are not taken back. An order refunded already is answered as it stands (its
    /// compensation driven on if an earlier call was interrupted).
    pub async fn refund(self: Arc<Self>, order_id: &str) -> Result<Order, RefundRefused> {
        loop {
            let order = self
                .store
                .get(order_id)
                .await?
                .ok_or_else(|| RefundRefused::NotFound(order_id.to_owned()))?;
            match (order.status, order.step) {
                (OrderStatus::Cancelled, _) if order.cancel_reason == REFUNDED => break,
                (OrderStatus::Confirmed, Step::Done) => {}
                (status, _) => {
                    return Err(RefundRefused::NotConfirmed {
                        id: order.id,
                        status: status.as_str(),
                    });
                }
            }
            let mut refunded = order;
            refunded.status = OrderStatus::Cancelled;
            refunded.cancel_reason = REFUNDED.to_owned();
            refunded.step = Step::Compensate;
            refunded.release_pending = false;
            refunded.void_pending = true;
            let event = announcement(&refunded, Step::Done);
            if self
                .store
                .advance(&refunded, Step::Done, now_ms(), event.as_ref())
                .await?
            {
                tracing::info!(order = %order_id, total = refunded.total_minor, "order refunded");
                metrics::counter!("comb_orders_cancelled_total", "reason" => REFUNDED).increment(1);
                break;
            }
            // Changed meanwhile (refunded by another call): look again.
        }
        if let Some(finished) = Arc::clone(&self).drive(order_id.to_owned()).await {
            return Ok(finished);
        }
        // Driven by another task right now: the order as it stands.
        self.store
            .get(order_id)
            .await?
            .ok_or_else(|| RefundRefused::NotFound(order_id.to_owned()))
    }

    pub fn is_driving(&self, order_id: &str) -> bool {
        lock(&self.driving).contains(order_id)
    }

    fn past_deadline(order: &Order) -> bool {
        now_ms() > order.deadline_at_ms
    }

    /// The order, cancelled for `reason`, with its compensations owed.
    fn cancel(mut order: Order, reason: &str, void: bool) -> Outcome {
        order.status = OrderStatus::Cancelled;
        order.cancel_reason = reason.to_owned();
        order.step = Step::Compensate;
        order.release_pending = order.ships();
        order.void_pending = void;
        Outcome::Advance(Box::new(order))
    }

    fn advance(mut order: Order, step: Step) -> Outcome {
        order.step = step;
        Outcome::Advance(Box::new(order))
    }

    async fn reserve(&self, order: Order) -> Outcome {
        if Self::past_deadline(&order) {
            return Self::cancel(order, "deadline_exceeded", false);
        }
        // Downloads take no stock.
        if !order.ships() {
            return Self::advance(order, Step::Authorize);
        }
        let remaining =
            Duration::from_millis(u64::try_from(order.deadline_at_ms - now_ms()).unwrap_or(0));
        let ttl = remaining + self.timing.reservation_margin;
        let request = inventory::ReserveRequest {
            order_id: order.id.clone(),
            lines: order
                .physical_lines()
                .map(|line| inventory::Line {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                })
                .collect(),
            ttl_secs: u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        match InventoryClient::new(self.upstreams.inventory.channel())
            .reserve(request)
            .await
        {
            Ok(reply) => match inventory::ReservationStatus::try_from(reply.into_inner().status) {
                Ok(inventory::ReservationStatus::Reserved) => Self::advance(order, Step::Authorize),
                Ok(inventory::ReservationStatus::Committed) => Self::advance(order, Step::Confirm),
                // Released or expired before this saga got here: the stock is gone.
                _ => Self::cancel(order, "deadline_exceeded", false),
            },
            Err(status) if status.code() == Code::FailedPrecondition => {
                Self::cancel(order, "out_of_stock", false)
            }
            Err(status) if transient(&status) => Outcome::Retry,
            Err(status) => {
                tracing::error!(order = %order.id, code = ?status.code(), message = status.message(), "inventory refused the reservation");
                Self::cancel(order, "out_of_stock", false)
            }
        }
    }

    async fn authorize(&self, mut order: Order) -> Outcome {
        let Some(card) = lock(&self.cards).get(&order.id).cloned() else {
            tracing::warn!(order = %order.id, "the card is no longer held (resumed saga); cancelling");
            return Self::cancel(order, "payment_failed", true);
        };
        if Self::past_deadline(&order) {
            return Self::cancel(order, "payment_failed", true);
        }
        let request = payments::AuthorizeRequest {
            payment_id: order.id.clone(),
            card: Some(card),
            amount: Some(Money {
                amount_minor: order.total_minor,
                currency: order.currency.clone(),
            }),
        };
        match PaymentsClient::new(self.upstreams.payments.channel())
            .authorize(request)
            .await
        {
            Ok(reply) => match payments::PaymentStatus::try_from(reply.into_inner().status) {
                Ok(payments::PaymentStatus::Authorized) => {
                    order.payment_status = PaymentStatus::Authorized;
                    Self::advance(order, Step::Confirm)
                }
                Ok(payments::PaymentStatus::Captured) => {
                    order.payment_status = PaymentStatus::Captured;
                    Self::advance(order, Step::Confirm)
                }
                Ok(payments::PaymentStatus::Declined) => {
                    order.payment_status = PaymentStatus::Declined;
                    Self::cancel(order, "payment_declined", false)
                }
                _ => Self::cancel(order, "payment_failed", true),
            },
            Err(status) if status.code() == Code::InvalidArgument => {
                order.payment_status = PaymentStatus::Declined;
                Self::cancel(order, "payment_declined", false)
            }
            Err(status) if transient(&status) => Outcome::Retry,
            Err(status) => {
                tracing::error!(order = %order.id, code = ?status.code(), message = status.message(), "payments failed");
                Self::cancel(order, "payment_failed", true)
            }
        }
    }

    /// Commit the stock, capture the payment, create the shipment and empty the cart.
    /// Past authorization the order only goes forward, however long that takes.
    async fn confirm(&self, mut order: Order) -> Outcome {
        if order.ships() {
            let commit = InventoryClient::new(self.upstreams.inventory.channel())
                .commit(inventory::CommitRequest {
                    order_id: order.id.clone(),
                })
                .await;
            match commit {
                Ok(_) => {}
                Err(status) if transient(&status) => return Outcome::Retry,
                Err(status) => {
                    tracing::error!(order = %order.id, message = status.message(), "the reservation could not be committed");
                    return Self::cancel(order, "out_of_stock", true);
                }
            }
        }
        // The stock is the buyer's now; the rest does not depend on each other, so it runs
        // at once.
        let capture = async {
            if order.payment_status == PaymentStatus::Captured {
                return Ok(None);
            }
            PaymentsClient::new(self.upstreams.payments.channel())
                .capture(payments::PaymentRef {
                    payment_id: order.id.clone(),
                })
                .await
                .map(|_| Some(PaymentStatus::Captured))
        };
        let ship = async {
            if !order.tracking_id.is_empty() || !order.ships() {
                return Ok(None);
            }
            let address = &order.address;
            let request = shipping::CreateShipmentRequest {
                order_id: order.id.clone(),
                address: Some(shipping::Address {
                    name: address.name.clone(),
                    line1: address.line1.clone(),
                    line2: address.line2.clone(),
                    city: address.city.clone(),
                    postal_code: address.postal_code.clone(),
                    country: address.country.clone(),
                }),
                item_count: u32::try_from(order.item_count()).unwrap_or(u32::MAX),
                recipient: order.owner.clone(),
                email: order.email.clone(),
            };
            ShippingClient::new(self.upstreams.shipping.channel())
                .create_shipment(request)
                .await
                .map(|reply| Some(reply.into_inner().tracking_id))
        };
        let clear = async {
            CartClient::new(self.upstreams.cart.channel())
                .clear(cart::ClearRequest {
                    owner: order.owner.clone(),
                })
                .await
        };
        let (captured, shipped, cleared) = tokio::join!(capture, ship, clear);
        match captured {
            Ok(Some(status)) => order.payment_status = status,
            Ok(None) => {}
            Err(status) if transient(&status) => return Outcome::Retry,
            Err(status) => {
                tracing::error!(order = %order.id, message = status.message(), "the payment could not be captured");
                return Self::cancel(order, "payment_failed", true);
            }
        }
        match shipped {
            Ok(Some(tracking_id)) => order.tracking_id = tracking_id,
            Ok(None) => {}
            Err(status) if transient(&status) => return Outcome::Retry,
            Err(status) => {
                // The address was checked at checkout; keep the order, log the anomaly.
                tracing::error!(order = %order.id, message = status.message(), "the shipment could not be created");
            }
        }
        if let Err(status) = cleared {
            tracing::warn!(order = %order.id, message = status.message(), "the cart could not be emptied after checkout");
        }
        order.status = OrderStatus::Confirmed;
        Self::advance(order, Step::Done)
    }

    /// Gives back what a cancelled order took: its reservation and its authorization.
    async fn compensate(&self, mut order: Order) -> Outcome {
        if order.release_pending {
            let released = InventoryClient::new(self.upstreams.inventory.channel())
                .release(inventory::ReleaseRequest {
                    order_id: order.id.clone(),
                })
                .await;
            match released {
                Ok(_) => order.release_pending = false,
                Err(status) if transient(&status) => return Outcome::Retry,
                Err(status) => {
                    tracing::error!(order = %order.id, message = status.message(), "the reservation could not be released");
                    order.release_pending = false;
                }
            }
        }
        if order.void_pending {
            let mut client = PaymentsClient::new(self.upstreams.payments.channel());
            let reference = payments::PaymentRef {
                payment_id: order.id.clone(),
            };
            match client.void(reference.clone()).await {
                Ok(_) => {
                    if order.payment_status == PaymentStatus::Authorized {
                        order.payment_status = PaymentStatus::Voided;
                    }
                    order.void_pending = false;
                }
                // Captured already: give the money back instead.
                Err(status) if status.code() == Code::FailedPrecondition => {
                    match client.refund(reference).await {
                        Ok(_) => {
                            order.payment_status = PaymentStatus::Refunded;
                            order.void_pending = false;
                        }
                        Err(status) if transient(&status) => return Outcome::Retry,
                        Err(status) => {
                            tracing::error!(order = %order.id, message = status.message(), "the payment could not be refunded");
                            order.void_pending = false;
                        }
                    }
                }
                Err(status) if transient(&status) => return Outcome::Retry,
                Err(status) => {
                    tracing::error!(order = %order.id, message = status.message(), "the payment could not be voided");
                    order.void_pending = false;
                }
            }
        }
        Self::advance(order, Step::Done)
    }
}
