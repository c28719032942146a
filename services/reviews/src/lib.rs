//! The reviews service: ratings (1 to 5) and reviews of products, one per product per
//! customer, by verified purchasers only. It learns who bought what from the orders feed
//! and announces each review (ReviewPosted) through its own outbox, from which the catalog
//! keeps each product's rating summary.

use std::sync::Arc;

use axum::Router;
use comb_contracts::events::{self as contract, OrderConfirmed, ReviewPosted};
use comb_contracts::reviews::v1 as proto;
use comb_contracts::reviews::v1::reviews_server::{Reviews, ReviewsServer};
use comb_kit::ServiceConfig;
use comb_kit::cache::VersionedCache;
use comb_kit::clock::{now_ms, rfc3339_from_ms};
use comb_kit::events::{self as kit_events, Event, Handler, HandlerError, Transport};
use comb_kit::grpc::{invalid_argument, is_key, key_error};
use comb_kit::problem::FieldError;
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::sql;
use comb_kit::storage::{Database, Migration, Migrations};
use tonic::{Request, Response, Status};

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "reviews",
        sql: include_str!("../migrations/sqlite/0001_reviews.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "reviews",
        sql: include_str!("../migrations/postgres/0001_reviews.sql"),
    }],
};

pub const MAX_TITLE_CHARS: usize = 120;
pub const MAX_BODY_CHARS: usize = 4_000;

/// A reviews instance, for `comb_kit::service::run`: its database, and the reader of the
/// orders feed (recording who bought what).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let transport = Transport::from_config(&config).await?;
    let orders = transport
        .consumer(&config, &db, "orders", Arc::new(Purchases))
        .await?;
    Ok(Service::new(routes(db.clone()))
        .producing(&transport, &db, "reviews")
        .task("orders consumer", orders.run()))
}

/// Records who bought what.
struct Purchases;

#[tonic::async_trait]
impl Handler for Purchases {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::ORDER_CONFIRMED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let order: OrderConfirmed = event.data()?;
        for line in &order.lines {
            sql::query("INSERT INTO purchases (owner, product_id) VALUES ($1, $2) ON CONFLICT (owner, product_id) DO NOTHING")
                .bind(order.owner.as_str())
                .bind(line.product_id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ReviewsApi {
    db: Database,
    /// Each product's reviews, while the data version stands: a product page asks for
    /// them every time it is shown.
    lists: Arc<VersionedCache<String, Arc<proto::ListReviewsResponse>>>,
}

/// Products whose reviews are kept in memory at once.
const CACHED_PRODUCTS: usize = 4096;

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "reviews storage failed");
    Status::internal("reviews storage failed")
}

fn text_error(field: &str, text: &str, least: usize, most: usize) -> Option<FieldError> {
    let length = text.chars().count();
    if length < least || length > most || text.chars().any(|c| c.is_control() && c != '\n') {
        Some(FieldError::new(
            field,
            format!("must be {least} to {most} characters"),
        ))
    } else {
        None
    }
}

#[tonic::async_trait]
impl Reviews for ReviewsApi {
    async fn post_review(
        &self,
        request: Request<proto::PostReviewRequest>,
    ) -> Result<Response<proto::Review>, Status> {
        let request = request.into_inner();
        let title = request.title.trim().to_owned();
        let body = request.body.trim().to_owned();
        let mut errors = Vec::new();
        if !is_key(&request.author) {
            errors.push(key_error("author"));
        }
        if !is_key(&request.product_id) {
            errors.push(key_error("product_id"));
        }
        if !(1..=5).contains(&request.rating) {
            errors.push(FieldError::new(
                "rating",
                "must be a whole number from 1 to 5",
            ));
        }
        errors.extend(text_error("title", &title, 1, MAX_TITLE_CHARS));
        errors.extend(text_error("body", &body, 0, MAX_BODY_CHARS));
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let mut tx = self.db.begin_write().await.map_err(internal)?;
        let bought: Option<String> =
            sql::query_scalar("SELECT owner FROM purchases WHERE owner = $1 AND product_id = $2")
                .bind(request.author.as_str())
                .bind(request.product_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(internal)?;
        if bought.is_none() {
            return Err(Status::permission_denied(
                "only customers who bought this product may review it",
            ));
        }
        let author_name = Some(request.author_name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "A customer".to_owned());
        let review = proto::Review {
            id: uuid::Uuid::now_v7().to_string(),
            product_id: request.product_id.clone(),
            author_name,
            rating: request.rating,
            title,
            body,
            created_at: String::new(),
        };
        let now = now_ms();
        let inserted = sql::query(
            "INSERT INTO reviews (id, product_id, author, author_name, rating, title, body, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (product_id, author) DO NOTHING",
        )
        .bind(review.id.as_str())
        .bind(review.product_id.as_str())
        .bind(request.author.as_str())
        .bind(review.author_name.as_str())
        .bind(i64::from(review.rating))
        .bind(review.title.as_str())
        .bind(review.body.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if inserted.rows_affected() == 0 {
            return Err(Status::already_exists(
                "you have already reviewed this product",
            ));
        }
        let posted = Event::new(
            "reviews",
            contract::REVIEW_POSTED,
            &review.product_id,
            &ReviewPosted {
                review_id: review.id.clone(),
                product_id: review.product_id.as_str().into(),
                rating: review.rating,
                author_name: review.author_name.clone(),
            },
        )
        .map_err(internal)?;
        kit_events::publish(&self.db, &mut tx, &posted)
            .await
            .map_err(internal)?;
        kit_events::commit(&self.db, tx).await.map_err(internal)?;
        // The poster's next read (the product page they return to) shows the review.
        if let Err(error) = self.db.refresh_data_version().await {
            tracing::warn!(%error, "cannot read the data version after a review; caches catch up at the next poll");
        }
        tracing::info!(review = %review.id, product = %review.product_id, rating = review.rating, "review posted");
        Ok(Response::new(proto::Review {
            created_at: rfc3339_from_ms(now),
            ..review
        }))
    }

    async fn list_reviews(
        &self,
        request: Request<proto::ListReviewsRequest>,
    ) -> Result<Response<proto::ListReviewsResponse>, Status> {
        let product_id = request.into_inner().product_id;
        if !is_key(&product_id) {
            return Ok(Response::new(proto::ListReviewsResponse {
                items: Vec::new(),
            }));
        }
        let version = self.db.data_version();
        if let Some(answer) = self.lists.get(version, &product_id) {
            return Ok(comb_kit::versions::label((*answer).clone(), version));
        }
        let rows = sql::query(
            "SELECT id, product_id, author_name, rating, title, body, created_at_ms FROM reviews
             WHERE product_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT 200",
        )
        .bind(product_id.as_str())
        .fetch_all(&self.db)
        .await
        .map_err(internal)?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(proto::Review {
                    id: row.try_get("id")?,
                    product_id: row.try_get("product_id")?,
                    author_name: row.try_get("author_name")?,
                    rating: i32::try_from(row.try_get::<i64, _>("rating")?).unwrap_or_default(),
                    title: row.try_get("title")?,
                    body: row.try_get("body")?,
                    created_at: rfc3339_from_ms(row.try_get("created_at_ms")?),
                })
            })
            .collect::<Result<_, sql::DbError>>()
            .map_err(internal)?;
        let answer = proto::ListReviewsResponse { items };
        self.lists
            .keep(version, product_id, Arc::new(answer.clone()));
        Ok(comb_kit::versions::label(answer, version))
    }
}

/// The reviews API, the feed of ReviewPosted events, and the watch of its data version.
pub fn routes(db: Database) -> Router {
    let api = server::add_grpc(
        Router::new(),
        ReviewsServer::new(ReviewsApi {
            db: db.clone(),
            lists: Arc::new(VersionedCache::new(CACHED_PRODUCTS)),
        }),
    );
    comb_kit::versions::version_routes(kit_events::feed_routes(api, &db, "reviews"), &db)
}
