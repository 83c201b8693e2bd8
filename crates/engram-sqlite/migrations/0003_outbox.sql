-- engram authoritative store, schema version 3: the outbox of external queues.
-- When a queue (NATS JetStream in the scale-out mode) last announced a job;
-- NULL means never, or rescheduled since (a retry must be announced again).
ALTER TABLE jobs ADD COLUMN published_at INTEGER;

CREATE INDEX jobs_unpublished ON jobs (state, published_at);
