-- Each product's rating summary, kept from ReviewPosted events.
CREATE TABLE product_ratings (
    product_id TEXT PRIMARY KEY,
    reviews INTEGER NOT NULL,
    rating_sum INTEGER NOT NULL
);
