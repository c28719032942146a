-- Who may download what: a confirmed order's digital lines, each until the order is
-- cancelled; and the deployment's key that signs download links.
CREATE TABLE entitlements (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    active INTEGER NOT NULL,
    granted_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE signing_keys (
    id INTEGER PRIMARY KEY,
    -- Hex of 32 random bytes.
    secret TEXT NOT NULL
);
