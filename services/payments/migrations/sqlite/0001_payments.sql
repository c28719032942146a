-- One payment per idempotency key. Never a card number: the last four digits only.
CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('authorized', 'declined', 'captured', 'voided', 'refunded')),
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    last4 TEXT NOT NULL,
    decline_reason TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
