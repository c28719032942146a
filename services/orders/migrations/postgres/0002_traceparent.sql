-- The checkout's trace context, so a saga resumed by another instance (or after a
-- restart) continues the checkout's trace instead of starting one of its own.
ALTER TABLE orders ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
