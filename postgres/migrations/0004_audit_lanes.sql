-- Each node's audit chain runs in lanes (docs/architecture.md §5): a
-- writing transaction links its records into whichever of the node's
-- lanes is free (SELECT ... FOR UPDATE SKIP LOCKED), so concurrent writers
-- no longer queue on one head row. Each lane is a chain of its own, in
-- seq order, verified on its own; the records of before are lane 0.
ALTER TABLE audit_heads ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_heads DROP CONSTRAINT audit_heads_pkey;
ALTER TABLE audit_heads ADD PRIMARY KEY (node, lane);
ALTER TABLE audit_events ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
DROP INDEX audit_node;
CREATE INDEX audit_node ON audit_events (node, lane, seq);
ALTER TABLE audit_anchors ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_anchors DROP CONSTRAINT audit_anchors_pkey;
ALTER TABLE audit_anchors ADD PRIMARY KEY (node, lane);
