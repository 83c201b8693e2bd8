-- Schema 6: the store refuses to write a value it could not read back.
--
-- SQLite keeps any value in any column, so a computed value that overflows
-- (an integer TTL times 10^6 past i64 becomes a REAL) used to be stored and
-- then failed to decode on every read, stalling the change feed for every
-- tenant. These triggers reject such rows at write time; the engine
-- validates first, so reaching them means a validation was missed, and the
-- caller gets a 400 `out_of_range` instead of a poisoned store.
--
-- Times are microseconds since the epoch between year 1 and the end of 9999
-- (limits::MAX_TIME_RFC3339); TTLs between 1 s and 100 years
-- (limits::MAX_TTL_SECONDS).

-- Repair what earlier versions may have stored: an overflowed expiry meant
-- "practically never", the latest representable time keeps that meaning; a
-- namespace TTL above the limit becomes the limit. Before the triggers exist,
-- so these updates are not refused.
UPDATE memories SET expires_at = 253402300799000000
    WHERE expires_at IS NOT NULL
      AND (typeof(expires_at) <> 'integer' OR expires_at > 253402300799999999);
UPDATE namespaces SET default_ttl_secs = 3153600000
    WHERE default_ttl_secs IS NOT NULL
      AND (typeof(default_ttl_secs) <> 'integer' OR default_ttl_secs > 3153600000
           OR default_ttl_secs < 1);

CREATE TRIGGER memories_guard_insert BEFORE INSERT ON memories
WHEN NOT (
    typeof(NEW.seq) = 'integer' AND NEW.seq >= 0
    AND typeof(NEW.created_at) = 'integer'
    AND NEW.created_at BETWEEN -62135596800000000 AND 253402300799999999
    AND typeof(NEW.updated_at) = 'integer'
    AND NEW.updated_at BETWEEN -62135596800000000 AND 253402300799999999
    AND (NEW.expires_at IS NULL OR (typeof(NEW.expires_at) = 'integer'
         AND NEW.expires_at BETWEEN -62135596800000000 AND 253402300799999999))
    AND (NEW.deleted_at IS NULL OR (typeof(NEW.deleted_at) = 'integer'
         AND NEW.deleted_at BETWEEN -62135596800000000 AND 253402300799999999))
    AND NEW.legal_hold IN (0, 1)
    AND NEW.kind IN ('fact', 'message', 'document_chunk', 'summary')
    AND typeof(NEW.id) = 'text' AND typeof(NEW.tenant) = 'text'
    AND typeof(NEW.namespace) = 'text' AND typeof(NEW.checksum) = 'text'
    AND typeof(NEW.text) = 'text'
    AND (NEW.client_id IS NULL OR typeof(NEW.client_id) = 'text')
    AND (CASE WHEN json_valid(NEW.tags) THEN json_type(NEW.tags) END) = 'array'
    AND (CASE WHEN json_valid(NEW.pii) THEN json_type(NEW.pii) END) = 'array'
    AND (CASE WHEN json_valid(NEW.metadata) THEN json_type(NEW.metadata) END) = 'object'
    AND (NEW.provenance IS NULL
         OR (CASE WHEN json_valid(NEW.provenance) THEN json_type(NEW.provenance) END) = 'object')
)
BEGIN
    SELECT RAISE(ABORT, 'memory row out of range or of the wrong type (times, TTL, kind or JSON)');
END;

-- Every update changes seq and updated_at; the other columns are checked
-- when they are written.
CREATE TRIGGER memories_guard_update BEFORE UPDATE ON memories
WHEN NOT (
    typeof(NEW.seq) = 'integer' AND NEW.seq >= 0
    AND typeof(NEW.updated_at) = 'integer'
    AND NEW.updated_at BETWEEN -62135596800000000 AND 253402300799999999
    AND (NEW.expires_at IS NULL OR (typeof(NEW.expires_at) = 'integer'
         AND NEW.expires_at BETWEEN -62135596800000000 AND 253402300799999999))
    AND (NEW.deleted_at IS NULL OR (typeof(NEW.deleted_at) = 'integer'
         AND NEW.deleted_at BETWEEN -62135596800000000 AND 253402300799999999))
    AND (NEW.purged_at IS NULL OR (typeof(NEW.purged_at) = 'integer'
         AND NEW.purged_at BETWEEN -62135596800000000 AND 253402300799999999))
    AND NEW.legal_hold IN (0, 1)
    AND NEW.kind IN ('fact', 'message', 'document_chunk', 'summary')
    AND typeof(NEW.text) = 'text'
    AND (NEW.vector IS NULL OR (typeof(NEW.vector) = 'blob' AND length(NEW.vector) % 4 = 0))
    AND (NEW.target_vector IS NULL
         OR (typeof(NEW.target_vector) = 'blob' AND length(NEW.target_vector) % 4 = 0))
)
BEGIN
    SELECT RAISE(ABORT, 'memory row out of range or of the wrong type (times, kind or vector)');
END;

CREATE TRIGGER memories_guard_update_json BEFORE UPDATE OF tags, pii, metadata, provenance ON memories
WHEN NOT (
    (CASE WHEN json_valid(NEW.tags) THEN json_type(NEW.tags) END) = 'array'
    AND (CASE WHEN json_valid(NEW.pii) THEN json_type(NEW.pii) END) = 'array'
    AND (CASE WHEN json_valid(NEW.metadata) THEN json_type(NEW.metadata) END) = 'object'
    AND (NEW.provenance IS NULL
         OR (CASE WHEN json_valid(NEW.provenance) THEN json_type(NEW.provenance) END) = 'object')
)
BEGIN
    SELECT RAISE(ABORT, 'memory row has malformed JSON (tags, pii, metadata or provenance)');
END;

CREATE TRIGGER namespaces_guard_insert BEFORE INSERT ON namespaces
WHEN NOT (
    typeof(NEW.created_at) = 'integer'
    AND (NEW.default_ttl_secs IS NULL OR (typeof(NEW.default_ttl_secs) = 'integer'
         AND NEW.default_ttl_secs BETWEEN 1 AND 3153600000))
)
BEGIN
    SELECT RAISE(ABORT, 'default_ttl_secs must be between 1 and 3153600000 (100 years)');
END;

CREATE TRIGGER namespaces_guard_update BEFORE UPDATE OF default_ttl_secs ON namespaces
WHEN NOT (
    NEW.default_ttl_secs IS NULL OR (typeof(NEW.default_ttl_secs) = 'integer'
    AND NEW.default_ttl_secs BETWEEN 1 AND 3153600000)
)
BEGIN
    SELECT RAISE(ABORT, 'default_ttl_secs must be between 1 and 3153600000 (100 years)');
END;

-- Job times are computed by the engine (saturating), so only their type is guarded.
CREATE TRIGGER jobs_guard_insert BEFORE INSERT ON jobs
WHEN NOT (
    typeof(NEW.next_run_at) = 'integer' AND typeof(NEW.created_at) = 'integer'
    AND typeof(NEW.attempts) = 'integer'
    AND (NEW.locked_until IS NULL OR typeof(NEW.locked_until) = 'integer')
)
BEGIN
    SELECT RAISE(ABORT, 'job row of the wrong type');
END;

CREATE TRIGGER jobs_guard_update BEFORE UPDATE ON jobs
WHEN NOT (
    typeof(NEW.next_run_at) = 'integer' AND typeof(NEW.attempts) = 'integer'
    AND (NEW.locked_until IS NULL OR typeof(NEW.locked_until) = 'integer')
    AND (NEW.published_at IS NULL OR typeof(NEW.published_at) = 'integer')
)
BEGIN
    SELECT RAISE(ABORT, 'job row of the wrong type');
END;
