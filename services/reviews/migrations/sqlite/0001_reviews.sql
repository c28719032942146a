-- Who bought what, learned from OrderConfirmed: only they may review it.
CREATE TABLE purchases (
    owner TEXT NOT NULL,
    product_id TEXT NOT NULL,
    PRIMARY KEY (owner, product_id)
);

-- One review per product per author.
CREATE TABLE reviews (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL,
    author TEXT NOT NULL,
    author_name TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (product_id, author)
);

CREATE INDEX reviews_by_product ON reviews (product_id, created_at_ms);
