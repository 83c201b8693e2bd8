-- engram authoritative store, schema version 1.
--
-- Times are integer microseconds since the Unix epoch (UTC): compact, exact
-- and sortable. JSON columns hold compact serde_json text. `vector` is the
-- embedding as little-endian f32s.

-- Store-wide counters. `seq` is the last change sequence handed out; every
-- change to a memory takes counter + 1 inside its (single-writer) transaction.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO meta (name, value) VALUES ('seq', 0);

CREATE TABLE namespaces (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;

-- Small, frequently filtered columns come first and the large ones (metadata,
-- text, vector) last, so that scans reading only the former never walk a
-- row's overflow pages.
CREATE TABLE memories (
    key               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    tenant            TEXT NOT NULL,
    namespace         TEXT NOT NULL,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'failed')),
    checksum          TEXT NOT NULL,
    client_id         TEXT,
    seq               INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    expires_at        INTEGER,
    deleted_at        INTEGER,
    legal_hold        INTEGER NOT NULL DEFAULT 0,
    embedded_checksum TEXT,
    embedding_model   TEXT,
    embedding_version TEXT,
    tags              TEXT NOT NULL DEFAULT '[]',
    pii               TEXT NOT NULL DEFAULT '[]',
    provenance        TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    text              TEXT NOT NULL,
    vector            BLOB,
    FOREIGN KEY (tenant, namespace) REFERENCES namespaces (tenant, name)
);

-- The change feed: rows by seq.
CREATE UNIQUE INDEX memories_seq ON memories (seq);
-- Dedupe: at most one live memory per text (checksum) and per client id in a namespace.
CREATE UNIQUE INDEX memories_live_checksum
    ON memories (tenant, namespace, checksum) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX memories_live_client_id
    ON memories (tenant, namespace, client_id)
    WHERE deleted_at IS NULL AND client_id IS NOT NULL;
-- Scans of one or more namespaces, and of a whole tenant.
CREATE INDEX memories_tenant_ns_key ON memories (tenant, namespace, key);
CREATE INDEX memories_tenant_live_key ON memories (tenant, key) WHERE deleted_at IS NULL;
-- Covers the stats counts (per tenant and store-wide) without touching rows.
CREATE INDEX memories_tenant_state ON memories (tenant, state, deleted_at, seq);

-- The embedding outbox. At most one job per memory is queued or running.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT NOT NULL,
    kind         TEXT NOT NULL DEFAULT 'embed' CHECK (kind IN ('embed')),
    memory_key   INTEGER NOT NULL REFERENCES memories (key),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    next_run_at  INTEGER NOT NULL,
    locked_until INTEGER,
    created_at   INTEGER NOT NULL
);

CREATE INDEX jobs_runnable ON jobs (state, next_run_at);
CREATE INDEX jobs_memory ON jobs (memory_key);
CREATE INDEX jobs_tenant ON jobs (tenant, id);
CREATE INDEX jobs_tenant_state ON jobs (tenant, state, id);
