-- latchkey on PostgreSQL: the same data as the SQLite store.
-- Times are Unix microseconds (UTC), as in SQLite, so both stores keep the
-- same precision and the audit chain's canonical form is the same.
CREATE TABLE tokens (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    prefix           TEXT    NOT NULL,
    name             TEXT    NOT NULL DEFAULT '',
    subject          TEXT    NOT NULL DEFAULT '',
    scopes           TEXT    NOT NULL DEFAULT '[]',
    tags             TEXT    NOT NULL DEFAULT '[]',
    meta             TEXT    NOT NULL DEFAULT '{}',
    created_at       BIGINT  NOT NULL,
    created_by       TEXT    NOT NULL DEFAULT '',
    expires_at       BIGINT,
    not_before       BIGINT,
    status           TEXT    NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    revoked_at       BIGINT,
    revoked_by       TEXT    NOT NULL DEFAULT '',
    revoked_reason   TEXT    NOT NULL DEFAULT '',
    last_used_at     BIGINT,
    version          BIGINT  NOT NULL,
    hash             BYTEA   NOT NULL,
    constraints      TEXT    NOT NULL DEFAULT '{}',
    max_uses         BIGINT  NOT NULL DEFAULT 0,
    uses             BIGINT  NOT NULL DEFAULT 0,
    suspended_at     BIGINT,
    suspended_by     TEXT    NOT NULL DEFAULT '',
    suspended_reason TEXT    NOT NULL DEFAULT '',
    suspended_via    TEXT    NOT NULL DEFAULT '',
    parent_id        TEXT    NOT NULL DEFAULT '',
    ancestors        TEXT    NOT NULL DEFAULT '[]',
    predecessor_id   TEXT    NOT NULL DEFAULT '',
    successor_id     TEXT    NOT NULL DEFAULT '',
    rotated_at       BIGINT,
    series_id        TEXT    NOT NULL DEFAULT '',
    inherited        TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX tokens_subject ON tokens (subject, seq);
CREATE INDEX tokens_status ON tokens (status, seq);
CREATE INDEX tokens_prefix ON tokens (prefix, seq);
CREATE INDEX tokens_parent ON tokens (parent_id, seq) WHERE parent_id <> '';

-- The audit log. rest holds the fields nobody filters on, as JSON text
-- (not jsonb: the chain hashes the exact bytes of detail).
CREATE TABLE audit_events (
    seq       BIGSERIAL PRIMARY KEY,
    time      BIGINT NOT NULL,
    node      TEXT   NOT NULL DEFAULT '',
    kind      TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    token_id  TEXT   NOT NULL DEFAULT '',
    subject   TEXT   NOT NULL DEFAULT '',
    outcome   TEXT   NOT NULL,
    client_ip TEXT   NOT NULL DEFAULT '',
    rest      TEXT   NOT NULL DEFAULT '{}',
    hash      TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX audit_token ON audit_events (token_id, seq) WHERE token_id <> '';
CREATE INDEX audit_node ON audit_events (node, seq);
CREATE INDEX audit_time ON audit_events (time);

-- Each node's chain head: appending locks its row, so one node's records
-- are linked in order however many writers it has.
CREATE TABLE audit_heads (
    node TEXT PRIMARY KEY,
    hash TEXT NOT NULL
);

CREATE TABLE audit_anchors (
    node TEXT   PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL,
    at   BIGINT NOT NULL
);

CREATE TABLE blocks (
    source     TEXT   PRIMARY KEY,
    until      BIGINT NOT NULL,
    rule       TEXT   NOT NULL,
    reason     TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
