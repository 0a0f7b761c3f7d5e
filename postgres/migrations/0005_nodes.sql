-- The live nodes (docs/architecture.md §4): each node's follower stamps
-- its row every poll interval and deletes it when it stops. A receipt
-- (a revocation asked with wait=all) waits for the nodes seen lately.
CREATE TABLE nodes (
    node TEXT   PRIMARY KEY,
    seen BIGINT NOT NULL -- the database's clock, Unix microseconds
);
