-- Which stretches of the log hold records from a client address (GET
-- /v1/audit?client_ip=, GET /v1/audit/sources): one row per address and
-- segment of 65,536 sequence numbers (a chunk belongs to the segment of
-- its last record), the address as 16 bytes (IPv4 as IPv4-mapped IPv6)
-- so that a CIDR prefix is one range of the key. A query by source reads
-- the chunks of those segments only. The chunks already stored are
-- indexed by the migration's Go step (sqlite/migrate.go).
CREATE TABLE audit_sources (
    ip  BLOB    NOT NULL,
    seg INTEGER NOT NULL,
    PRIMARY KEY (ip, seg)
) WITHOUT ROWID;
