-- Whether ShipmentDelivered has been announced.
ALTER TABLE shipments ADD COLUMN delivered_announced BIGINT NOT NULL DEFAULT 0;
