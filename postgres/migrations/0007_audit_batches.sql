-- The audit batches committed lately, by the writer's key for each batch
-- (docs/operations.md, "When a dependency is down"): a batch whose COMMIT
-- succeeded but whose answer was lost is retried with the same key, and
-- the retry finds it here and writes nothing. Pruned after a day.
CREATE TABLE audit_batches (
    key TEXT   PRIMARY KEY,
    at  BIGINT NOT NULL -- the database's clock, Unix microseconds
);
CREATE INDEX audit_batches_at ON audit_batches (at);
