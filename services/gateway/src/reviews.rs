//! Reviews of a product: anyone may read them; only a customer who bought the product may
//! post one, once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use comb_contracts::reviews::v1 as proto;
use comb_contracts::reviews::v1::reviews_client::ReviewsClient;
use comb_kit::grpc::Answer;

use comb_kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::Unauthorized;
use crate::params::ProductId;
use crate::{GatewayState, backend};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Review {
    pub id: String,
    pub product_id: String,
    pub author_name: String,
    /// 1 to 5.
    pub rating: i32,
    pub title: String,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewList {
    pub items: Vec<Review>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewInput {
    /// 1 to 5.
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "crate::body::whole_number")]
    pub rating: i32,
    /// 1 to 120 characters (not only spaces).
    #[schema(min_length = 1, max_length = 120)]
    pub title: String,
    /// Up to 4000 characters.
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub body: String,
}

pub(crate) fn review(review: proto::Review) -> Review {
    Review {
        id: review.id,
        product_id: review.product_id,
        author_name: review.author_name,
        rating: review.rating,
        title: review.title,
        body: review.body,
        created_at: review.created_at,
    }
}

/// A product's reviews, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}/reviews",
    tag = "catalog",
    params(("id" = String, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The reviews", body = ReviewList),
        (status = 503, description = "Reviews are unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn list_reviews(
    State(state): State<GatewayState>,
    ProductId(product_id): ProductId,
) -> Result<Json<ReviewList>, Problem> {
    let reviews = ReviewsClient::new(state.reviews.channel())
        .list_reviews(proto::ListReviewsRequest { product_id })
        .await
        .answered_by(&state.reviews)?;
    Ok(Json(ReviewList {
        items: reviews.items.into_iter().map(review).collect(),
        next_cursor: None,
    }))
}

/// Reviews a product the caller bought.
#[utoipa::path(
    post,
    path = "/api/v1/products/{id}/reviews",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id")),
    request_body = ReviewInput,
    responses(
        (status = 201, description = "The review", body = Review),
        (status = 400, description = "A rating outside 1 to 5, or a text out of bounds", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        (status = 403, description = "The caller is a guest, or has not bought this product", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The caller has reviewed it already", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn post_review(
    State(state): State<GatewayState>,
    caller: Caller,
    ProductId(product_id): ProductId,
    JsonBody(input): JsonBody<ReviewInput>,
) -> Result<(StatusCode, Json<Review>), Problem> {
    let posted = backend::reviews::post(&state, caller.0, product_id, input).await?;
    Ok((StatusCode::CREATED, Json(posted)))
}
