-- The transactional outbox: events written in the same transaction as the change they
-- announce. seq is the feed position; SQLite commits one writer at a time, so seq order
-- is commit order.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    data TEXT NOT NULL
);

-- Events this service has handled, recorded in the same transaction as their effect, so a
-- redelivered event is recognised and skipped.
CREATE TABLE inbox (
    event_id TEXT PRIMARY KEY,
    producer TEXT NOT NULL,
    handled_at_ms INTEGER NOT NULL
);

-- How far this service has read each producer's feed.
CREATE TABLE feed_positions (
    producer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);

-- Events that could not be handled, kept with the reason, out of the way of later ones.
CREATE TABLE parked_events (
    event_id TEXT PRIMARY KEY,
    producer TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    envelope TEXT NOT NULL,
    parked_at_ms INTEGER NOT NULL
);
