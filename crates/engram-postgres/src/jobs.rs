//! The embedding job outbox: claim, complete, fail, dead-letter, retry,
//! listing, and the publication bookkeeping of an external queue.
//!
//! Claims lock job rows `FOR UPDATE SKIP LOCKED`: a job being claimed,
//! completed or failed by another transaction is skipped rather than waited
//! for, and once that transaction commits the job is leased (or gone), so no
//! two workers on any nodes hold the same job at once.

use chrono::{DateTime, Utc};
use engram_core::{
    AuditCtx, ClaimedJob, Decoded, Embedded, Job, JobFailure, JobState, RetryPolicy,
};
use sqlx::Row;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::codec::{self, claimed_cols, job_cols, ts, ts_after};
use crate::{PgStore, Result, WriteTx};

/// Runnable now (`$1`): queued and due, or running with an expired lease.
macro_rules! runnable {
    () => {
        "((j.state = 'queued' AND j.next_run_at <= $1) \
          OR (j.state = 'running' AND j.locked_until < $1))"
    };
}

impl PgStore {
    pub(crate) async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = ts(now);
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            claimed_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key WHERE ",
            runnable!(),
            " ORDER BY j.id LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
        ))
        .bind(now)
        .bind(codec::limit(limit))
        .fetch_all(tx.conn())
        .await?;
        let claimed = lease_claimed(&mut tx, &rows, lease, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Claim these jobs if runnable (queued, due or not: an announced job
    /// is worked on when its message arrives; or running with an expired
    /// lease); others (done, dead, leased, orphaned) are left out.
    pub(crate) async fn claim_ids(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = ts(now);
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            claimed_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key WHERE j.id = ANY($2) \
             AND (j.state = 'queued' OR (j.state = 'running' AND j.locked_until < $1)) \
             ORDER BY j.id FOR UPDATE OF j SKIP LOCKED"
        ))
        .bind(now)
        .bind(codec::ints(ids))
        .fetch_all(tx.conn())
        .await?;
        let claimed = lease_claimed(&mut tx, &rows, lease, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    pub(crate) async fn unpublished(
        &self,
        now: DateTime<Utc>,
        republish_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(u64, Option<DateTime<Utc>>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT j.id, j.published_at FROM jobs j WHERE ",
            runnable!(),
            " AND (j.published_at IS NULL OR j.published_at < $2) ORDER BY j.id LIMIT $3"
        ))
        .bind(ts(now))
        .bind(ts(republish_before))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    codec::unsigned(r.try_get("id")?, "jobs.id")?,
                    r.try_get("published_at")?,
                ))
            })
            .collect()
    }

    pub(crate) async fn renew(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        // Rows locked in id order, so concurrent writers never deadlock.
        let n = sqlx::query(
            "UPDATE jobs SET locked_until = $1 WHERE id IN \
             (SELECT id FROM jobs WHERE id = ANY($2) AND state = 'running' ORDER BY id FOR UPDATE)",
        )
        .bind(ts_after(now, lease))
        .bind(codec::ints(ids))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) async fn mark_published(&self, ids: &[u64], now: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Rows locked in id order, so concurrent publishers never deadlock.
        sqlx::query(
            "UPDATE jobs SET published_at = $1 WHERE id IN \
             (SELECT id FROM jobs WHERE id = ANY($2) ORDER BY id FOR UPDATE)",
        )
        .bind(ts(now))
        .bind(codec::ints(ids))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn complete(&self, done: Vec<Embedded>, now: DateTime<Utc>) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let now = ts(now);
        let mut tx = self.begin_write().await?;
        // The models first (a switch waits for this completion or it for the
        // switch), then the memories, in key order (see the lock order on WriteTx).
        let models = crate::models::state(tx.conn(), crate::models::Lock::Share).await?;
        let done: Vec<Embedded> = done
            .into_iter()
            .filter_map(|e| {
                let (job, key) = (e.job_id, e.key);
                let resolved = engram_core::reembed::resolve(e, &models);
                if resolved.is_none() {
                    // Embedded by a model that is no longer active: leave the
                    // job to be claimed again and embedded by the active model.
                    tracing::debug!(job, key, "embedding of an inactive model");
                }
                resolved
            })
            .collect();
        let keys: BTreeSet<i64> = done.iter().map(|e| codec::int(e.key)).collect();
        let keys: Vec<i64> = keys.into_iter().collect();
        let rows = sqlx::query(
            "SELECT key, checksum, deleted_at IS NULL AS live, embedded_checksum, \
             embedding IS NOT NULL AS has_vector FROM memories WHERE key = ANY($1) \
             ORDER BY key FOR UPDATE",
        )
        .bind(&keys)
        .fetch_all(tx.conn())
        .await?;
        // key -> (checksum, live, embedded_checksum, has_vector), kept current
        // as the batch is applied in order.
        let mut memories: HashMap<i64, (String, bool, Option<String>, bool)> = HashMap::new();
        for row in &rows {
            memories.insert(
                row.try_get("key")?,
                (
                    row.try_get("checksum")?,
                    row.try_get("live")?,
                    row.try_get("embedded_checksum")?,
                    row.try_get("has_vector")?,
                ),
            );
        }

        let mut stale_jobs: Vec<i64> = Vec::new();
        let mut ready: Vec<Embedded> = Vec::new();
        for e in done {
            let key = codec::int(e.key);
            let Some((checksum, live, embedded_checksum, has_vector)) = memories.get_mut(&key)
            else {
                stale_jobs.push(codec::int(e.job_id));
                continue;
            };
            if !*live || *checksum != e.checksum {
                // Deleted, or stale: the text changed after the claim. The
                // memory's current job (if any) has another id and stays.
                tracing::debug!(
                    job = e.job_id,
                    key = e.key,
                    live = *live,
                    "dropping stale embedding"
                );
                stale_jobs.push(codec::int(e.job_id));
                continue;
            }
            if e.vector.is_none()
                && !(*has_vector && embedded_checksum.as_deref() == Some(checksum.as_str()))
            {
                // "Already current" but it is not: leave the job alone so its
                // lease expires and it is redelivered, now showing the mismatch.
                tracing::warn!(
                    job = e.job_id,
                    key = e.key,
                    "completion without a vector, but no current vector is stored"
                );
                continue;
            }
            *embedded_checksum = Some(e.checksum.clone());
            *has_vector = *has_vector || e.vector.is_some();
            ready.push(e);
        }
        if !stale_jobs.is_empty() {
            sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
                .bind(&stale_jobs)
                .execute(tx.conn())
                .await?;
        }
        if !ready.is_empty() {
            // The current text is embedded: any job of these memories is done.
            let ready_keys: Vec<i64> = ready.iter().map(|e| codec::int(e.key)).collect();
            tx.drop_jobs(&ready_keys).await?;
            let targets: Vec<(i64, String, engram_core::ModelVector)> = ready
                .iter()
                .filter_map(|e| {
                    let t = e.also.clone()?;
                    Some((codec::int(e.key), e.checksum.clone(), t))
                })
                .collect();
            let writes = Writes::of(ready)?;
            // Last: the seqs, and the rows that carry them.
            let seqs: Vec<i64> = tx.next_seqs(writes.key.len()).await?.collect();
            sqlx::query(
                "UPDATE memories m SET embedding = CASE WHEN u.dims IS NULL THEN m.embedding \
                 ELSE (($1::real[])[u.off + 1 : u.off + u.dims])::vector END, \
                 embedded_checksum = u.checksum, embedding_model = u.model, \
                 embedding_version = u.version, state = 'ready', updated_at = $2, seq = u.seq \
                 FROM unnest($3::bigint[], $4::bigint[], $5::int[], $6::int[], $7::text[], \
                 $8::text[], $9::text[]) AS u(key, seq, off, dims, checksum, model, version) \
                 WHERE m.key = u.key",
            )
            .bind(&writes.flat)
            .bind(now)
            .bind(&writes.key)
            .bind(&seqs)
            .bind(&writes.off)
            .bind(&writes.dims)
            .bind(&writes.checksum)
            .bind(&writes.model)
            .bind(&writes.version)
            .execute(tx.conn())
            .await?;
            for (key, checksum, t) in targets {
                sqlx::query(
                    "UPDATE memories SET target_embedding = $1::real[]::vector, \
                     target_checksum = $2, target_version = $3 WHERE key = $4",
                )
                .bind(&t.vector)
                .bind(&checksum)
                .bind(&t.model.version)
                .bind(key)
                .execute(tx.conn())
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn fail(
        &self,
        failures: Vec<JobFailure>,
        policy: RetryPolicy,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let now = ts(now);
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = failures.iter().map(|f| codec::int(f.job_id)).collect();
        // Memories first, then their jobs (see the lock order on WriteTx).
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT memory_key FROM jobs WHERE id = ANY($1) ORDER BY memory_key",
        )
        .bind(&ids)
        .fetch_all(tx.conn())
        .await?;
        sqlx::query("SELECT key FROM memories WHERE key = ANY($1) ORDER BY key FOR UPDATE")
            .bind(&keys)
            .execute(tx.conn())
            .await?;
        let rows = sqlx::query(
            "SELECT id, attempts, memory_key FROM jobs WHERE id = ANY($1) \
             AND state <> 'dead' ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(tx.conn())
        .await?;
        // id -> (attempts, memory key), kept current as the batch is applied in order.
        let mut jobs: HashMap<i64, (i32, i64)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            jobs.insert(
                row.try_get("id")?,
                (row.try_get("attempts")?, row.try_get("memory_key")?),
            );
        }

        let mut failed_memories: Vec<i64> = Vec::new();
        for f in failures {
            let job_id = codec::int(f.job_id);
            // Unknown (completed, replaced by a newer text, deleted) or already dead.
            let Some(&(attempts, key)) = jobs.get(&job_id) else {
                continue;
            };
            let attempts = attempts.saturating_add(1);
            let counted = u32::try_from(attempts).unwrap_or(u32::MAX);
            let error =
                engram_core::text::truncate_bytes(&f.error, engram_core::text::MAX_JOB_ERROR_BYTES);
            if counted >= policy.max_attempts {
                sqlx::query(
                    "UPDATE jobs SET state = 'dead', attempts = $1, last_error = $2, \
                     locked_until = NULL WHERE id = $3",
                )
                .bind(attempts)
                .bind(error)
                .bind(job_id)
                .execute(tx.conn())
                .await?;
                jobs.remove(&job_id);
                if !failed_memories.contains(&key) {
                    failed_memories.push(key);
                }
                tracing::warn!(job = f.job_id, attempts, error = %error, "embedding job dead-lettered");
            } else {
                // Rescheduled: an external queue must announce it again.
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', attempts = $1, last_error = $2, \
                     next_run_at = $3, locked_until = NULL, published_at = NULL WHERE id = $4",
                )
                .bind(attempts)
                .bind(error)
                .bind(ts_after(now, policy.delay(counted)))
                .bind(job_id)
                .execute(tx.conn())
                .await?;
                jobs.insert(job_id, (attempts, key));
            }
        }
        if !failed_memories.is_empty() {
            let pending: Vec<i64> = sqlx::query_scalar(
                "SELECT key FROM memories WHERE key = ANY($1) AND deleted_at IS NULL \
                 AND state = 'pending'",
            )
            .bind(&failed_memories)
            .fetch_all(tx.conn())
            .await?;
            // In the order the jobs died.
            let pending: Vec<i64> = failed_memories
                .into_iter()
                .filter(|k| pending.contains(k))
                .collect();
            if !pending.is_empty() {
                let seqs: Vec<i64> = tx.next_seqs(pending.len()).await?.collect();
                sqlx::query(
                    "UPDATE memories m SET state = 'failed', updated_at = $1, seq = u.seq \
                     FROM unnest($2::bigint[], $3::bigint[]) AS u(key, seq) WHERE m.key = u.key",
                )
                .bind(now)
                .bind(&pending)
                .bind(&seqs)
                .execute(tx.conn())
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key \
             WHERE j.tenant = $1 AND ($2::text IS NULL OR j.state = $2) AND j.id > $3 \
             ORDER BY j.id LIMIT $4"
        ))
        .bind(tenant)
        .bind(state.map(|s| s.as_str()))
        .bind(after.map_or(0, codec::int))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(codec::job).collect()
    }

    pub(crate) async fn job(&self, tenant: &str, job_id: u64) -> Result<Option<Job>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key \
             WHERE j.id = $1 AND j.tenant = $2"
        ))
        .bind(codec::int(job_id))
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(codec::job).transpose()
    }

    pub(crate) async fn retry(
        &self,
        tenant: &str,
        job_id: u64,
        now: DateTime<Utc>,
        ctx: &AuditCtx,
    ) -> Result<Option<Job>> {
        let now = ts(now);
        let id = codec::int(job_id);
        let mut tx = self.begin_write().await?;
        // Memory first, then the job (see the lock order on WriteTx).
        let Some(key) = sqlx::query_scalar::<_, i64>(
            "SELECT memory_key FROM jobs WHERE id = $1 AND tenant = $2 AND state = 'dead'",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(tx.conn())
        .await?
        else {
            return Ok(None);
        };
        let live: Option<bool> =
            sqlx::query_scalar("SELECT deleted_at IS NULL FROM memories WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(tx.conn())
                .await?;
        let requeued = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, next_run_at = $1, \
             locked_until = NULL, published_at = NULL \
             WHERE id = $2 AND tenant = $3 AND state = 'dead'",
        )
        .bind(now)
        .bind(id)
        .bind(tenant)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if requeued == 0 {
            // Retried or removed by a concurrent call meanwhile.
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
        let job = codec::job(&row)?;
        tx.audit(
            vec![engram_core::AuditEntry::job_retried(
                tenant,
                job_id,
                job.memory_id,
            )],
            ctx,
            now,
        )
        .await?;
        if live == Some(true) {
            let seq = tx.next_seq().await?;
            sqlx::query(
                "UPDATE memories SET state = 'pending', updated_at = $1, seq = $2 WHERE key = $3",
            )
            .bind(now)
            .bind(seq)
            .bind(key)
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok(Some(job))
    }
}

/// The embedding writes of a batch of completions, column by column, one per
/// memory: a memory completed twice in one batch gets the later completion
/// (and the later vector, if only the earlier one had one). The vectors
/// travel as one flat `real[]`; row `i` holds `flat[off+1 ..= off+dims]`,
/// or keeps its stored vector when `dims` is NULL.
struct Writes {
    key: Vec<i64>,
    off: Vec<Option<i32>>,
    dims: Vec<Option<i32>>,
    checksum: Vec<String>,
    model: Vec<String>,
    version: Vec<String>,
    flat: Vec<f32>,
}

impl Writes {
    fn of(ready: Vec<Embedded>) -> Result<Self> {
        let mut last: Vec<Embedded> = Vec::with_capacity(ready.len());
        let mut at: HashMap<u64, usize> = HashMap::with_capacity(ready.len());
        for e in ready {
            match at.get(&e.key) {
                Some(&i) => {
                    let earlier = std::mem::replace(&mut last[i], e);
                    if last[i].vector.is_none() {
                        last[i].vector = earlier.vector;
                    }
                }
                None => {
                    at.insert(e.key, last.len());
                    last.push(e);
                }
            }
        }
        let n = last.len();
        let mut w = Writes {
            key: Vec::with_capacity(n),
            off: Vec::with_capacity(n),
            dims: Vec::with_capacity(n),
            checksum: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            flat: Vec::new(),
        };
        let too_long = || crate::PgError::Encode("embeddings: batch too large".into());
        for e in last {
            w.key.push(codec::int(e.key));
            match &e.vector {
                Some(v) => {
                    w.off
                        .push(Some(i32::try_from(w.flat.len()).map_err(|_| too_long())?));
                    w.dims
                        .push(Some(i32::try_from(v.len()).map_err(|_| too_long())?));
                    w.flat.extend_from_slice(v);
                }
                None => {
                    w.off.push(None);
                    w.dims.push(None);
                }
            }
            w.checksum.push(e.checksum);
            w.model.push(e.model.name);
            w.version.push(e.model.version);
        }
        Ok(w)
    }
}

/// Lease the claimable jobs among `rows` (selected with `claimed_cols` and
/// locked) and remove orphans: jobs whose memory was deleted.
/// A row that cannot be decoded is leased too and comes back as
/// [`Corrupt`](engram_core::Corrupt), for the engine to quarantine and fail.
async fn lease_claimed(
    tx: &mut WriteTx,
    rows: &[sqlx::postgres::PgRow],
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Decoded<ClaimedJob>>> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    let mut orphans: Vec<i64> = Vec::new();
    for row in rows {
        // The job id is a NOT NULL bigint: it always decodes.
        let job_id: i64 = row.try_get("job_id")?;
        if row.try_get::<bool, _>("deleted")? {
            orphans.push(job_id);
        } else {
            ids.push(job_id);
            claimed.push(codec::decoded(row, "memory_key", codec::claimed)?);
        }
    }
    if !orphans.is_empty() {
        sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
            .bind(&orphans)
            .execute(tx.conn())
            .await?;
    }
    if !ids.is_empty() {
        sqlx::query("UPDATE jobs SET state = 'running', locked_until = $1 WHERE id = ANY($2)")
            .bind(ts_after(now, lease))
            .bind(&ids)
            .execute(tx.conn())
            .await?;
    }
    Ok(claimed)
}
