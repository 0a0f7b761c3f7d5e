-- Audit records move into chunks (docs/architecture.md §5): one row per
-- run of up to 1024 consecutive records of one node, their compact
-- encoding in one blob, so that SQLite's per-row cost is paid once per
-- chunk. The records of audit_events are moved here by the migration's Go
-- step (sqlite/migrate.go), which then drops the table; their hashes keep
-- their format (chain 1). Records written from now on are chained over
-- their compact encoding (chain 2).
CREATE TABLE audit_chunks (
    last_seq INTEGER PRIMARY KEY, -- the seq of its last record: it holds last_seq-n+1 .. last_seq
    n        INTEGER NOT NULL,
    node     TEXT    NOT NULL,
    t_min    INTEGER NOT NULL,    -- its earliest and latest record's time, Unix microseconds
    t_max    INTEGER NOT NULL,
    chain    INTEGER NOT NULL,    -- the chain format: 1 (latchkey.ChainHash per record) or 2
    prev     BLOB    NOT NULL,    -- the node's chain hash before its first record (zeros: the chain's start)
    hash     BLOB    NOT NULL,    -- and after its last
    recs     BLOB    NOT NULL     -- the records (internal/auditrow), last: reading the others skips it
);
-- Which chunks hold records of a token (a token's history).
CREATE TABLE audit_tokens (
    token_id TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (token_id, last_seq)
) WITHOUT ROWID;
