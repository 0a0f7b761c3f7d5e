-- Audit tamper evidence (issue 4): each record's hash links it to the
-- previous record of its node; anchors keep where a pruned chain resumes.
ALTER TABLE audit_events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_node ON audit_events (node, seq);

CREATE TABLE audit_anchors (
    node TEXT    PRIMARY KEY,
    seq  INTEGER NOT NULL,  -- the last pruned record
    hash TEXT    NOT NULL,  -- its chain hash: the next record links to it
    at   INTEGER NOT NULL   -- when the prune ran
);
