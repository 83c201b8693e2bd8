-- engram authoritative store, schema version 5: re-embedding to another model.
-- The models the vectors belong to: 'active' (what queries are embedded
-- with) and, while a re-embedding runs, 'target'.
CREATE TABLE embedding_models (
    slot    TEXT PRIMARY KEY CHECK (slot IN ('active', 'target')),
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    dims    INTEGER NOT NULL
);
-- Each memory's vector of the target model, with the checksum and model
-- version it was computed for (current only when both match).
ALTER TABLE memories ADD COLUMN target_vector BLOB;
ALTER TABLE memories ADD COLUMN target_checksum TEXT;
ALTER TABLE memories ADD COLUMN target_version TEXT;
