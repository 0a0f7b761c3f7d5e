-- Sources blocked by the detector (issue 4). Expired rows are ignored and
-- cleaned up when blocks are listed.
CREATE TABLE blocks (
    source     TEXT    PRIMARY KEY,
    until      INTEGER NOT NULL,
    rule       TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
