-- An order and the state of its saga. Each step is written here before it is acted on,
-- so a restarted instance knows where every unfinished saga stands. Card numbers are
-- never written: only their last four digits.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    -- The client's Idempotency-Key: the same key from the same owner is the same order.
    idempotency_key TEXT NOT NULL,
    email TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    -- reserve, authorize, confirm, compensate or done.
    step TEXT NOT NULL,
    cancel_reason TEXT NOT NULL,
    -- JSON: the priced lines, taken from the cart (priced by the catalog) at checkout.
    lines TEXT NOT NULL,
    subtotal_minor BIGINT NOT NULL,
    shipping_minor BIGINT NOT NULL,
    total_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- JSON: the shipping address.
    address TEXT NOT NULL,
    payment_last4 TEXT NOT NULL,
    payment_status TEXT NOT NULL,
    tracking_id TEXT NOT NULL,
    -- Compensations still owed after a cancellation.
    release_pending BIGINT NOT NULL,
    void_pending BIGINT NOT NULL,
    deadline_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (owner, idempotency_key)
);

CREATE INDEX orders_by_owner ON orders (owner, created_at_ms);
CREATE INDEX orders_by_step ON orders (step, updated_at_ms);
