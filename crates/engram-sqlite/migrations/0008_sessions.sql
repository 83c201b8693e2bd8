-- Schema 8: conversation memory.
--
-- * `occurred_at`: when what a memory records happened (its event time),
--   distinct from `created_at`; earlier rows take their creation time.
-- * `session`, `position`, `speaker`: a message's conversation session, its
--   place in the session's order and who said it. NULL on other memories.
--   Positions are unique among a session's live messages.

ALTER TABLE memories ADD COLUMN occurred_at INTEGER;
ALTER TABLE memories ADD COLUMN session TEXT;
ALTER TABLE memories ADD COLUMN position INTEGER;
ALTER TABLE memories ADD COLUMN speaker TEXT;

UPDATE memories SET occurred_at = created_at WHERE occurred_at IS NULL;

CREATE UNIQUE INDEX memories_live_session_position
    ON memories (tenant, namespace, session, position)
    WHERE deleted_at IS NULL AND session IS NOT NULL;
CREATE INDEX memories_occurred ON memories (tenant, occurred_at) WHERE deleted_at IS NULL;

-- The same guard as schema 6 for the new columns: a value the store could
-- not read back is refused at write time.
CREATE TRIGGER memories_guard_session_insert BEFORE INSERT ON memories
WHEN NOT (
    typeof(NEW.occurred_at) = 'integer'
    AND NEW.occurred_at BETWEEN -62135596800000000 AND 253402300799999999
    AND ((NEW.session IS NULL AND NEW.position IS NULL AND NEW.speaker IS NULL)
         OR (typeof(NEW.session) = 'text' AND typeof(NEW.position) = 'integer'
             AND NEW.position >= 0
             AND (NEW.speaker IS NULL OR typeof(NEW.speaker) = 'text')))
)
BEGIN
    SELECT RAISE(ABORT, 'memory row out of range or of the wrong type (occurred_at or session)');
END;

CREATE TRIGGER memories_guard_session_update
BEFORE UPDATE OF occurred_at, session, position, speaker ON memories
WHEN NOT (
    typeof(NEW.occurred_at) = 'integer'
    AND NEW.occurred_at BETWEEN -62135596800000000 AND 253402300799999999
    AND ((NEW.session IS NULL AND NEW.position IS NULL AND NEW.speaker IS NULL)
         OR (typeof(NEW.session) = 'text' AND typeof(NEW.position) = 'integer'
             AND NEW.position >= 0
             AND (NEW.speaker IS NULL OR typeof(NEW.speaker) = 'text')))
)
BEGIN
    SELECT RAISE(ABORT, 'memory row out of range or of the wrong type (occurred_at or session)');
END;
