-- Schema 6: conversation memory (the embedded store's schema 8).
--
-- * `occurred_at`: when what a memory records happened (its event time),
--   distinct from `created_at`; earlier rows take their creation time.
-- * `session`, `position`, `speaker`: a message's conversation session, its
--   place in the session's order and who said it. NULL on other memories.
--   Positions are unique among a session's live messages.
-- * `context`: what the keyword side searches beside the text, with a lower
--   weight (a message's neighbouring turns), written by the engine's indexer
--   (`PgKeywordIndex::apply`), which is where the embedded mode's tantivy
--   index gets it too.
-- * `tsv` is generated again: the speaker and the text with weight A, the
--   context with weight B (`ts_rank_cd` weighs B below A).

ALTER TABLE memories
    ADD COLUMN occurred_at timestamptz,
    ADD COLUMN session text,
    ADD COLUMN position bigint,
    ADD COLUMN speaker text,
    ADD COLUMN context text;

UPDATE memories SET occurred_at = created_at WHERE occurred_at IS NULL;

ALTER TABLE memories
    ALTER COLUMN occurred_at SET NOT NULL,
    ADD CONSTRAINT memories_occurred_at CHECK (
        occurred_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'),
    ADD CONSTRAINT memories_session CHECK (
        (session IS NULL AND position IS NULL AND speaker IS NULL)
        OR (session IS NOT NULL AND position IS NOT NULL AND position >= 0));

CREATE UNIQUE INDEX memories_live_session_position
    ON memories (tenant, namespace, session, position)
    WHERE deleted_at IS NULL AND session IS NOT NULL;
CREATE INDEX memories_occurred ON memories (tenant, occurred_at) WHERE deleted_at IS NULL;

ALTER TABLE memories DROP COLUMN tsv;
ALTER TABLE memories ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', coalesce(speaker || ': ', '') || text), 'A')
    || setweight(to_tsvector('english', coalesce(context, '')), 'B')) STORED;
CREATE INDEX memories_tsv ON memories USING gin (tsv) WHERE deleted_at IS NULL;
