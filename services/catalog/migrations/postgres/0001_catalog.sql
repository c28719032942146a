CREATE TABLE categories (
    slug TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('book', 'music', 'video'))
);

-- creators and tags are JSON arrays of strings; ids are UUIDv7, so id order is creation order.
CREATE TABLE products (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('book', 'music', 'video')),
    title TEXT NOT NULL,
    creators TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL REFERENCES categories (slug),
    tags TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    search TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', creators), 'B')
        || setweight(to_tsvector('english', tags), 'C')
        || setweight(to_tsvector('english', description), 'D')
    ) STORED
);

CREATE INDEX products_by_kind ON products (kind, id);
CREATE INDEX products_by_category ON products (category, id);
CREATE INDEX products_search ON products USING GIN (search);
