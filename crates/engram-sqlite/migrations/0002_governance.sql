-- engram authoritative store, schema version 2: governance.

-- Default time-to-live of new memories, per namespace.
ALTER TABLE namespaces ADD COLUMN default_ttl_secs INTEGER;

-- Set when a hard delete erased the memory's content; the row stays as a
-- tombstone so the change feed and the audit trail stay complete.
ALTER TABLE memories ADD COLUMN purged_at INTEGER;

-- The TTL sweeper's and the purger's scans.
CREATE INDEX memories_expiry ON memories (expires_at)
    WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX memories_deleted ON memories (deleted_at)
    WHERE deleted_at IS NOT NULL AND purged_at IS NULL;

-- The audit log: one hash chain per tenant (see engram_core::audit).
CREATE TABLE audit (
    tenant     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (tenant, n)
) WITHOUT ROWID;

CREATE INDEX audit_target ON audit (tenant, target, n);

-- Each tenant's chain head, updated with every append: removing events from
-- the end of the chain must also rewrite this row to go unnoticed.
CREATE TABLE audit_heads (
    tenant TEXT PRIMARY KEY NOT NULL,
    n      INTEGER NOT NULL,
    hash   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'writer', 'reader')),
    namespaces  TEXT,
    permissions TEXT NOT NULL DEFAULT '[]',
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  INTEGER
) WITHOUT ROWID;

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
