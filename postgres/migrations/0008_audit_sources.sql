-- The client address of each record as inet, so that a query by address
-- or CIDR prefix (GET /v1/audit?client_ip=, GET /v1/audit/sources) is an
-- index range: the btree answers "client_inet <<= prefix" directly. It is
-- NULL where client_ip is not an address. New records get it from the
-- writer (which parses the address itself, so that no text can fail a
-- cast in the insert); the records already stored are converted here:
-- plain IPv4 in one statement, the rest one by one, skipping any that
-- does not parse.
ALTER TABLE audit_events ADD COLUMN client_inet inet;
UPDATE audit_events SET client_inet = client_ip::inet
    WHERE client_ip ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$';
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT seq, client_ip FROM audit_events WHERE client_inet IS NULL AND client_ip <> '' LOOP
        BEGIN
            UPDATE audit_events SET client_inet = r.client_ip::inet WHERE seq = r.seq;
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END $$;
CREATE INDEX audit_client ON audit_events (client_inet, seq) WHERE client_inet IS NOT NULL;
