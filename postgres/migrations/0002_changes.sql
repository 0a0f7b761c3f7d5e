-- Every change to a token, for nodes that missed its notification
-- (LISTEN/NOTIFY is the fast path; this table is the backstop they poll).
CREATE TABLE changes (
    seq      BIGSERIAL PRIMARY KEY,
    token_id TEXT   NOT NULL,
    version  BIGINT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX changes_at ON changes (at);
