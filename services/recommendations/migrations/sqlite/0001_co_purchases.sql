-- How many confirmed orders held both products, kept in both directions so one indexed
-- read answers "bought with X".
CREATE TABLE co_purchases (
    product_id TEXT NOT NULL,
    other_id TEXT NOT NULL,
    together INTEGER NOT NULL,
    PRIMARY KEY (product_id, other_id)
);
