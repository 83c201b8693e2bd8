-- engram authoritative store on PostgreSQL, schema version 1.
--
-- Mirrors the embedded SQLite schema (crates/engram-sqlite/migrations) with
-- native types: timestamptz (microsecond precision, as the engine uses),
-- uuid, jsonb, text[] and pgvector's `vector`. The embedding lives in the
-- memory row; the HNSW index over it is created by the vector index at open
-- time, because its dimension comes from the configured model.

-- pgvector: created by a superuser beforehand (scripts/services.sh does);
-- this is then a no-op that still fails clearly when the extension is missing.
CREATE EXTENSION IF NOT EXISTS vector;

-- Store-wide counters. `seq` is the last change sequence handed out. Every
-- change to a memory takes counter + 1 inside its transaction; the row lock
-- taken by that UPDATE is held until commit, so seq order is commit order and
-- the change feed (rows with seq > position) never skips a committed change.
CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

INSERT INTO meta (name, value) VALUES ('seq', 0);

CREATE TABLE namespaces (
    tenant           text NOT NULL,
    name             text NOT NULL,
    created_at       timestamptz NOT NULL,
    default_ttl_secs bigint,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE memories (
    key               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                uuid NOT NULL UNIQUE,
    tenant            text NOT NULL,
    namespace         text NOT NULL,
    kind              text NOT NULL,
    state             text NOT NULL CHECK (state IN ('pending', 'ready', 'failed')),
    checksum          text NOT NULL,
    client_id         text,
    seq               bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    expires_at        timestamptz,
    deleted_at        timestamptz,
    purged_at         timestamptz,
    legal_hold        boolean NOT NULL DEFAULT false,
    embedded_checksum text,
    embedding_model   text,
    embedding_version text,
    tags              text[] NOT NULL DEFAULT '{}',
    pii               jsonb NOT NULL DEFAULT '[]',
    provenance        jsonb,
    metadata          jsonb NOT NULL DEFAULT '{}',
    text              text NOT NULL,
    embedding         vector,
    -- PostgreSQL full-text search: the keyword index of the scale-out mode.
    tsv               tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
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
CREATE INDEX memories_tenant_ns_key ON memories (tenant, namespace, key);
CREATE INDEX memories_tenant_live_key ON memories (tenant, key) WHERE deleted_at IS NULL;
CREATE INDEX memories_tenant_state ON memories (tenant, state) WHERE deleted_at IS NULL;
CREATE INDEX memories_expiry ON memories (expires_at)
    WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX memories_deleted ON memories (deleted_at)
    WHERE deleted_at IS NOT NULL AND purged_at IS NULL;
CREATE INDEX memories_tsv ON memories USING gin (tsv) WHERE deleted_at IS NULL;
CREATE INDEX memories_metadata ON memories USING gin (metadata jsonb_path_ops);
CREATE INDEX memories_tags ON memories USING gin (tags);

-- The embedding outbox. At most one job per memory is queued or running.
-- `published_at`: when a queue (NATS) last announced the job; NULL = not yet.
CREATE TABLE jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL,
    kind         text NOT NULL DEFAULT 'embed' CHECK (kind IN ('embed')),
    memory_key   bigint NOT NULL REFERENCES memories (key),
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    next_run_at  timestamptz NOT NULL,
    locked_until timestamptz,
    created_at   timestamptz NOT NULL,
    published_at timestamptz
);

CREATE INDEX jobs_runnable ON jobs (state, next_run_at);
CREATE INDEX jobs_memory ON jobs (memory_key);
CREATE INDEX jobs_tenant ON jobs (tenant, id);
CREATE INDEX jobs_tenant_state ON jobs (tenant, state, id);

-- The audit log: one hash chain per tenant (see engram_core::audit).
-- `details` is kept as the exact JSON text that was hashed.
CREATE TABLE audit (
    tenant     text NOT NULL,
    n          bigint NOT NULL,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    request_id text,
    details    text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL,
    PRIMARY KEY (tenant, n)
);

CREATE INDEX audit_target ON audit (tenant, target, n);

-- Each tenant's chain head; appends lock this row (SELECT ... FOR UPDATE), so
-- a tenant's chain grows strictly in order across nodes.
CREATE TABLE audit_heads (
    tenant text PRIMARY KEY,
    n      bigint NOT NULL,
    hash   text NOT NULL
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'writer', 'reader')),
    namespaces  jsonb,
    permissions jsonb NOT NULL DEFAULT '[]',
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
