-- How many of each SKU can be sold now. Reserving takes from it, releasing gives back,
-- so "available" never counts stock promised to an order.
CREATE TABLE stock (
    sku TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    updated_at_ms INTEGER NOT NULL
);

-- One reservation per order. status: reserved, committed, released or expired.
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released', 'expired')),
    expires_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE INDEX reservations_due ON reservations (status, expires_at_ms);

CREATE TABLE reservation_lines (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
