-- A node's name is held by one process at a time (docs/operations.md,
-- "Node names"): holder is the process's random id. A second process
-- given the same --node name refuses to start while the holder's
-- heartbeat is fresh, and takes the name over once it is not.
ALTER TABLE nodes ADD COLUMN holder TEXT NOT NULL DEFAULT '';
