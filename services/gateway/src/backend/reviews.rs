//! Reviews as a product page shows them, answered by the reviews service.

use std::sync::Arc;

use comb_contracts::auth::{Claims, Role};
use comb_contracts::reviews::v1 as proto;
use comb_contracts::reviews::v1::reviews_client::ReviewsClient;
use comb_kit::Problem;
use comb_kit::grpc::Answer;

use crate::GatewayState;
use crate::reviews::{Review, ReviewInput, review};

/// The newest reviews of a product, for its page.
pub async fn newest(state: &GatewayState, product_id: String) -> Result<Arc<Vec<Review>>, Problem> {
    let version = state.watches.reviews.current();
    if let Some(kept) = state.kept.reviews.current(&product_id, version) {
        return Ok(kept);
    }
    let found = ReviewsClient::new(state.reviews.channel())
        .list_reviews(proto::ListReviewsRequest {
            product_id: product_id.clone(),
        })
        .await
        .map_err(|status| state.reviews.problem(&status))?;
    let label = comb_kit::versions::label_of(&found);
    let newest: Arc<Vec<Review>> = Arc::new(
        found
            .into_inner()
            .items
            .into_iter()
            .take(5)
            .map(review)
            .collect(),
    );
    if label != 0 {
        state
            .kept
            .reviews
            .keep(product_id, label, Arc::clone(&newest));
    }
    Ok(newest)
}

/// Posts `author`'s review of a product; only a customer who bought it may, once.
pub async fn post(
    state: &GatewayState,
    author: Claims,
    product_id: String,
    input: ReviewInput,
) -> Result<Review, Problem> {
    if author.role == Role::Guest {
        return Err(Problem::forbidden(
            "guests cannot review: sign in (or register) with the account you bought with",
        ));
    }
    let posted = ReviewsClient::new(state.reviews.channel())
        .post_review(proto::PostReviewRequest {
            author: author.sub,
            author_name: author.name.unwrap_or_default(),
            product_id,
            rating: input.rating,
            title: input.title,
            body: input.body,
        })
        .await;
    // Even a failed call may have written: kept reviews wait for the version after it.
    state.watches.reviews.wrote();
    Ok(review(posted.answered_by(&state.reviews)?))
}
