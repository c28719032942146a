//! The inventory service's gRPC API.

use std::time::Duration;

use comb_contracts::inventory::v1 as proto;
use comb_contracts::inventory::v1::inventory_server::Inventory;
use comb_kit::clock::now_ms;
use comb_kit::grpc::{invalid_argument, is_key, key_error};
use comb_kit::problem::FieldError;
use tonic::{Request, Response, Status};

use crate::store::{self, InventoryStore, Line, Reservation, StoreError};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_AVAILABLE: i64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct InventoryApi {
    store: InventoryStore,
    default_ttl: Duration,
}

impl InventoryApi {
    pub fn new(store: InventoryStore, default_ttl: Duration) -> Self {
        Self { store, default_ttl }
    }
}

fn is_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= 32
        && sku
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn check_order_id(order_id: &str, errors: &mut Vec<FieldError>) {
    if !is_key(order_id) {
        errors.push(key_error("order_id"));
    }
}

#[tonic::async_trait]
impl Inventory for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<proto::GetStockRequest>,
    ) -> Result<Response<proto::GetStockResponse>, Status> {
        let skus = request.into_inner().skus;
        if skus.len() > MAX_LINES || !skus.iter().all(|sku| is_sku(sku)) {
            return Err(invalid_argument(&[FieldError::new(
                "skus",
                format!("at most {MAX_LINES} SKUs of upper-case letters, digits and hyphens"),
            )]));
        }
        let levels = self.store.available(&skus).await.map_err(store_status)?;
        Ok(Response::new(proto::GetStockResponse {
            items: levels
                .into_iter()
                .map(|line| proto::StockLevel {
                    sku: line.sku,
                    available: line.quantity,
                })
                .collect(),
        }))
    }

    async fn set_stock(
        &self,
        request: Request<proto::SetStockRequest>,
    ) -> Result<Response<proto::StockLevel>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        if !is_sku(&request.sku) {
            errors.push(FieldError::new(
                "sku",
                "must be 1 to 32 upper-case letters, digits or hyphens",
            ));
        }
        if !(0..=MAX_AVAILABLE).contains(&request.available) {
            errors.push(FieldError::new(
                "available",
                format!("must be between 0 and {MAX_AVAILABLE}"),
            ));
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        self.store
            .set_stock(&request.sku, request.available, now_ms())
            .await
            .map_err(store_status)?;
        tracing::info!(sku = %request.sku, available = request.available, "stock set");
        Ok(Response::new(proto::StockLevel {
            sku: request.sku,
            available: request.available,
        }))
    }

    async fn reserve(
        &self,
        request: Request<proto::ReserveRequest>,
    ) -> Result<Response<proto::Reservation>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        check_order_id(&request.order_id, &mut errors);
        if request.lines.is_empty() || request.lines.len() > MAX_LINES {
            errors.push(FieldError::new(
                "lines",
                format!("must hold 1 to {MAX_LINES} lines"),
            ));
        }
        for (index, line) in request.lines.iter().enumerate() {
            if !is_sku(&line.sku) {
                errors.push(FieldError::new(
                    format!("lines[{index}].sku"),
                    "is not a SKU",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                errors.push(FieldError::new(
                    format!("lines[{index}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let ttl = if request.ttl_secs == 0 {
            self.default_ttl
        } else {
            Duration::from_secs(u64::from(request.ttl_secs))
        };
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let lines: Vec<Line> = request
            .lines
            .into_iter()
            .map(|line| Line {
                sku: line.sku,
                quantity: line.quantity,
            })
            .collect();
        let reservation = self
            .store
            .reserve(&request.order_id, &lines, now, expires)
            .await
            .map_err(store_status)?;
        Ok(Response::new(reservation_to_proto(reservation)))
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::Reservation>, Status> {
        let order_id = request.into_inner().order_id;
        let mut errors = Vec::new();
        check_order_id(&order_id, &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let reservation = self
            .store
            .commit(&order_id, now_ms())
            .await
            .map_err(store_status)?;
        Ok(Response::new(reservation_to_proto(reservation)))
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::Reservation>, Status> {
        let order_id = request.into_inner().order_id;
        let mut errors = Vec::new();
        check_order_id(&order_id, &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let reservation = self
            .store
            .release(&order_id, now_ms())
            .await
            .map_err(store_status)?;
        Ok(Response::new(reservation_to_proto(reservation)))
    }
}

fn reservation_to_proto(reservation: Reservation) -> proto::Reservation {
    let status = match reservation.status {
        store::Status::Reserved => proto::ReservationStatus::Reserved,
        store::Status::Committed => proto::ReservationStatus::Committed,
        store::Status::Released => proto::ReservationStatus::Released,
        store::Status::Expired => proto::ReservationStatus::Expired,
    };
    proto::Reservation {
        order_id: reservation.order_id,
        status: status as i32,
        lines: reservation
            .lines
            .into_iter()
            .map(|line| proto::Line {
                sku: line.sku,
                quantity: line.quantity,
            })
            .collect(),
        expires_at_ms: reservation.expires_at_ms,
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::OutOfStock(_) | StoreError::NotReserved { .. } => {
            Status::failed_precondition(error.to_string())
        }
        StoreError::Unknown(_) => Status::not_found(error.to_string()),
        StoreError::Corrupt(_) | StoreError::Database(_) => {
            tracing::error!(%error, "inventory storage failed");
            Status::internal("inventory storage failed")
        }
    }
}
