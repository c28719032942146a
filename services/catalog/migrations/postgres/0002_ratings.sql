-- Each product's rating summary, kept from ReviewPosted events.
CREATE TABLE product_ratings (
    product_id TEXT PRIMARY KEY,
    reviews BIGINT NOT NULL,
    rating_sum BIGINT NOT NULL
);
