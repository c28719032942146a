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
    price_minor INTEGER NOT NULL CHECK (price_minor >= 0),
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX products_by_kind ON products (kind, id);
CREATE INDEX products_by_category ON products (category, id);

CREATE VIRTUAL TABLE products_fts USING fts5 (
    title, creators, description, tags,
    content = 'products', content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
    INSERT INTO products_fts (rowid, title, creators, description, tags)
    VALUES (new.rowid, new.title, new.creators, new.description, new.tags);
END;

CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, title, creators, description, tags)
    VALUES ('delete', old.rowid, old.title, old.creators, old.description, old.tags);
END;

CREATE TRIGGER products_fts_update AFTER UPDATE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, title, creators, description, tags)
    VALUES ('delete', old.rowid, old.title, old.creators, old.description, old.tags);
    INSERT INTO products_fts (rowid, title, creators, description, tags)
    VALUES (new.rowid, new.title, new.creators, new.description, new.tags);
END;
