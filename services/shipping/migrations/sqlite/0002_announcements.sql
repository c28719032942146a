-- Who to tell when a shipment ships, and whether it has been told (ShipmentShipped).
ALTER TABLE shipments ADD COLUMN recipient TEXT NOT NULL DEFAULT '';
ALTER TABLE shipments ADD COLUMN email TEXT NOT NULL DEFAULT '';
ALTER TABLE shipments ADD COLUMN shipped_announced INTEGER NOT NULL DEFAULT 0;
