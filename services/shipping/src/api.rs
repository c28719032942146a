//! The shipping service's gRPC API and its storage (one table, so kept together).

use comb_contracts::catalog::v1::Money;
use comb_contracts::shipping::v1 as proto;
use comb_contracts::shipping::v1::shipping_server::Shipping;
use comb_kit::clock::now_ms;
use comb_kit::grpc::{check_key, invalid_argument};
use comb_kit::problem::FieldError;
use comb_kit::storage::Database;
use tonic::{Request, Response, Status};

use crate::domain::{Address, AddressInput, Clock, Progress, quote};
use comb_kit::storage::sql;

/// The most items one shipment carries.
pub const MAX_ITEMS: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct ShippingApi {
    db: Database,
    clock: Clock,
}

impl ShippingApi {
    pub fn new(db: Database, clock: Clock) -> Self {
        Self { db, clock }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    async fn find(&self, order_id: &str) -> Result<Option<proto::Shipment>, Status> {
        let row = sql::query(
            "SELECT tracking_id, cost_minor, currency, created_at_ms FROM shipments WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.db)
        .await
        .map_err(storage_failed)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let created_at_ms: i64 = row.try_get("created_at_ms").map_err(storage_failed)?;
        let status = match self.clock.progress(created_at_ms, now_ms()) {
            Progress::Created => proto::ShipmentStatus::Created,
            Progress::Shipped => proto::ShipmentStatus::Shipped,
            Progress::Delivered => proto::ShipmentStatus::Delivered,
        };
        Ok(Some(proto::Shipment {
            order_id: order_id.to_owned(),
            tracking_id: row.try_get("tracking_id").map_err(storage_failed)?,
            status: status as i32,
            cost: Some(Money {
                amount_minor: row.try_get("cost_minor").map_err(storage_failed)?,
                currency: row.try_get("currency").map_err(storage_failed)?,
            }),
            created_at_ms,
        }))
    }
}

fn storage_failed(error: sql::DbError) -> Status {
    tracing::error!(%error, "shipping storage failed");
    Status::internal("shipping storage failed")
}

fn parse_address(address: Option<proto::Address>, item_count: u32) -> Result<Address, Status> {
    let address = address.unwrap_or_default();
    let parsed = Address::parse(&AddressInput {
        name: &address.name,
        line1: &address.line1,
        line2: &address.line2,
        city: &address.city,
        postal_code: &address.postal_code,
        country: &address.country,
    });
    let mut errors = parsed.as_ref().err().cloned().unwrap_or_default();
    if item_count == 0 || item_count > MAX_ITEMS {
        errors.push(FieldError::new(
            "item_count",
            format!("must be 1 to {MAX_ITEMS}"),
        ));
    }
    match parsed {
        Ok(address) if errors.is_empty() => Ok(address),
        _ => Err(invalid_argument(&errors)),
    }
}

#[tonic::async_trait]
impl Shipping for ShippingApi {
    async fn quote(
        &self,
        request: Request<proto::QuoteRequest>,
    ) -> Result<Response<proto::ShippingQuote>, Status> {
        let request = request.into_inner();
        let address = parse_address(request.address, request.item_count)?;
        let (cost, days) = quote(&address.country, request.item_count);
        Ok(Response::new(proto::ShippingQuote {
            cost: Some(Money {
                amount_minor: cost,
                currency: "USD".into(),
            }),
            days,
        }))
    }

    async fn create_shipment(
        &self,
        request: Request<proto::CreateShipmentRequest>,
    ) -> Result<Response<proto::Shipment>, Status> {
        let request = request.into_inner();
        check_key("order_id", &request.order_id)?;
        if let Some(existing) = self.find(&request.order_id).await? {
            return Ok(Response::new(existing));
        }
        let address = parse_address(request.address, request.item_count)?;
        let (cost, _) = quote(&address.country, request.item_count);
        let mut tx = self.db.begin_write().await.map_err(storage_failed)?;
        let tracking_id = format!(
            "CMB{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12].to_uppercase()
        );
        let inserted = sql::query(
            "INSERT INTO shipments (order_id, tracking_id, name, line1, line2, city, postal_code, country, item_count,
             cost_minor, currency, created_at_ms, recipient, email)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'USD', $11, $12, $13) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(request.order_id.as_str())
        .bind(tracking_id.as_str())
        .bind(address.name.as_str())
        .bind(address.line1.as_str())
        .bind(address.line2.as_str())
        .bind(address.city.as_str())
        .bind(address.postal_code.as_str())
        .bind(address.country.as_str())
        .bind(i64::from(request.item_count))
        .bind(cost)
        .bind(now_ms())
        .bind(request.recipient.as_str())
        .bind(request.email.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage_failed)?;
        if inserted.rows_affected() == 1 {
            let created = comb_contracts::events::ShipmentShipped {
                order_id: request.order_id.as_str().into(),
                tracking_id: tracking_id.clone(),
                recipient: request.recipient.clone(),
                email: request.email.clone(),
            };
            crate::publish(
                &self.db,
                &mut tx,
                comb_contracts::events::SHIPMENT_CREATED,
                &created,
            )
            .await
            .map_err(storage_failed)?;
        }
        tx.commit().await.map_err(storage_failed)?;
        let shipment = self
            .find(&request.order_id)
            .await?
            .ok_or_else(|| Status::internal("the shipment was not stored"))?;
        tracing::info!(order = %shipment.order_id, tracking = %shipment.tracking_id, "shipment created");
        Ok(Response::new(shipment))
    }

    async fn get_shipment(
        &self,
        request: Request<proto::GetShipmentRequest>,
    ) -> Result<Response<proto::Shipment>, Status> {
        let order_id = request.into_inner().order_id;
        check_key("order_id", &order_id)?;
        self.find(&order_id)
            .await?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("order {order_id} has no shipment")))
    }
}
