-- Schema 5: quarantined rows (see engram-core/src/quarantine.rs): one entry
-- per memory key that a node met and could not decode, until the row decodes
-- again. Shared by every node.
CREATE TABLE quarantine (
    key        bigint PRIMARY KEY,
    memory_id  uuid,
    tenant     text,
    source     text NOT NULL CHECK (source IN ('feed', 'attrs', 'job', 'backfill', 'read')),
    seq        bigint,
    error      text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);

CREATE INDEX quarantine_tenant ON quarantine (tenant, key);
