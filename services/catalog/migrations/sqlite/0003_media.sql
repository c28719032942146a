-- Each product's media (cover, preview, whether it is sold as a download), kept from the
-- media service's MediaReady events as JSON.
ALTER TABLE products ADD COLUMN media TEXT NOT NULL DEFAULT '{}';
