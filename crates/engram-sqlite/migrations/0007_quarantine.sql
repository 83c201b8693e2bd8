-- Schema 7: quarantined rows (see engram-core/src/quarantine.rs): one entry
-- per memory key that a node met and could not decode, until the row decodes
-- again. Times are microseconds since the epoch, like everywhere else.
CREATE TABLE quarantine (
    key        INTEGER PRIMARY KEY NOT NULL,
    memory_id  TEXT,
    tenant     TEXT,
    source     TEXT NOT NULL CHECK (source IN ('feed', 'attrs', 'job', 'backfill', 'read')),
    seq        INTEGER,
    error      TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

CREATE INDEX quarantine_tenant ON quarantine (tenant, key);
