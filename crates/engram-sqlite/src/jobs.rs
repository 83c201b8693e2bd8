//! The embedding job outbox: claim, complete, fail, dead-letter, retry, listing.

use chrono::{DateTime, Utc};
use engram_core::{ClaimedJob, Decoded, Embedded, Job, JobFailure, JobState, RetryPolicy};
use std::time::Duration;

use crate::codec::{self, job_cols, micros, micros_after, to_json, vector_to_blob};
use crate::{Result, SqliteStore};

impl SqliteStore {
    pub(crate) async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            claim_cols!(),
            " WHERE (j.state = 'queued' AND j.next_run_at <= ?1) \
               OR (j.state = 'running' AND j.locked_until < ?1) \
             ORDER BY j.id LIMIT ?2"
        ))
        .bind(micros(now))
        .bind(codec::limit(limit))
        .fetch_all(tx.conn())
        .await?;
        let claimed = lease_rows(&mut tx, &rows, lease, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Claim these jobs if runnable; others (done, dead, leased, orphaned) are left out.
    pub(crate) async fn claim_ids(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            claim_cols!(),
            " WHERE j.id IN (SELECT value FROM json_each(?2)) \
               AND (j.state = 'queued' OR (j.state = 'running' AND j.locked_until < ?1)) \
             ORDER BY j.id"
        ))
        .bind(micros(now))
        .bind(to_json!(ids, "job ids")?)
        .fetch_all(tx.conn())
        .await?;
        let claimed = lease_rows(&mut tx, &rows, lease, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    pub(crate) async fn unpublished(
        &self,
        now: DateTime<Utc>,
        republish_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(u64, Option<DateTime<Utc>>)>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, published_at FROM jobs \
             WHERE ((state = 'queued' AND next_run_at <= ?1) \
                    OR (state = 'running' AND locked_until < ?1)) \
               AND (published_at IS NULL OR published_at < ?2) \
             ORDER BY id LIMIT ?3",
        )
        .bind(micros(now))
        .bind(micros(republish_before))
        .bind(codec::limit(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(id, at)| {
                Ok((
                    codec::unsigned(id, "jobs.id")?,
                    codec::opt_time(at, "jobs.published_at")?,
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
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE jobs SET locked_until = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running'",
        )
        .bind(micros_after(now, lease))
        .bind(to_json!(ids, "job ids")?)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) async fn mark_published(&self, ids: &[u64], now: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET published_at = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(micros(now))
        .bind(to_json!(ids, "job ids")?)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn complete(&self, done: Vec<Embedded>, now: DateTime<Utc>) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let models = crate::models::state(tx.conn()).await?;
        for e in done {
            let key = codec::int(e.key);
            let job_id = codec::int(e.job_id);
            let (job, memory) = (e.job_id, e.key);
            let Some(e) = engram_core::reembed::resolve(e, &models) else {
                // Embedded by a model that is no longer active: leave the job
                // to be claimed again and embedded by the active model.
                tracing::debug!(job, key = memory, "embedding of an inactive model");
                continue;
            };
            let row: Option<(String, bool, Option<String>, bool)> = sqlx::query_as(
                "SELECT checksum, deleted_at IS NULL, embedded_checksum, vector IS NOT NULL \
                 FROM memories WHERE key = ?",
            )
            .bind(key)
            .fetch_optional(tx.conn())
            .await?;
            let Some((checksum, live, embedded_checksum, has_vector)) = row else {
                sqlx::query("DELETE FROM jobs WHERE id = ?")
                    .bind(job_id)
                    .execute(tx.conn())
                    .await?;
                continue;
            };
            if !live || checksum != e.checksum {
                // Deleted, or stale: the text changed after the claim. The
                // memory's current job (if any) has another id and stays.
                tracing::debug!(
                    job = e.job_id,
                    key = e.key,
                    live,
                    "dropping stale embedding"
                );
                sqlx::query("DELETE FROM jobs WHERE id = ?")
                    .bind(job_id)
                    .execute(tx.conn())
                    .await?;
                continue;
            }
            if e.vector.is_none()
                && !(has_vector && embedded_checksum.as_deref() == Some(&checksum))
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
            let seq = tx.next_seq().await?;
            sqlx::query(
                "UPDATE memories SET vector = coalesce(?, vector), embedded_checksum = ?, \
                 embedding_model = ?, embedding_version = ?, state = 'ready', updated_at = ?, \
                 seq = ? WHERE key = ?",
            )
            .bind(e.vector.as_deref().map(vector_to_blob))
            .bind(&e.checksum)
            .bind(&e.model.name)
            .bind(&e.model.version)
            .bind(micros(now))
            .bind(seq)
            .bind(key)
            .execute(tx.conn())
            .await?;
            if let Some(t) = &e.also {
                sqlx::query(
                    "UPDATE memories SET target_vector = ?, target_checksum = ?, \
                     target_version = ? WHERE key = ?",
                )
                .bind(vector_to_blob(&t.vector))
                .bind(&e.checksum)
                .bind(&t.model.version)
                .bind(key)
                .execute(tx.conn())
                .await?;
            }
            // The current text is embedded: any job of this memory is done.
            tx.drop_jobs(key).await?;
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
        let mut tx = self.begin_write().await?;
        for f in failures {
            let job_id = codec::int(f.job_id);
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT attempts, memory_key FROM jobs WHERE id = ? AND state <> 'dead'",
            )
            .bind(job_id)
            .fetch_optional(tx.conn())
            .await?;
            // Unknown (completed, replaced by a newer text, deleted) or already dead.
            let Some((attempts, key)) = row else { continue };
            let attempts = u32::try_from(attempts.saturating_add(1)).unwrap_or(u32::MAX);
            let error =
                engram_core::text::truncate_bytes(&f.error, engram_core::text::MAX_JOB_ERROR_BYTES);
            if attempts >= policy.max_attempts {
                sqlx::query(
                    "UPDATE jobs SET state = 'dead', attempts = ?, last_error = ?, \
                     locked_until = NULL WHERE id = ?",
                )
                .bind(i64::from(attempts))
                .bind(error)
                .bind(job_id)
                .execute(tx.conn())
                .await?;
                let pending: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM memories WHERE key = ? AND deleted_at IS NULL \
                     AND state = 'pending'",
                )
                .bind(key)
                .fetch_optional(tx.conn())
                .await?;
                if pending.is_some() {
                    let seq = tx.next_seq().await?;
                    sqlx::query(
                        "UPDATE memories SET state = 'failed', updated_at = ?, seq = ? \
                         WHERE key = ?",
                    )
                    .bind(micros(now))
                    .bind(seq)
                    .bind(key)
                    .execute(tx.conn())
                    .await?;
                }
                tracing::warn!(job = f.job_id, attempts, error = %error, "embedding job dead-lettered");
            } else {
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', attempts = ?, last_error = ?, \
                     next_run_at = ?, locked_until = NULL, published_at = NULL WHERE id = ?",
                )
                .bind(i64::from(attempts))
                .bind(error)
                .bind(micros_after(now, policy.delay(attempts)))
                .bind(job_id)
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
        let after = after.map_or(0, codec::int);
        let rows = match state {
            Some(state) => {
                sqlx::query(concat!(
                    "SELECT ",
                    job_cols!(),
                    " FROM jobs j JOIN memories m ON m.key = j.memory_key \
                     WHERE j.tenant = ? AND j.state = ? AND j.id > ? ORDER BY j.id LIMIT ?"
                ))
                .bind(tenant)
                .bind(state.as_str())
                .bind(after)
                .bind(codec::limit(limit))
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    job_cols!(),
                    " FROM jobs j JOIN memories m ON m.key = j.memory_key \
                     WHERE j.tenant = ? AND j.id > ? ORDER BY j.id LIMIT ?"
                ))
                .bind(tenant)
                .bind(after)
                .bind(codec::limit(limit))
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.iter().map(codec::job).collect()
    }

    pub(crate) async fn job(&self, tenant: &str, job_id: u64) -> Result<Option<Job>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key WHERE j.id = ? AND j.tenant = ?"
        ))
        .bind(codec::int(job_id))
        .bind(tenant)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(codec::job).transpose()
    }

    pub(crate) async fn retry(
        &self,
        tenant: &str,
        job_id: u64,
        now: DateTime<Utc>,
        ctx: &engram_core::AuditCtx,
    ) -> Result<Option<Job>> {
        let mut tx = self.begin_write().await?;
        let id = codec::int(job_id);
        let Some(key) = sqlx::query_scalar::<_, i64>(
            "SELECT memory_key FROM jobs WHERE id = ? AND tenant = ? AND state = 'dead'",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(tx.conn())
        .await?
        else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, next_run_at = ?, \
             locked_until = NULL, published_at = NULL WHERE id = ?",
        )
        .bind(micros(now))
        .bind(id)
        .execute(tx.conn())
        .await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM memories WHERE key = ? AND deleted_at IS NULL")
                .bind(key)
                .fetch_optional(tx.conn())
                .await?;
        if live.is_some() {
            let seq = tx.next_seq().await?;
            sqlx::query(
                "UPDATE memories SET state = 'pending', updated_at = ?, seq = ? WHERE key = ?",
            )
            .bind(micros(now))
            .bind(seq)
            .bind(key)
            .execute(tx.conn())
            .await?;
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs j JOIN memories m ON m.key = j.memory_key WHERE j.id = ?"
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
        tx.commit().await?;
        Ok(Some(job))
    }
}

/// The columns a claim reads: a job joined with its memory.
macro_rules! claim_cols {
    () => {
        "SELECT j.id AS job_id, j.memory_key, j.attempts, j.traceparent, m.id AS memory_id, \
         m.tenant, m.text, m.speaker, \
         m.checksum, m.embedded_checksum, m.embedding_version, \
         m.deleted_at IS NOT NULL AS deleted \
         FROM jobs j JOIN memories m ON m.key = j.memory_key"
    };
}
use claim_cols;

/// Lease the claimed rows' jobs and drop the orphans (jobs of deleted
/// memories). A row that cannot be decoded is leased too and comes back as
/// [`Corrupt`](engram_core::Corrupt), for the engine to quarantine and fail.
async fn lease_rows(
    tx: &mut crate::WriteTx,
    rows: &[sqlx::sqlite::SqliteRow],
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Decoded<ClaimedJob>>> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut orphans = Vec::new();
    for row in rows {
        // The job id is the jobs table's rowid: it always decodes.
        let job_id = codec::unsigned(sqlx::Row::try_get(row, "job_id")?, "jobs.id")?;
        if sqlx::Row::try_get::<bool, _>(row, "deleted")? {
            orphans.push(job_id);
        } else {
            ids.push(job_id);
            claimed.push(codec::decoded(row, "memory_key", codec::claimed)?);
        }
    }
    if !orphans.is_empty() {
        sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
            .bind(to_json!(&orphans, "job ids")?)
            .execute(tx.conn())
            .await?;
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE jobs SET state = 'running', locked_until = ? \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(micros_after(now, lease))
        .bind(to_json!(&ids, "job ids")?)
        .execute(tx.conn())
        .await?;
    }
    Ok(claimed)
}
