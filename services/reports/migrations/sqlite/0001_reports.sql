-- Every event the figures are built from, as it came: replaying the archive from scratch
-- gives the same figures.
CREATE TABLE archive (
    event_id TEXT PRIMARY KEY,
    producer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);

CREATE INDEX archive_in_order ON archive (producer, seq);

CREATE TABLE day_sales (
    day TEXT PRIMARY KEY,
    orders INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL
);

CREATE TABLE product_sales (
    day TEXT NOT NULL,
    product_id TEXT NOT NULL,
    title TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL,
    PRIMARY KEY (day, product_id)
);

CREATE TABLE cancellations (
    day TEXT NOT NULL,
    reason TEXT NOT NULL,
    orders INTEGER NOT NULL,
    PRIMARY KEY (day, reason)
);
