-- The fields no query filters on move into one JSON column, "rest":
-- every bound parameter and column costs each audit insert, and an audit
-- insert happens per verification. Readable in sqlite3 as
--   SELECT seq, time, outcome, token_id, rest FROM audit_events;
-- and queryable with json_extract(rest, '$.path').
ALTER TABLE audit_events ADD COLUMN rest TEXT NOT NULL DEFAULT '{}';
UPDATE audit_events SET rest = json_object(
    'request_id', request_id, 'actor', actor, 'reason', reason, 'scopes', json(scopes),
    'user_agent', user_agent, 'method', method, 'path', path, 'latency_ns', latency_ns,
    'detail', CASE WHEN detail = '' THEN NULL ELSE json(detail) END);
ALTER TABLE audit_events DROP COLUMN request_id;
ALTER TABLE audit_events DROP COLUMN actor;
ALTER TABLE audit_events DROP COLUMN reason;
ALTER TABLE audit_events DROP COLUMN scopes;
ALTER TABLE audit_events DROP COLUMN user_agent;
ALTER TABLE audit_events DROP COLUMN method;
ALTER TABLE audit_events DROP COLUMN path;
ALTER TABLE audit_events DROP COLUMN latency_ns;
ALTER TABLE audit_events DROP COLUMN detail;
