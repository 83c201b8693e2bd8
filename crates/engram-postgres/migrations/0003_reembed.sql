-- engram on PostgreSQL, schema version 3: re-embedding to another model.
-- The models the vectors belong to: 'active' (what queries are embedded
-- with) and, while a re-embedding runs, 'target'. Writers that depend on
-- them lock these rows first (see the lock order in src/lib.rs).
CREATE TABLE embedding_models (
    slot    text PRIMARY KEY CHECK (slot IN ('active', 'target')),
    name    text NOT NULL,
    version text NOT NULL,
    dims    integer NOT NULL
);
-- Each memory's vector of the target model, with the checksum and model
-- version it was computed for (current only when both match).
ALTER TABLE memories ADD COLUMN target_embedding vector;
ALTER TABLE memories ADD COLUMN target_checksum text;
ALTER TABLE memories ADD COLUMN target_version text;
