-- One row per line of a cart. owner is a user id or a guest id; prices are not kept
-- here but read from the catalog, so a cart always shows current prices.
CREATE TABLE cart_lines (
    owner TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, product_id)
);
