-- Changing an account's password or role starts a new session generation; tokens carry
-- the generation they were issued in, and older ones are refused.
ALTER TABLE users ADD COLUMN session_generation BIGINT NOT NULL DEFAULT 0;

-- Sessions ended before their tokens expire: one token (logout), or every token of an
-- account from before a generation (token_id is then '').
CREATE TABLE revocations (
    subject TEXT NOT NULL,
    token_id TEXT NOT NULL,
    -- Seconds since the epoch after which the entry no longer matters; 0 for never.
    expires_at BIGINT NOT NULL,
    sessions_from BIGINT NOT NULL,
    -- Milliseconds since the epoch: the position gateways follow.
    revoked_at_ms BIGINT NOT NULL,
    PRIMARY KEY (subject, token_id)
);
CREATE INDEX revocations_by_time ON revocations (revoked_at_ms);
