CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Normalised: trimmed and lower-case, so one address is one account.
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- PHC string: $argon2id$v=19$...
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('customer', 'admin')),
    created_at TEXT NOT NULL
);

-- Ed25519 keys that sign tokens. The oldest signs; all are published, so a key can be
-- rotated in without invalidating the tokens signed before.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    -- PKCS#8 DER, base64.
    private_key TEXT NOT NULL,
    -- The raw public key, base64url without padding (a JWK's x).
    public_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
