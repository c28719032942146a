-- Product media: the masters (assets), the files made from them (renditions), and the
-- jobs that make them, leased to workers.
CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL,
    -- image, audio or video.
    kind TEXT NOT NULL,
    -- upload, or generated (a drawn cover).
    origin TEXT NOT NULL,
    file_name TEXT NOT NULL,
    master_sha256 TEXT NOT NULL,
    master_type TEXT NOT NULL,
    master_bytes BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX assets_by_product ON assets (product_id, created_at_ms);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    asset_id TEXT NOT NULL REFERENCES assets (id),
    -- queued, running, done, failed or cancelled.
    state TEXT NOT NULL,
    percent BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    failure TEXT NOT NULL DEFAULT '',
    lease TEXT,
    worker TEXT,
    lease_until_ms BIGINT,
    run_after_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT
);
CREATE INDEX jobs_due ON jobs (state, run_after_ms);

CREATE TABLE renditions (
    asset_id TEXT NOT NULL REFERENCES assets (id),
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    public BOOLEAN NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (asset_id, name)
);

-- The title and creators each product's drawn cover shows, so a renamed product gets a
-- new one and an unchanged product none.
CREATE TABLE drawn_covers (
    product_id TEXT PRIMARY KEY,
    drawn_from TEXT NOT NULL,
    asset_id TEXT NOT NULL
);
