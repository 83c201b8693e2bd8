//! engram-nats: the NATS JetStream [`JobQueue`](engram_core::JobQueue) for
//! scale-out engram, where API nodes and embedding workers run as many
//! processes sharing one store.
//!
//! # Design: the store decides, NATS delivers
//!
//! The store's job table stays the single source of truth for every job's
//! state (queued, running under a lease, dead, or gone once completed).
//! JetStream only tells workers *which* job to look at next, so that idle
//! workers wait on a pull request instead of polling the database. Every
//! message can be lost, duplicated or late without harm:
//!
//! - **Transactional outbox.** A job row is committed together with its
//!   memory; nothing is published inside that transaction. A dispatcher task
//!   owned by each [`NatsQueue`] (woken by
//!   [`enqueued`](engram_core::JobQueue::enqueued) and by a periodic tick)
//!   reads [`Store::unpublished_jobs`](engram_core::Store::unpublished_jobs),
//!   records them with [`Store::mark_published`](engram_core::Store::mark_published)
//!   and publishes each job id to `<prefix>.jobs.<job id>`, with header
//!   `Nats-Msg-Id: job-<id>-<last announcement in µs, or 0>` so nodes
//!   publishing the same job at once are deduplicated, then awaits the
//!   publish acks. A publish that fails is marked as announced long ago, so
//!   the next round retries it.
//! - **Sweeper.** The same query returns runnable jobs whose last announcement
//!   is older than `republish_after`: their message was probably lost (stream
//!   purged, server restored from an old snapshot, ...) and they are published
//!   again, under a new message id.
//! - **One message per job.** The work-queue stream keeps at most one message
//!   per job subject (`max_msgs_per_subject: 1`, discard new per subject).
//!   A republish while the job's message still lives is refused, so the
//!   sweeper never piles up copies behind a backlog; a message that can no
//!   longer be delivered (past `max_deliver`, its last receiver gone) is
//!   purged and replaced once it is older than the whole redelivery schedule
//!   plus `republish_after`.
//! - **Claiming.** One durable pull consumer (explicit ack,
//!   `ack_wait` = lease, `max_deliver`, doubling back-off between
//!   redeliveries) is shared by every worker on every node.
//!   [`claim`](engram_core::JobQueue::claim) fetches up to `limit` messages
//!   (waiting up to `wait` for the first), then
//!   [`Store::claim_jobs_by_id`](engram_core::Store::claim_jobs_by_id) leases
//!   the runnable ones. Messages of jobs that are not runnable (done, dead,
//!   deleted, leased elsewhere) are duplicates and are acknowledged away;
//!   those of claimed jobs are kept until the job is completed or failed.
//! - **Completion and failure** go to the store first
//!   ([`Store::complete_jobs`](engram_core::Store::complete_jobs),
//!   [`Store::fail_jobs`](engram_core::Store::fail_jobs)); only then is the
//!   message acknowledged. If the store call fails the message is left alone
//!   and JetStream redelivers it after the lease. A failed attempt is retried
//!   by the store's schedule: `fail_jobs` sets the job's next run time and
//!   marks it unannounced, and the dispatcher publishes it again when due.
//!   A job the store dead-letters also gets a copy on `<prefix>.dead`.
//! - **Poison jobs.** A message delivered `max_deliver` times (its workers
//!   kept dying or hanging on it) is not worked on again: the job is recorded
//!   dead in the store (`"delivered N times without completion"`, memory
//!   `failed`), a copy goes to `<prefix>.dead` (kept in the `<PREFIX>_DEAD`
//!   stream for `dead_letter_max_age`), and the message is terminated.
//!
//! # Invariants
//!
//! - A job is worked on only by the worker holding its store lease; NATS
//!   never grants work by itself. Duplicate or late messages are harmless.
//! - The store lease equals `ack_wait` minus a small margin (a tenth, at most
//!   1 s), counted from when the message arrived. So when JetStream
//!   redelivers a message, the job's lease has expired and the new worker can
//!   claim it; the old worker's late completion is still accepted (the store
//!   completes idempotently, by checksum).
//! - The lease must exceed the longest time a worker takes for one batch:
//!   there are no progress acks and no lease renewal, so a slower batch is
//!   redelivered and embedded twice (harmless, but wasted).
//! - Every runnable job is eventually announced: by the dispatcher right away,
//!   or by the sweeper within `republish_after` of a lost message. A lost
//!   message therefore delays a job, never loses it.
//! - Nothing here waits unboundedly on NATS: connecting is bounded by
//!   `connect_timeout`, every request by `request_timeout`; failures surface as
//!   [`engram_core::Error::Unavailable`] with `what: "nats"` (HTTP 503 with
//!   `Retry-After`).
//!
//! All nodes of a deployment must use the same [`NatsOptions`] `prefix`,
//! `lease` and `max_deliver`.

mod error;
mod options;
mod queue;

pub use error::NatsError;
pub use options::NatsOptions;
pub use queue::{NatsQueue, JOB_ID_HEADER};
