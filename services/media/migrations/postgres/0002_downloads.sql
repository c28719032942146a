-- Who may download what: a confirmed order's digital lines, each until the order is
-- cancelled; and the deployment's key that signs download links.
CREATE TABLE entitlements (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    granted_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE signing_keys (
    id BIGINT PRIMARY KEY,
    -- Hex of 32 random bytes.
    secret TEXT NOT NULL
);
