//! Memories and namespaces: get, scan, listing, stats (changes: see `engram_core::lifecycle`).

use chrono::{DateTime, Utc};
use engram_core::{Decoded, Key, Memory, NamespaceInfo, SessionRange, StoreStats};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::codec::{self, memory_cols};
use crate::{PgError, PgStore, Result, WriteTx};

/// Enqueue an embedding job for a memory:
/// `($1 tenant, $2 memory key, $3 now, $4 traceparent)`.
pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs (tenant, kind, memory_key, state, \
     attempts, next_run_at, created_at, traceparent) \
     VALUES ($1, 'embed', $2, 'queued', 0, $3, $3, $4)";

impl PgStore {
    pub(crate) async fn get_memory(&self, tenant: &str, id: Uuid) -> Result<Option<Memory>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            memory_cols!(),
            " FROM memories WHERE id = $1 AND tenant = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(codec::memory).transpose()
    }

    pub(crate) async fn memories_by_keys(
        &self,
        tenant: &str,
        keys: &[Key],
    ) -> Result<Vec<Decoded<Memory>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            memory_cols!(),
            " FROM memories WHERE key = ANY($1) AND tenant = $2 AND deleted_at IS NULL"
        ))
        .bind(codec::ints(keys))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }

    pub(crate) async fn messages(
        &self,
        tenant: &str,
        namespace: &str,
        session: &str,
        range: &SessionRange,
    ) -> Result<Vec<Decoded<Memory>>> {
        let sql = if range.descending {
            concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = $1 AND namespace = $2 AND session = $3 \
                 AND deleted_at IS NULL AND position > $4 AND position < $5 \
                 ORDER BY position DESC LIMIT $6"
            )
        } else {
            concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = $1 AND namespace = $2 AND session = $3 \
                 AND deleted_at IS NULL AND position > $4 AND position < $5 \
                 ORDER BY position LIMIT $6"
            )
        };
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(namespace)
            .bind(session)
            .bind(range.after.map_or(-1, codec::int))
            .bind(range.before.map_or(i64::MAX, codec::int))
            .bind(i64::try_from(range.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }

    pub(crate) async fn scan_memories(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.map_or(0, codec::int);
        let rows = if namespaces.is_empty() {
            sqlx::query(concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = $1 AND deleted_at IS NULL AND key > $2 \
                 ORDER BY key LIMIT $3"
            ))
            .bind(tenant)
            .bind(after)
            .bind(codec::limit(limit))
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = $1 AND namespace = ANY($2) \
                 AND deleted_at IS NULL AND key > $3 ORDER BY key LIMIT $4"
            ))
            .bind(tenant)
            .bind(namespaces)
            .bind(after)
            .bind(codec::limit(limit))
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }

    /// Live memories in event-time order (ties by key), strictly past
    /// `after` in that order.
    pub(crate) async fn scan_memories_by_time(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<(DateTime<Utc>, Key)>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (cmp, dir) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        // $1 tenant, $2 namespaces (empty: all), $3 / $4 the position, $5 limit.
        let mut sql = format!(
            "SELECT {} FROM memories WHERE tenant = $1 AND deleted_at IS NULL \
             AND (cardinality($2::text[]) = 0 OR namespace = ANY($2))",
            memory_cols!()
        );
        if after.is_some() {
            sql.push_str(&format!(" AND (occurred_at, key) {cmp} ($3, $4)"));
        } else {
            sql.push_str(" AND $3::timestamptz IS NULL AND $4::bigint IS NULL");
        }
        sql.push_str(&format!(" ORDER BY occurred_at {dir}, key {dir} LIMIT $5"));
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(namespaces)
            .bind(after.map(|(t, _)| codec::ts(t)))
            .bind(after.map(|(_, k)| codec::int(k)))
            .bind(codec::limit(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }

    pub(crate) async fn list_namespaces(&self, tenant: &str) -> Result<Vec<NamespaceInfo>> {
        let rows = sqlx::query(
            "SELECT n.name, n.created_at, n.default_ttl_secs, \
             (SELECT count(*) FROM memories m WHERE m.tenant = n.tenant \
              AND m.namespace = n.name AND m.deleted_at IS NULL) AS memories \
             FROM namespaces n WHERE n.tenant = $1 ORDER BY n.name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(codec::namespace).collect()
    }

    pub(crate) async fn has_namespace(&self, tenant: &str, namespace: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM namespaces WHERE tenant = $1 AND name = $2)",
        )
        .bind(tenant)
        .bind(namespace)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn store_stats(&self, tenant: Option<&str>) -> Result<StoreStats> {
        macro_rules! memories {
            () => {
                "SELECT \
                 count(*) FILTER (WHERE deleted_at IS NULL) AS memories, \
                 count(*) FILTER (WHERE deleted_at IS NULL AND state = 'pending') AS pending, \
                 count(*) FILTER (WHERE deleted_at IS NULL AND state = 'failed') AS failed, \
                 count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted, \
                 coalesce(max(seq), 0) AS max_seq \
                 FROM memories"
            };
        }
        macro_rules! jobs {
            () => {
                "SELECT \
                 count(*) FILTER (WHERE state IN ('queued', 'running')) AS queued, \
                 count(*) FILTER (WHERE state = 'dead') AS dead, \
                 min(created_at) FILTER (WHERE state IN ('queued', 'running')) AS oldest \
                 FROM jobs"
            };
        }
        let (m, j) = match tenant {
            Some(t) => (
                sqlx::query(concat!(memories!(), " WHERE tenant = $1"))
                    .bind(t)
                    .fetch_one(&self.pool)
                    .await?,
                sqlx::query(concat!(jobs!(), " WHERE tenant = $1"))
                    .bind(t)
                    .fetch_one(&self.pool)
                    .await?,
            ),
            None => (
                sqlx::query(memories!()).fetch_one(&self.pool).await?,
                sqlx::query(jobs!()).fetch_one(&self.pool).await?,
            ),
        };
        let n = |row: &PgRow, col: &str| -> Result<u64> { codec::unsigned(row.try_get(col)?, col) };
        Ok(StoreStats {
            memories: n(&m, "memories")?,
            pending: n(&m, "pending")?,
            failed: n(&m, "failed")?,
            deleted: n(&m, "deleted")?,
            jobs_queued: n(&j, "queued")?,
            jobs_dead: n(&j, "dead")?,
            oldest_job_at: j.try_get("oldest")?,
            max_seq: n(&m, "max_seq")?,
        })
    }
}

/// Mark memories deleted, each with a new seq (so indexes drop them), in the
/// order given; returns them in that order. The caller drops their jobs
/// (nothing is left to embed, and dead jobs of a deleted memory are not
/// retryable either) and appends the audit events first: this takes the seq.
pub(crate) async fn soft_delete_rows(
    tx: &mut WriteTx,
    keys: &[i64],
    now: DateTime<Utc>,
) -> Result<Vec<Memory>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = tx.next_seqs(keys.len()).await?.collect();
    let rows = sqlx::query(concat!(
        "UPDATE memories m SET deleted_at = $1, updated_at = $1, seq = u.seq \
         FROM unnest($2::bigint[], $3::bigint[]) AS u(key, seq) WHERE m.key = u.key \
         RETURNING ",
        "m.key, m.id, m.tenant, m.namespace, m.kind, m.state, m.checksum, m.client_id, m.seq, \
         m.created_at, m.updated_at, m.expires_at, m.deleted_at, m.legal_hold, \
         m.embedding_model, m.embedding_version, m.tags, m.pii, m.provenance, m.metadata, m.text, \
         m.occurred_at, m.session, m.position, m.speaker"
    ))
    .bind(now)
    .bind(keys)
    .bind(&seqs)
    .fetch_all(tx.conn())
    .await?;
    in_order(rows, keys)
}

/// Decoded memories from `rows`, in the order of `keys` (each must be there).
pub(crate) fn in_order(rows: Vec<PgRow>, keys: &[i64]) -> Result<Vec<Memory>> {
    let mut by_key: std::collections::HashMap<u64, Memory> = rows
        .iter()
        .map(|r| codec::memory(r).map(|m| (m.key, m)))
        .collect::<Result<_>>()?;
    keys.iter()
        .map(|&k| {
            codec::unsigned(k, "key").and_then(|k| {
                by_key
                    .remove(&k)
                    .ok_or_else(|| PgError::corrupt(format!("memory {k} not updated")))
            })
        })
        .collect()
}
