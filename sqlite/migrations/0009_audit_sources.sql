-- Which chunks hold records from a client address (GET /v1/audit?client_ip=,
-- GET /v1/audit/sources): the address as 16 bytes (IPv4 as IPv4-mapped
-- IPv6), so that a CIDR prefix is one range of the key. The chunks already
-- stored are indexed by the migration's Go step (sqlite/migrate.go).
CREATE TABLE audit_sources (
    ip       BLOB    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (ip, last_seq)
) WITHOUT ROWID;
