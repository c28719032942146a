-- Messages sent, one per event that asked for one (event_id makes a redelivery harmless
-- even without the inbox).
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    -- A user or guest id.
    recipient TEXT NOT NULL,
    email TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE INDEX messages_by_recipient ON messages (recipient, created_at_ms);
