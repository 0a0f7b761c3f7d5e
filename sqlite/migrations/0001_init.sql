-- Tokens: the keyed hash only, never the plaintext.
-- Times are Unix microseconds (UTC); NULL means unset.
CREATE TABLE tokens (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    prefix         TEXT    NOT NULL,
    name           TEXT    NOT NULL DEFAULT '',
    subject        TEXT    NOT NULL DEFAULT '',
    scopes         TEXT    NOT NULL DEFAULT '[]',  -- JSON array
    tags           TEXT    NOT NULL DEFAULT '[]',  -- JSON array
    meta           TEXT    NOT NULL DEFAULT '{}',  -- JSON object
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL DEFAULT '',
    expires_at     INTEGER,
    not_before     INTEGER,
    status         TEXT    NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    revoked_at     INTEGER,
    revoked_by     TEXT    NOT NULL DEFAULT '',
    revoked_reason TEXT    NOT NULL DEFAULT '',
    last_used_at   INTEGER,
    version        INTEGER NOT NULL,
    hash           BLOB    NOT NULL
);
CREATE INDEX tokens_subject ON tokens (subject, seq);
CREATE INDEX tokens_status ON tokens (status, seq);

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    node       TEXT    NOT NULL DEFAULT '',
    request_id TEXT    NOT NULL DEFAULT '',
    kind       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    token_id   TEXT    NOT NULL DEFAULT '',
    subject    TEXT    NOT NULL DEFAULT '',
    outcome    TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    scopes     TEXT    NOT NULL DEFAULT '[]',
    client_ip  TEXT    NOT NULL DEFAULT '',
    user_agent TEXT    NOT NULL DEFAULT '',
    method     TEXT    NOT NULL DEFAULT '',
    path       TEXT    NOT NULL DEFAULT '',
    latency_ns INTEGER NOT NULL DEFAULT 0,
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_token ON audit_events (token_id, seq) WHERE token_id <> '';
CREATE INDEX audit_subject ON audit_events (subject, seq) WHERE subject <> '';
CREATE INDEX audit_outcome ON audit_events (outcome, seq);
CREATE INDEX audit_time ON audit_events (time);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
