-- Whether ShipmentDelivered has been announced.
ALTER TABLE shipments ADD COLUMN delivered_announced INTEGER NOT NULL DEFAULT 0;
