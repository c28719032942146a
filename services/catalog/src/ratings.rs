//! Each product's rating summary (average and count), kept from the reviews service's
//! ReviewPosted events.

use comb_contracts::events::{self as contract, ReviewPosted};
use comb_kit::events::{Event, Handler, HandlerError};
use comb_kit::storage::{Database, sql};

/// Adds each posted review to its product's summary.
#[derive(Debug)]
pub struct Ratings;

#[tonic::async_trait]
impl Handler for Ratings {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::REVIEW_POSTED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let review: ReviewPosted = event.data()?;
        if !(1..=5).contains(&review.rating) {
            return Err(HandlerError::Poison(format!(
                "a rating of {} is not 1 to 5",
                review.rating
            )));
        }
        sql::query(
            "INSERT INTO product_ratings (product_id, reviews, rating_sum) VALUES ($1, 1, $2)
             ON CONFLICT (product_id) DO UPDATE SET reviews = product_ratings.reviews + 1,
             rating_sum = product_ratings.rating_sum + excluded.rating_sum",
        )
        .bind(review.product_id.as_str())
        .bind(i64::from(review.rating))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
