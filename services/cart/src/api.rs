//! The cart service's gRPC API. Products are checked against the catalog when added, and
//! carts are priced from the catalog when read.

use std::sync::Arc;

use comb_contracts::cart::v1 as proto;
use comb_contracts::cart::v1::cart_server::Cart;
use comb_contracts::catalog::v1 as catalog;
use comb_contracts::catalog::v1::catalog_client::CatalogClient;
use comb_kit::clock::now_ms;
use comb_kit::grpc::{Upstream, callee_failed, invalid_argument, is_key, key_error};
use comb_kit::problem::FieldError;
use tonic::{Request, Response, Status};

use crate::store::{CartStore, MAX_QUANTITY, StoreError};

#[derive(Debug, Clone)]
pub struct CartApi {
    store: CartStore,
    catalog: Arc<Upstream>,
}

impl CartApi {
    pub fn new(store: CartStore, catalog: Arc<Upstream>) -> Self {
        Self { store, catalog }
    }

    async fn products(&self, ids: Vec<String>) -> Result<Vec<catalog::Product>, Status> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let response = CatalogClient::new(self.catalog.channel())
            .get_products(catalog::GetProductsRequest { ids })
            .await
            .map_err(|status| callee_failed("the catalog", &status))?;
        Ok(response.into_inner().items)
    }

    /// Adds `quantity` of a product to `owner`'s line (`add`), or sets the line to it (0
    /// removing it), then answers the cart. A product the line would hold must exist.
    async fn change(
        &self,
        owner: String,
        product_id: String,
        quantity: i64,
        add: bool,
    ) -> Result<Response<proto::CartView>, Status> {
        let product = if quantity > 0 {
            self.products(vec![product_id.clone()]).await?
        } else {
            Vec::new()
        };
        if quantity > 0 && product.is_empty() {
            return Err(invalid_argument(&[FieldError::new(
                "product_id",
                "there is no such product",
            )]));
        }
        self.store
            .change(&owner, &product_id, quantity, add, now_ms())
            .await
            .map_err(store_status)?;
        self.view_knowing(&owner, product).await
    }

    /// The cart of `owner`, each line priced at the catalog's current price.
    async fn view(&self, owner: &str) -> Result<Response<proto::CartView>, Status> {
        self.view_knowing(owner, Vec::new()).await
    }

    /// The same, asking the catalog only for the products not `known` already (a product
    /// just looked up to check it exists).
    async fn view_knowing(
        &self,
        owner: &str,
        known: Vec<catalog::Product>,
    ) -> Result<Response<proto::CartView>, Status> {
        let lines = self.store.lines(owner).await.map_err(store_status)?;
        let unknown: Vec<String> = lines
            .iter()
            .filter(|line| !known.iter().any(|product| product.id == line.product_id))
            .map(|line| line.product_id.clone())
            .collect();
        let mut products = known;
        products.extend(self.products(unknown).await?);
        let mut priced = Vec::with_capacity(lines.len());
        let mut total: Option<catalog::Money> = None;
        for line in lines {
            let Some(product) = products
                .iter()
                .find(|product| product.id == line.product_id)
            else {
                tracing::warn!(product = %line.product_id, "a cart line's product is no longer in the catalog");
                continue;
            };
            let price = product.price.clone().unwrap_or_default();
            // A download is bought once, whatever quantity the line was given.
            let digital = product
                .media
                .as_ref()
                .is_some_and(|media| media.downloadable);
            let quantity = if digital { 1 } else { line.quantity };
            let line_total = catalog::Money {
                amount_minor: price.amount_minor.saturating_mul(quantity),
                currency: price.currency.clone(),
            };
            let sum = total.get_or_insert_with(|| catalog::Money {
                amount_minor: 0,
                currency: price.currency.clone(),
            });
            if sum.currency != price.currency {
                return Err(Status::failed_precondition("the cart mixes currencies"));
            }
            sum.amount_minor = sum.amount_minor.saturating_add(line_total.amount_minor);
            priced.push(proto::CartLine {
                product_id: line.product_id,
                sku: product.sku.clone(),
                title: product.title.clone(),
                quantity,
                unit_price: Some(price),
                line_total: Some(line_total),
                digital,
            });
        }
        Ok(Response::new(proto::CartView {
            owner: owner.to_owned(),
            lines: priced,
            total: Some(total.unwrap_or_else(|| catalog::Money {
                amount_minor: 0,
                currency: "USD".into(),
            })),
        }))
    }
}

fn check_owner(owner: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !is_key(owner) {
        errors.push(key_error(field));
    }
}

fn is_product_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn check(owner: &str, product_id: &str, quantity: i64, least: i64) -> Result<(), Status> {
    let mut errors = Vec::new();
    check_owner(owner, "owner", &mut errors);
    if !is_product_id(product_id) {
        errors.push(FieldError::new("product_id", "there is no such product"));
    }
    if !(least..=MAX_QUANTITY).contains(&quantity) {
        errors.push(FieldError::new(
            "quantity",
            format!("must be a whole number from {least} to {MAX_QUANTITY}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_argument(&errors))
    }
}

#[tonic::async_trait]
impl Cart for CartApi {
    async fn get_cart(
        &self,
        request: Request<proto::GetCartRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let owner = request.into_inner().owner;
        let mut errors = Vec::new();
        check_owner(&owner, "owner", &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        self.view(&owner).await
    }

    async fn add_item(
        &self,
        request: Request<proto::AddItemRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let request = request.into_inner();
        check(&request.owner, &request.product_id, request.quantity, 1)?;
        self.change(request.owner, request.product_id, request.quantity, true)
            .await
    }

    async fn set_quantity(
        &self,
        request: Request<proto::SetQuantityRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let request = request.into_inner();
        check(&request.owner, &request.product_id, request.quantity, 0)?;
        self.change(request.owner, request.product_id, request.quantity, false)
            .await
    }

    async fn remove_item(
        &self,
        request: Request<proto::RemoveItemRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        check_owner(&request.owner, "owner", &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        if is_product_id(&request.product_id) {
            self.store
                .change(&request.owner, &request.product_id, 0, false, now_ms())
                .await
                .map_err(store_status)?;
        }
        self.view(&request.owner).await
    }

    async fn clear(
        &self,
        request: Request<proto::ClearRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let owner = request.into_inner().owner;
        let mut errors = Vec::new();
        check_owner(&owner, "owner", &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        self.store.clear(&owner).await.map_err(store_status)?;
        // An emptied cart: nothing to read back or price.
        Ok(Response::new(proto::CartView {
            owner,
            lines: Vec::new(),
            total: Some(catalog::Money {
                amount_minor: 0,
                currency: "USD".into(),
            }),
        }))
    }

    async fn merge(
        &self,
        request: Request<proto::MergeRequest>,
    ) -> Result<Response<proto::CartView>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        check_owner(&request.from_owner, "from_owner", &mut errors);
        check_owner(&request.to_owner, "to_owner", &mut errors);
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        self.store
            .merge(&request.from_owner, &request.to_owner, now_ms())
            .await
            .map_err(store_status)?;
        self.view(&request.to_owner).await
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::TooMany { .. } => {
            invalid_argument(&[FieldError::new("quantity", error.to_string())])
        }
        StoreError::TooManyLines(_) => {
            invalid_argument(&[FieldError::new("product_id", error.to_string())])
        }
        StoreError::Database(_) => {
            tracing::error!(%error, "cart storage failed");
            Status::internal("cart storage failed")
        }
    }
}
