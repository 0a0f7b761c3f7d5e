-- Tenancy (issue 17): every token belongs to one keyspace (the tokens
-- made before keyspaces existed sit in "default") and may hold roles,
-- resolved to scopes at verification. Keyspaces, roles and identities
-- are settings (tenancy/...); an identity's shared usage budget is a row
-- of budgets, so that spending it is one conditional UPDATE.
ALTER TABLE tokens ADD COLUMN keyspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE tokens ADD COLUMN roles    TEXT NOT NULL DEFAULT '[]'; -- JSON array
CREATE INDEX tokens_keyspace ON tokens (keyspace, seq);

CREATE TABLE budgets (
    key      TEXT    PRIMARY KEY,
    max_uses INTEGER NOT NULL,
    uses     INTEGER NOT NULL DEFAULT 0
);
