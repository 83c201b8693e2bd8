-- engram on PostgreSQL, schema version 2: trace context of jobs.
-- The W3C traceparent of the request that enqueued the job (NULL when traces
-- are off), so the worker's span links back to that request.
ALTER TABLE jobs ADD COLUMN traceparent text;
