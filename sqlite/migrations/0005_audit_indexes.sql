-- Every index costs each audit insert a B-tree update, and audit inserts
-- are the busiest write (one per verification). Keep the one the hot
-- query needs, by token (a token's history). The others go:
-- - by subject and by outcome: those filters scan in seq order, newest
--   first, which finds recent records at once;
-- - by node: a node's chain is followed in seq order;
-- - by time: seq order is commit order, nearly time order, so a time
--   bound becomes a seq bound found by binary search (see seqAtTime).
DROP INDEX audit_subject;
DROP INDEX audit_node;
DROP INDEX audit_outcome;
DROP INDEX audit_time;
