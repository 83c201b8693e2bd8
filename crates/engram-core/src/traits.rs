//! The contracts back-ends implement. The engine only ever talks to these.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use crate::apikey::ApiKey;
use crate::audit::{AuditCtx, AuditEntry, AuditEvent, AuditQuery};
use crate::error::Result;
use crate::scope::Scope;
use crate::types::*;

/// A namespace as listed by the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceInfo {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub memories: u64,
    /// Default time-to-live of new memories in this namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl_seconds: Option<u64>,
}

/// Retry schedule for failed jobs.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// After this many failed attempts a job is dead-lettered.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Exponential back-off: base * 2^(attempt-1), capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
        }
    }
}

/// The authoritative store: memories, namespaces, jobs and the change feed.
///
/// Invariants every implementation keeps:
/// - every change to a memory (insert, update, delete, embedding written) gives
///   it a new `seq`, strictly greater than any seq committed before it, so that
///   `changes_since` never misses a committed change;
/// - a memory and its embedding job are inserted in one transaction;
/// - nothing is returned as inserted before it is durable;
/// - every write that changes a memory, a key, a job or a namespace appends
///   its audit event(s) to the tenant's hash chain in the same transaction
///   (see [`crate::audit`]);
/// - a memory under legal hold is never changed, expired, deleted or purged:
///   such calls fail with [`Error::LegalHold`](crate::Error::LegalHold).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Begin a write transaction: the primitives the engine composes its
    /// lifecycle transitions from (see [`StoreTx`] and [`crate::lifecycle`]).
    async fn begin(&self) -> Result<Box<dyn StoreTx>>;

    /// Insert memories and their embedding jobs atomically, creating namespaces
    /// on first use. An item whose checksum or client id matches a live memory in
    /// the same tenant and namespace returns that memory (`created: false`).
    /// An item without `expires_at` gets its namespace's default TTL.
    /// Each created memory gets a `create` audit event.
    async fn insert(&self, items: Vec<NewMemory>, audit: &AuditCtx) -> Result<Vec<Inserted>>;

    /// A memory by id within a tenant, including soft-deleted ones.
    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Memory>>;

    /// Live (not deleted) memories of a tenant with these keys, in any order;
    /// missing, deleted or other tenants' keys are left out. Used to hydrate search hits.
    /// A row that cannot be decoded comes back as [`Corrupt`] (as in every
    /// method returning [`Decoded`] rows), never as an error of the call.
    async fn get_by_keys(&self, tenant: &str, keys: &[Key]) -> Result<Vec<Decoded<Memory>>>;

    /// Live (not deleted) memories of a tenant, in key order, after `after`.
    /// An empty `namespaces` means all namespaces.
    async fn scan(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>>;

    /// Live memories of a tenant in event-time order, ties broken by key
    /// (`descending` reverses both), strictly past `after` = (event time,
    /// key) in that order. An empty `namespaces` means all namespaces.
    async fn scan_by_time(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<(DateTime<Utc>, Key)>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>>;

    async fn namespaces(&self, tenant: &str) -> Result<Vec<NamespaceInfo>>;

    /// Live messages (any state) of a session, as `range` says. Rows that
    /// cannot be decoded come back in place as [`Corrupt`](crate::Corrupt).
    async fn session_messages(
        &self,
        tenant: &str,
        namespace: &str,
        session: &str,
        range: &SessionRange,
    ) -> Result<Vec<Decoded<Memory>>>;

    async fn namespace_exists(&self, tenant: &str, namespace: &str) -> Result<bool>;

    /// Claim up to `limit` runnable jobs (queued and due, or running with an
    /// expired lease), leasing them for `lease`.
    async fn claim_jobs(
        &self,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>>;

    /// Renew the leases of these running jobs until `now + lease` (a worker
    /// still busy with them). Jobs no longer running (done, dead, requeued)
    /// are left alone; returns how many were renewed.
    async fn renew_leases(&self, ids: &[u64], lease: Duration, now: DateTime<Utc>)
        -> Result<usize>;

    /// Write embeddings, mark memories ready and delete their jobs, in one
    /// transaction. A result whose checksum no longer matches the memory is stale
    /// (the text changed meanwhile) and is dropped without touching the memory.
    async fn complete_jobs(&self, done: Vec<Embedded>, now: DateTime<Utc>) -> Result<()>;

    /// Record failed attempts: schedule a retry with back-off, or dead-letter the
    /// job (and mark its memory `failed`) once `policy.max_attempts` is reached.
    async fn fail_jobs(
        &self,
        failures: Vec<JobFailure>,
        policy: RetryPolicy,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Claim these jobs (announced by an external queue) if they are
    /// runnable: queued, or running with an expired lease. Jobs that are done,
    /// dead, leased to another worker or whose memory is deleted are left out
    /// (orphans of deleted memories are removed), so the caller can drop
    /// their messages.
    async fn claim_jobs_by_id(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>>;

    /// The transactional outbox of an external queue: up to `limit` ids of
    /// runnable jobs (queued and due, or running with an expired lease) that
    /// were never announced, or last announced before `republish_before`
    /// (their message may be lost), oldest first, with when they were last
    /// announced.
    async fn unpublished_jobs(
        &self,
        now: DateTime<Utc>,
        republish_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(u64, Option<DateTime<Utc>>)>>;

    /// Record that these jobs were announced at `now`. A job rescheduled by
    /// [`Store::fail_jobs`] or [`Store::retry_job`] counts as unannounced again.
    async fn mark_published(&self, ids: &[u64], now: DateTime<Utc>) -> Result<()>;

    async fn list_jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Job>>;

    async fn get_job(&self, tenant: &str, job_id: u64) -> Result<Option<Job>>;

    /// Put a dead job back in the queue with its attempts reset; its memory goes
    /// back to `pending`. `None` if the job does not exist or is not dead.
    async fn retry_job(
        &self,
        tenant: &str,
        job_id: u64,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Job>>;

    /// Append events that go with no other change (reads).
    async fn append_audit(&self, entries: Vec<AuditEntry>, audit: &AuditCtx) -> Result<()>;

    /// A tenant's audit events in chain order, filtered.
    async fn audit_events(&self, tenant: &str, query: &AuditQuery) -> Result<Vec<AuditEvent>>;

    /// The tenant's recorded chain head `(n, hash)`, if it has events.
    async fn audit_head(&self, tenant: &str) -> Result<Option<(u64, String)>>;

    /// Store a new API key (its hash) and audit `key_create`.
    async fn create_api_key(&self, key: ApiKey, audit: &AuditCtx) -> Result<()>;

    /// A key by id, in any tenant (authentication does not know the tenant yet).
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>>;

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>>;

    /// Revoke a key and audit `key_revoke`. `None` if the tenant has no such
    /// key; a key revoked already is returned unchanged.
    async fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<ApiKey>>;

    /// Latest state of every memory changed after `after_seq`, in seq order.
    /// A row that cannot be decoded is a [`ChangeOp::Corrupt`] change at its
    /// seq, so the feed always advances.
    async fn changes_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Change>>;

    /// Filter attributes of every ready, live memory, in key order after `after`.
    async fn live_attrs(
        &self,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<(Key, DocAttrs)>>>;

    /// Record quarantined rows: one entry per key, replacing what is
    /// recorded except `first_seen`.
    async fn quarantine(&self, entries: Vec<QuarantineEntry>) -> Result<()>;

    /// Drop the entries of these keys (their rows decode again). Returns how many.
    async fn release_quarantine(&self, keys: &[Key]) -> Result<usize>;

    /// Quarantine entries in key order after `after`: a tenant's, or all
    /// (`None`, for the operator's view and readiness).
    async fn quarantined(
        &self,
        tenant: Option<&str>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>>;

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats>;

    /// Cheap liveness check for readiness probes.
    async fn ping(&self) -> Result<()>;

    // Re-embedding to another model (see `crate::reembed`). A memory has two
    // vector slots: the active model's (`vector`, what indexes and searches
    // use) and the target model's, both tied to the checksum they embed.

    /// The recorded active and target models.
    async fn model_state(&self) -> Result<ModelState>;

    /// Record `model` as the active model if none is recorded yet (a store
    /// created before models were recorded takes the first node's model).
    /// Returns the state after.
    async fn init_model(&self, model: &ModelInfo) -> Result<ModelState>;

    /// Start moving vectors to `target`, or keep going if it is the target
    /// already. A different earlier target is replaced (its vectors no longer
    /// count). `Conflict` if `target` is the active model's version.
    async fn begin_reembed(&self, target: &ModelInfo) -> Result<ModelState>;

    /// Up to `limit` memories, in key order after `after`, holding a current
    /// vector of the active model but none of the target for their text
    /// (soft-deleted, unpurged ones included, so a restore finds a vector of
    /// the right model). Empty when no re-embedding runs.
    async fn reembed_todo(
        &self,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<ReembedItem>>>;

    /// Write target vectors of `model` (which must be the current target;
    /// otherwise nothing is written). A vector whose checksum no longer
    /// matches the memory is dropped. Each written memory gets a new seq, so
    /// derived indexes see its target vector. Returns how many were written.
    async fn put_target_vectors(
        &self,
        model: &ModelInfo,
        items: Vec<TargetVector>,
    ) -> Result<usize>;

    /// How far the running re-embedding is (zeros when none runs).
    async fn reembed_progress(&self) -> Result<ReembedProgress>;

    /// Make the target the active model, atomically: only if `target` is the
    /// current target and every memory holding a current active vector also
    /// holds its target vector. Then every target vector moves to the active
    /// slot (without new seqs: the shadow index has them already), the target
    /// becomes the active model and no target remains. `Ok(false)`, changing
    /// nothing, when the target is another or the re-embedding is incomplete.
    async fn switch_model(&self, target: &ModelInfo) -> Result<bool>;
}

/// Which memories a retention sweep takes (see [`StoreTx::lock_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Live memories whose `expires_at` is at or before the time given.
    Expired,
    /// Soft-deleted, unpurged memories deleted at or before the time given.
    Deleted,
}

/// One write transaction of a [`Store`]: row-level primitives and nothing
/// else. What a transition means (which rows, which checks, which audit
/// events with which details) is decided once, in [`crate::lifecycle`], for
/// every store. Dropping a transaction without [`commit`](Self::commit)
/// rolls it back.
///
/// Call order, which keeps a store's lock order (and so writers free of
/// deadlocks): lock memory rows, then change jobs and namespaces, then
/// [`append_audit`](Self::append_audit), and last the row changes that take
/// a change seq ([`undelete`](Self::undelete),
/// [`soft_delete_rows`](Self::soft_delete_rows),
/// [`purge_rows`](Self::purge_rows)). [`set_hold`](Self::set_hold) takes no
/// seq and may come anywhere after the lock.
#[async_trait]
pub trait StoreTx: Send {
    /// The live or soft-deleted, unpurged memory `id` of `tenant`, its row
    /// locked until the transaction ends. `None` if there is none.
    async fn lock_memory(&mut self, tenant: &str, id: Uuid) -> Result<Option<Memory>>;

    /// Lock up to `limit` memories that are `due` by `by` and not on legal
    /// hold, oldest first (by expiry or deletion time). Rows another
    /// transaction holds may be skipped (sweepers on several nodes split the
    /// work); rows that cannot be decoded are skipped (the feed quarantines them).
    async fn lock_due(&mut self, due: Due, by: DateTime<Utc>, limit: usize) -> Result<Vec<Memory>>;

    /// Queue an embedding job for `m`, linked to the trace of `audit`.
    async fn enqueue_job(&mut self, m: &Memory, now: DateTime<Utc>, audit: &AuditCtx)
        -> Result<()>;

    /// Remove every job of these memories.
    async fn drop_jobs(&mut self, keys: &[Key]) -> Result<()>;

    /// Append events to their tenants' hash chains, in order, at `now`.
    async fn append_audit(
        &mut self,
        entries: Vec<AuditEntry>,
        audit: &AuditCtx,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// The id of a live memory of `tenant` in `namespace`, other than
    /// `except`, whose text has `checksum`.
    async fn live_with_checksum(
        &mut self,
        tenant: &str,
        namespace: &str,
        checksum: &str,
        except: Key,
    ) -> Result<Option<Uuid>>;

    /// Set a locked memory's legal hold. Not a content change: the seq stays.
    async fn set_hold(&mut self, key: Key, hold: bool, now: DateTime<Utc>) -> Result<Memory>;

    /// Write a locked memory's content fields (text, checksum, state, kind,
    /// metadata, tags, expiry, PII flags) and its legal hold as `m` has them,
    /// with a new seq. A text another live memory of the namespace has taken
    /// meanwhile is a `Conflict`.
    async fn write_content(&mut self, m: &Memory, now: DateTime<Utc>) -> Result<Memory>;

    /// Clear a locked memory's deletion, with a new seq. A live memory that
    /// has taken its text or client id meanwhile makes this a `Conflict`.
    async fn undelete(&mut self, key: Key, now: DateTime<Utc>) -> Result<Memory>;

    /// Soft-delete locked memories, each with a new seq; returned in `keys`
    /// order. Their jobs are left to [`drop_jobs`](Self::drop_jobs).
    async fn soft_delete_rows(&mut self, keys: &[Key], now: DateTime<Utc>) -> Result<Vec<Memory>>;

    /// Erase locked memories' content (text, metadata, tags, provenance,
    /// client id, vectors), leaving deleted tombstones with new seqs;
    /// returned in `keys` order. Their jobs are left to
    /// [`drop_jobs`](Self::drop_jobs).
    async fn purge_rows(&mut self, keys: &[Key], now: DateTime<Utc>) -> Result<Vec<Memory>>;

    /// Set (or clear) a namespace's default TTL. `false` if it does not exist.
    async fn set_namespace_ttl(
        &mut self,
        tenant: &str,
        namespace: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<bool>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Something derived from the store's change feed that can be thrown away and
/// rebuilt.
#[async_trait]
pub trait DerivedIndex: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Highest change seq whose effect is durably persisted. On start the
    /// engine replays the feed from the smallest of these.
    fn persisted_seq(&self) -> u64;

    /// Apply changes (in seq order; idempotent). Once this returns, searches see them.
    async fn apply(&self, changes: &[Change]) -> Result<()>;

    /// Make everything applied so far durable and record `seq` as the persisted position.
    async fn persist(&self, seq: u64) -> Result<()>;

    /// Remove every entry and reset the persisted position to 0.
    async fn clear(&self) -> Result<()>;

    /// Number of indexed entries.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Approximate nearest-neighbour search over embeddings.
#[async_trait]
pub trait VectorIndex: DerivedIndex {
    /// Top `k` keys the scope allows, by cosine similarity (higher is closer).
    /// The scope is applied inside the search, so `k` hits come back when `k` exist.
    async fn search(&self, query: &[f32], k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>>;

    /// Exact (brute-force) top `k` within the scope: the ground truth the ANN
    /// search is measured against, and what callers get with `"exact": true`.
    async fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>>;
}

/// BM25 keyword search.
#[async_trait]
pub trait KeywordIndex: DerivedIndex {
    /// Top `k` keys the scope allows, by BM25 score. The scope is applied inside the search.
    async fn search(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>>;
}

/// Turns texts into unit-length vectors.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    fn model(&self) -> &ModelInfo;

    /// How the engine builds the texts this embedder gets from memories
    /// (part of `model().version`; see [`crate::context::with_recipe`]).
    fn recipe(&self) -> crate::context::VectorRecipe {
        crate::context::VectorRecipe::default()
    }

    /// One vector per text, L2-normalised, `model().dims` long.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// Delivers embedding jobs to workers. The store stays authoritative for job
/// state; a queue only decides who works on what, when.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// New jobs were committed to the store.
    async fn enqueued(&self) -> Result<()>;

    /// Up to `limit` jobs to work on; waits at most `wait` for one to appear.
    async fn claim(&self, limit: usize, wait: Duration) -> Result<Vec<ClaimedJob>>;

    async fn complete(&self, done: Vec<Embedded>) -> Result<()>;

    async fn fail(&self, failures: Vec<JobFailure>) -> Result<()>;

    /// How often a worker still busy with claimed jobs must call
    /// [`renew`](Self::renew) so that they are not handed to another worker;
    /// `None`: never needed.
    fn renew_every(&self) -> Option<Duration> {
        None
    }

    /// The worker is still working on these claimed jobs: keep them leased.
    async fn renew(&self, _job_ids: &[u64]) -> Result<()> {
        Ok(())
    }

    /// Cheap liveness check for readiness probes. The default suits queues
    /// that live in the store (the store is checked on its own).
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
