-- Schema 4: the store refuses to write a value it could not read back
-- (chrono cannot decode 'infinity' or years past 262143, the engine cannot
-- decode a non-object metadata or an unknown kind). The engine validates
-- first; reaching a constraint means a validation was missed, and the
-- caller gets a 400 `out_of_range` instead of a poisoned store. Same ranges
-- as the embedded store (SQLite migration 0006): times up to the end of year
-- 9999, TTLs between 1 s and 100 years.

-- Repair what earlier versions may have stored (see SQLite 0006).
UPDATE memories SET expires_at = '9999-12-31 23:59:59+00'
    WHERE expires_at > '9999-12-31 23:59:59.999999+00' OR expires_at = '-infinity';
UPDATE namespaces SET default_ttl_secs = 3153600000
    WHERE default_ttl_secs > 3153600000 OR default_ttl_secs < 1;

ALTER TABLE namespaces ADD CONSTRAINT namespaces_ttl_range
    CHECK (default_ttl_secs IS NULL OR default_ttl_secs BETWEEN 1 AND 3153600000);

ALTER TABLE memories
    ADD CONSTRAINT memories_kind
        CHECK (kind IN ('fact', 'message', 'document_chunk', 'summary')),
    ADD CONSTRAINT memories_times CHECK (
        created_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
        AND updated_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
        AND (expires_at IS NULL
             OR expires_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00')
        AND (deleted_at IS NULL
             OR deleted_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00')
        AND (purged_at IS NULL
             OR purged_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00')),
    ADD CONSTRAINT memories_json CHECK (
        jsonb_typeof(metadata) = 'object'
        AND jsonb_typeof(pii) = 'array'
        AND (provenance IS NULL OR jsonb_typeof(provenance) = 'object'));
