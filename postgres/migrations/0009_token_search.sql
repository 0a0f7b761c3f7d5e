-- The token list's sorting and search (GET /v1/tokens?sort=, ?q=).
--
-- Sorting by expiry or last use is a range of an index on the same
-- expression the listing orders by, with seq to break ties (the cursor
-- is the pair): a token that never expires sorts as the largest time, one
-- never used as 0.
CREATE INDEX tokens_expires ON tokens ((COALESCE(expires_at, 9223372036854775807)), seq);
CREATE INDEX tokens_last_used ON tokens ((COALESCE(last_used_at, 0)), seq);

-- A search word matches the start of a word of a token's name, subject or
-- tags, or of its id. terms holds those words (a JSON array, computed by
-- latchkey.SearchTerms when the token is written) and token_terms indexes
-- them, in byte order (COLLATE "C") so that a word is a range of its key.
-- A new token's terms are inserted with it (postgres/tokens.go); a change
-- to them goes through the trigger below. The tokens already stored get
-- their terms from the migration's Go step (postgres/postgres.go).
ALTER TABLE tokens ADD COLUMN terms TEXT NOT NULL DEFAULT '[]';
CREATE TABLE token_terms (
    term TEXT COLLATE "C" NOT NULL,
    seq  BIGINT NOT NULL,
    PRIMARY KEY (term, seq)
);
CREATE FUNCTION tokens_terms_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM token_terms WHERE seq = OLD.seq AND term IN (SELECT jsonb_array_elements_text(OLD.terms::jsonb));
    INSERT INTO token_terms (term, seq) SELECT DISTINCT jsonb_array_elements_text(NEW.terms::jsonb), NEW.seq
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER tokens_terms_update AFTER UPDATE OF terms ON tokens
    FOR EACH ROW WHEN (OLD.terms IS DISTINCT FROM NEW.terms) EXECUTE FUNCTION tokens_terms_update();
