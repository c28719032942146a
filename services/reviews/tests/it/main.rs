//! The reviews service as `comb serve` builds it: only customers who bought a product (as
//! the orders feed tells) may review it, once; reviews are listed newest first and
//! announced as events. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use comb_contracts::events as contract;
use comb_contracts::events::v1::ReadRequest;
use comb_contracts::events::v1::event_feed_client::EventFeedClient;
use comb_contracts::reviews::v1 as proto;
use comb_contracts::reviews::v1::reviews_client::ReviewsClient;
use comb_testkit::{TestDatabase, TestFeed, TestService, order_confirmed};
use tonic::Code;
use tonic::transport::Channel;

struct Setup {
    client: ReviewsClient<Channel>,
    reviews: TestService,
    orders: TestFeed,
}

async fn setup(database: &TestDatabase) -> Setup {
    let orders = TestFeed::start("orders").await;
    let config = comb_testkit::config(
        "reviews",
        &[
            ("COMB_DATABASE_URL", database.url.clone()),
            ("COMB_UPSTREAM_ORDERS", orders.url()),
        ],
    );
    let reviews = TestService::start(comb_reviews::build(config).await.unwrap()).await;
    let channel = reviews.channel().await;
    Setup {
        client: ReviewsClient::new(channel),
        reviews,
        orders,
    }
}

fn review(author: &str, product_id: &str, rating: i32) -> proto::PostReviewRequest {
    proto::PostReviewRequest {
        author: author.into(),
        author_name: "Ada".into(),
        product_id: product_id.into(),
        rating,
        title: "Worth it".into(),
        body: "Read it twice.".into(),
    }
}

/// Posts `request` once the orders feed has been read far enough for it to be allowed
/// (the feed is read in the background), or answers the refusal after ten seconds.
async fn post_when_bought(
    client: &mut ReviewsClient<Channel>,
    request: proto::PostReviewRequest,
) -> Result<proto::Review, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.post_review(request.clone()).await {
            Err(status)
                if status.code() == Code::PermissionDenied
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
}

async fn only_buyers_review_once_and_each_review_is_announced(database: TestDatabase) {
    let mut setup = setup(&database).await;
    let client = &mut setup.client;
    let stranger = client
        .post_review(review("u-2", "p-1", 5))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");

    setup
        .orders
        .publish(&order_confirmed("o-1", "u-1", &["p-1", "p-2"]))
        .await;
    let posted = post_when_bought(client, review("u-1", "p-1", 4))
        .await
        .unwrap();
    assert_eq!((posted.rating, posted.author_name.as_str()), (4, "Ada"));

    let again = client
        .post_review(review("u-1", "p-1", 1))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let still_a_stranger = client
        .post_review(review("u-2", "p-1", 5))
        .await
        .unwrap_err();
    assert_eq!(still_a_stranger.code(), Code::PermissionDenied);
    let bad = client
        .post_review(proto::PostReviewRequest {
            title: String::new(),
            ..review("u-1", "p-2", 6)
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields: Vec<String> = comb_kit::grpc::field_errors(&bad)
        .unwrap()
        .into_iter()
        .map(|error| error.field)
        .collect();
    assert_eq!(fields, ["rating", "title"]);

    let listed = client
        .list_reviews(proto::ListReviewsRequest {
            product_id: "p-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed, [posted]);

    // The review is announced on the reviews feed (the catalog's ratings follow it).
    let feed = setup.reviews.channel().await;
    let events = EventFeedClient::new(feed)
        .read(ReadRequest {
            after: 0,
            limit: 10,
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].r#type, contract::REVIEW_POSTED);
    assert_eq!(events[0].subject, "p-1");
}

comb_testkit::on_each_backend!(only_buyers_review_once_and_each_review_is_announced);
