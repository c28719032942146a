//! The orders service's gRPC API: checkout (which starts the saga) and order history.

use std::sync::Arc;
use std::time::Duration;

use comb_contracts::cards;
use comb_contracts::cart::v1 as cart;
use comb_contracts::cart::v1::cart_client::CartClient;
use comb_contracts::catalog::v1::Money;
use comb_contracts::events;
use comb_contracts::orders::v1 as proto;
use comb_contracts::orders::v1::orders_server::Orders;
use comb_contracts::shipping::v1 as shipping;
use comb_contracts::shipping::v1::shipping_client::ShippingClient;
use comb_kit::events::Event;
use comb_kit::grpc::{callee_failed, field_errors, invalid_argument, is_key};
use comb_kit::problem::FieldError;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use comb_kit::clock::{now_ms, rfc3339_from_ms};

use crate::saga::{RefundRefused, Saga, Upstreams};
use crate::store::{
    Address, Line, Order, OrderStatus, OrderStore, PaymentStatus, Step, StoreError,
};

/// How long reading an order waits for its shipment's live status.
const SHIPMENT_LOOKUP: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct OrdersApi {
    store: OrderStore,
    saga: Arc<Saga>,
    upstreams: Upstreams,
    /// How long a checkout call waits for its saga before answering PENDING.
    inline_wait: Duration,
}

impl OrdersApi {
    pub fn new(
        store: OrderStore,
        saga: Arc<Saga>,
        upstreams: Upstreams,
        inline_wait: Duration,
    ) -> Self {
        Self {
            store,
            saga,
            upstreams,
            inline_wait,
        }
    }

    async fn to_proto(&self, order: Order) -> proto::Order {
        let shipment = if order.tracking_id.is_empty() {
            proto::ShipmentState::None
        } else {
            // Bounded tightly: a slow shipping service must not hold up order reads.
            let mut shipping_client = ShippingClient::new(self.upstreams.shipping.channel());
            let lookup = shipping_client.get_shipment(shipping::GetShipmentRequest {
                order_id: order.id.clone(),
            });
            let status = match tokio::time::timeout(SHIPMENT_LOOKUP, lookup).await {
                Ok(Ok(reply)) => shipping::ShipmentStatus::try_from(reply.into_inner().status).ok(),
                _ => None,
            };
            match status {
                Some(shipping::ShipmentStatus::Shipped) => proto::ShipmentState::Shipped,
                Some(shipping::ShipmentStatus::Delivered) => proto::ShipmentState::Delivered,
                // Shipping unreachable: the order is still shown, its shipment as last known.
                _ => proto::ShipmentState::Created,
            }
        };
        order_to_proto(order, shipment)
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn order_to_proto(order: Order, shipment: proto::ShipmentState) -> proto::Order {
    let status = match order.status {
        OrderStatus::Pending => proto::OrderStatus::Pending,
        OrderStatus::Confirmed => proto::OrderStatus::Confirmed,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    };
    let payment = match order.payment_status {
        PaymentStatus::None => proto::PaymentState::None,
        PaymentStatus::Authorized => proto::PaymentState::Authorized,
        PaymentStatus::Captured => proto::PaymentState::Captured,
        PaymentStatus::Declined => proto::PaymentState::Declined,
        PaymentStatus::Voided => proto::PaymentState::Voided,
        PaymentStatus::Refunded => proto::PaymentState::Refunded,
    };
    // The deprecated text forms, for readers that know only those.
    let shipment_status = match shipment {
        proto::ShipmentState::Created => "created",
        proto::ShipmentState::Shipped => "shipped",
        proto::ShipmentState::Delivered => "delivered",
        proto::ShipmentState::None | proto::ShipmentState::Unspecified => "",
    };
    let created_at = rfc3339_from_ms(order.created_at_ms);
    proto::Order {
        lines: order
            .lines
            .iter()
            .map(|line| proto::OrderLine {
                product_id: line.product_id.clone(),
                sku: line.sku.clone(),
                title: line.title.clone(),
                quantity: line.quantity,
                unit_price: money(line.unit_price_minor, &order.currency),
                line_total: money(line.line_total_minor, &order.currency),
                digital: line.digital,
            })
            .collect(),
        subtotal: money(order.subtotal_minor, &order.currency),
        shipping: money(order.shipping_minor, &order.currency),
        total: money(order.total_minor, &order.currency),
        id: order.id,
        owner: order.owner,
        email: order.email,
        status: status as i32,
        cancel_reason: order.cancel_reason,
        payment_last4: order.payment_last4,
        payment_status: order.payment_status.as_str().to_owned(),
        payment_state: payment as i32,
        tracking_id: order.tracking_id,
        shipment_status: shipment_status.to_owned(),
        shipment_state: shipment as i32,
        created_at,
    }
}

fn is_token(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
}

fn check_email(email: &str) -> bool {
    let email = email.trim();
    email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
        && !email.chars().any(char::is_whitespace)
}

fn store_status(error: StoreError) -> Status {
    tracing::error!(%error, "orders storage failed");
    Status::internal("orders storage failed")
}

#[tonic::async_trait]
impl Orders for OrdersApi {
    async fn place_order(
        &self,
        request: Request<proto::PlaceOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        if !is_key(&request.owner) {
            errors.push(FieldError::new("owner", "must be a user or guest id"));
        }
        if !is_token(&request.idempotency_key, 128) {
            errors.push(FieldError::new(
                "idempotency_key",
                "must be 1 to 128 visible ASCII characters",
            ));
        }
        if !check_email(&request.email) {
            errors.push(FieldError::new(
                "email",
                "must be an email address for the order's confirmation",
            ));
        }
        let card = request.card.clone().unwrap_or_default();
        let today = OffsetDateTime::now_utc();
        let checked = cards::check(
            &card.number,
            card.exp_month,
            card.exp_year,
            &card.cvc,
            (
                u32::try_from(today.year()).unwrap_or(0),
                u32::from(u8::from(today.month())),
            ),
        );
        let last4 =
            match checked {
                Ok(checked) => checked.last4,
                Err(card_errors) => {
                    errors.extend(card_errors.into_iter().map(|(field, message)| {
                        FieldError::new(format!("payment.{field}"), message)
                    }));
                    String::new()
                }
            };
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        if let Some(existing) = self
            .store
            .by_key(&request.owner, &request.idempotency_key)
            .await
            .map_err(store_status)?
        {
            return Ok(Response::new(self.to_proto(existing).await));
        }

        let view = CartClient::new(self.upstreams.cart.channel())
            .get_cart(cart::GetCartRequest {
                owner: request.owner.clone(),
            })
            .await
            .map_err(|status| callee_failed("cart", &status))?
            .into_inner();
        if view.lines.is_empty() {
            return Err(Status::failed_precondition(
                "the cart is empty: add products before checking out",
            ));
        }
        let currency = view.total.clone().unwrap_or_default().currency;
        let lines: Vec<Line> = view
            .lines
            .into_iter()
            .map(|line| Line {
                product_id: line.product_id,
                sku: line.sku,
                title: line.title,
                quantity: line.quantity,
                unit_price_minor: line.unit_price.unwrap_or_default().amount_minor,
                line_total_minor: line.line_total.unwrap_or_default().amount_minor,
                digital: line.digital,
            })
            .collect();
        let item_count: i64 = lines
            .iter()
            .filter(|line| !line.digital)
            .map(|line| line.quantity)
            .sum();
        if item_count > 0 && request.shipping_address.is_none() {
            return Err(invalid_argument(&[FieldError::new(
                "shipping_address",
                "is required: the cart holds something to ship",
            )]));
        }
        let address = request.shipping_address.unwrap_or_default();
        // Downloads alone need no address and cost nothing to ship.
        let quote = if item_count == 0 {
            shipping::ShippingQuote {
                cost: Some(comb_contracts::catalog::v1::Money {
                    amount_minor: 0,
                    currency: currency.clone(),
                }),
                ..shipping::ShippingQuote::default()
            }
        } else {
            ShippingClient::new(self.upstreams.shipping.channel())
                .quote(shipping::QuoteRequest {
                    address: Some(address.clone()),
                    item_count: u32::try_from(item_count).unwrap_or(u32::MAX),
                })
                .await
                .map_err(|status| match field_errors(&status) {
                    // The shipping service names address fields `address.*`; the caller sent them
                    // as `shipping_address.*`.
                    Some(errors) => invalid_argument(
                        &errors
                            .into_iter()
                            .map(|error| {
                                FieldError::new(
                                    error.field.replacen("address.", "shipping_address.", 1),
                                    error.message,
                                )
                            })
                            .collect::<Vec<_>>(),
                    ),
                    None => callee_failed("shipping", &status),
                })?
                .into_inner()
        };
        let subtotal: i64 = lines.iter().map(|line| line.line_total_minor).sum();
        let quoted = quote.cost.unwrap_or_default();
        // One currency per order: a price is never added to an amount in another currency.
        if quoted.currency != currency {
            return Err(Status::failed_precondition(format!(
                "shipping is quoted in {} and this cart is priced in {currency}, which cannot be added up: only carts priced in {} can be checked out",
                quoted.currency, quoted.currency
            )));
        }
        let shipping_cost = quoted.amount_minor;
        let now = now_ms();
        let deadline = i64::try_from(self.saga.timing().deadline.as_millis()).unwrap_or(i64::MAX);
        let order = Order {
            id: uuid::Uuid::now_v7().to_string(),
            owner: request.owner,
            idempotency_key: request.idempotency_key,
            email: request.email.trim().to_owned(),
            status: OrderStatus::Pending,
            step: Step::Reserve,
            cancel_reason: String::new(),
            lines,
            subtotal_minor: subtotal,
            shipping_minor: shipping_cost,
            total_minor: subtotal + shipping_cost,
            currency,
            address: Address {
                name: address.name,
                line1: address.line1,
                line2: address.line2,
                city: address.city,
                postal_code: address.postal_code,
                country: address.country.trim().to_ascii_uppercase(),
            },
            payment_last4: last4,
            payment_status: PaymentStatus::None,
            tracking_id: String::new(),
            release_pending: false,
            void_pending: false,
            deadline_at_ms: now.saturating_add(deadline),
            created_at_ms: now,
        };
        let placed = Event::new(
            "orders",
            events::ORDER_PLACED,
            &order.id,
            &events::OrderPlaced {
                order_id: order.id.as_str().into(),
                owner: order.owner.clone(),
                lines: order
                    .lines
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
                    .collect(),
                total_minor: order.total_minor,
                currency: order.currency.clone(),
                placed_at: rfc3339_from_ms(order.created_at_ms),
            },
        )
        .map_err(|error| store_status(StoreError::Corrupt(error.to_string())))?;
        let (stored, created) = self
            .store
            .create(&order, now, &placed)
            .await
            .map_err(store_status)?;
        if created {
            tracing::info!(order = %stored.id, owner = %stored.owner, total = stored.total_minor, "order placed");
            metrics::counter!("comb_orders_placed_total").increment(1);
            self.saga.hold_card(&stored.id, card);
            // The saga outlives this call when it has to wait; its span keeps it in the
            // checkout's trace either way.
            let saga_span =
                tracing::info_span!("saga", otel.name = "checkout saga", order = %stored.id);
            let driving = tokio::spawn(
                Arc::clone(&self.saga)
                    .drive(stored.id.clone())
                    .instrument(saga_span),
            );
            // Answer as soon as the saga is done, or with PENDING when it takes longer.
            if let Ok(Ok(Some(finished))) = tokio::time::timeout(self.inline_wait, driving).await {
                // Its shipment, if any, was created just now.
                let shipment = if finished.tracking_id.is_empty() {
                    proto::ShipmentState::None
                } else {
                    proto::ShipmentState::Created
                };
                return Ok(Response::new(order_to_proto(finished, shipment)));
            }
        }
        let current = self
            .store
            .get(&stored.id)
            .await
            .map_err(store_status)?
            .unwrap_or(stored);
        Ok(Response::new(self.to_proto(current).await))
    }

    async fn get_order(
        &self,
        request: Request<proto::GetOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let request = request.into_inner();
        let not_found = || Status::not_found(format!("there is no order {:?}", request.order_id));
        if !is_key(&request.order_id) {
            return Err(not_found());
        }
        let order = self
            .store
            .get(&request.order_id)
            .await
            .map_err(store_status)?
            // An empty owner is nobody, never everybody: reading any order takes the flag.
            .filter(|order| {
                request.any_owner || (!request.owner.is_empty() && order.owner == request.owner)
            })
            .ok_or_else(not_found)?;
        Ok(Response::new(self.to_proto(order).await))
    }

    async fn refund_order(
        &self,
        request: Request<proto::RefundOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let order_id = request.into_inner().order_id;
        if !is_key(&order_id) {
            return Err(Status::not_found(format!("there is no order {order_id:?}")));
        }
        match Arc::clone(&self.saga).refund(&order_id).await {
            Ok(order) => Ok(Response::new(self.to_proto(order).await)),
            Err(RefundRefused::NotFound(id)) => {
                Err(Status::not_found(format!("there is no order {id:?}")))
            }
            Err(refused @ RefundRefused::NotConfirmed { .. }) => {
                Err(Status::failed_precondition(refused.to_string()))
            }
            Err(RefundRefused::Store(error)) => Err(store_status(error)),
        }
    }

    async fn list_orders(
        &self,
        request: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        let owner = request.into_inner().owner;
        if !is_key(&owner) {
            return Err(invalid_argument(&[FieldError::new(
                "owner",
                "must be a user or guest id",
            )]));
        }
        let orders = self.store.list(&owner, 100).await.map_err(store_status)?;
        let mut items = Vec::with_capacity(orders.len());
        for order in orders {
            items.push(self.to_proto(order).await);
        }
        Ok(Response::new(proto::ListOrdersResponse { items }))
    }
}
