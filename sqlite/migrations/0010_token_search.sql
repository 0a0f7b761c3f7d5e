-- The token list's sorting and search (GET /v1/tokens?sort=, ?q=).
--
-- Sorting by expiry or last use is a range of an index on the same
-- expression the listing orders by, with seq to break ties (the cursor
-- is the pair): a token that never expires sorts as the largest time, one
-- never used as 0.
CREATE INDEX tokens_expires ON tokens (COALESCE(expires_at, 9223372036854775807), seq);
CREATE INDEX tokens_last_used ON tokens (COALESCE(last_used_at, 0), seq);

-- A search word matches the start of a word of a token's name, subject or
-- tags, or of its id. terms holds those words (a JSON array, computed by
-- latchkey.SearchTerms when the token is written) and token_terms indexes
-- them, kept in step by the triggers below, so that a word is a range of
-- token_terms' key. The tokens already stored get their terms from the
-- migration's Go step (sqlite/migrate.go).
ALTER TABLE tokens ADD COLUMN terms TEXT NOT NULL DEFAULT '[]';
CREATE TABLE token_terms (
    term TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (term, seq)
) WITHOUT ROWID;
CREATE TRIGGER tokens_terms_insert AFTER INSERT ON tokens BEGIN
    INSERT OR IGNORE INTO token_terms (term, seq) SELECT value, new.seq FROM json_each(new.terms);
END;
CREATE TRIGGER tokens_terms_update AFTER UPDATE OF terms ON tokens WHEN old.terms <> new.terms BEGIN
    DELETE FROM token_terms WHERE seq = old.seq AND term IN (SELECT value FROM json_each(old.terms));
    INSERT OR IGNORE INTO token_terms (term, seq) SELECT value, new.seq FROM json_each(new.terms);
END;
