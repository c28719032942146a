-- One shipment per order. Its status follows from its age (see the service's settings),
-- so it is not stored.
CREATE TABLE shipments (
    order_id TEXT PRIMARY KEY,
    tracking_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    line1 TEXT NOT NULL,
    line2 TEXT NOT NULL,
    city TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    country TEXT NOT NULL,
    item_count BIGINT NOT NULL,
    cost_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
