-- Lifecycle (issue 3): constraints, usage budgets, suspension, lineage.
-- constraints: JSON object (idle_timeout, allowed_cidrs, allowed_methods,
-- allowed_paths, rate_limit); max_uses and uses are columns so that
-- ConsumeUse is one conditional UPDATE.
ALTER TABLE tokens ADD COLUMN constraints      TEXT    NOT NULL DEFAULT '{}';
ALTER TABLE tokens ADD COLUMN max_uses         INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN uses             INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN suspended_at     INTEGER;
ALTER TABLE tokens ADD COLUMN suspended_by     TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN suspended_reason TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN suspended_via    TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN parent_id        TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN ancestors        TEXT    NOT NULL DEFAULT '[]'; -- JSON array, parent first
ALTER TABLE tokens ADD COLUMN predecessor_id   TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN successor_id     TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN rotated_at       INTEGER;
ALTER TABLE tokens ADD COLUMN series_id        TEXT    NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN inherited        TEXT    NOT NULL DEFAULT '[]'; -- JSON array
UPDATE tokens SET series_id = id WHERE series_id = '';
CREATE INDEX tokens_parent ON tokens (parent_id, seq) WHERE parent_id <> '';
CREATE INDEX tokens_prefix ON tokens (prefix, seq);
