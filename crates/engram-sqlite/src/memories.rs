//! Memories and namespaces: get, scan, listing, stats (changes: see `engram_core::lifecycle`).

use chrono::{DateTime, Utc};
use engram_core::{Decoded, Key, Memory, NamespaceInfo, SessionRange, StoreStats};
use sqlx::Row;
use uuid::Uuid;

use crate::codec::{self, memory_cols, to_json};
use crate::{Result, SqliteStore};

/// Enqueue an embedding job for a memory.
pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs (tenant, kind, memory_key, state, attempts, \
     next_run_at, created_at, traceparent) VALUES (?, 'embed', ?, 'queued', 0, ?, ?, ?)";

impl SqliteStore {
    pub(crate) async fn get_memory(&self, tenant: &str, id: Uuid) -> Result<Option<Memory>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            memory_cols!(),
            " FROM memories WHERE id = ? AND tenant = ?"
        ))
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(&self.reader)
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
            " FROM memories WHERE key IN (SELECT value FROM json_each(?)) \
             AND tenant = ? AND deleted_at IS NULL"
        ))
        .bind(to_json!(keys, "keys")?)
        .bind(tenant)
        .fetch_all(&self.reader)
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
                " FROM memories WHERE tenant = ? AND namespace = ? AND session = ? \
                 AND deleted_at IS NULL AND position > ? AND position < ? \
                 ORDER BY position DESC LIMIT ?"
            )
        } else {
            concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = ? AND namespace = ? AND session = ? \
                 AND deleted_at IS NULL AND position > ? AND position < ? \
                 ORDER BY position LIMIT ?"
            )
        };
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(namespace)
            .bind(session)
            .bind(range.after.map_or(-1, codec::int))
            .bind(range.before.map_or(i64::MAX, codec::int))
            .bind(codec::limit(range.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }
}

impl SqliteStore {
    pub(crate) async fn scan_memories(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>> {
        let after = after.map_or(0, codec::int);
        let rows = if namespaces.is_empty() {
            sqlx::query(concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = ? AND deleted_at IS NULL AND key > ? \
                 ORDER BY key LIMIT ?"
            ))
            .bind(tenant)
            .bind(after)
            .bind(codec::limit(limit))
            .fetch_all(&self.reader)
            .await?
        } else {
            sqlx::query(concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE tenant = ? \
                 AND namespace IN (SELECT value FROM json_each(?)) \
                 AND deleted_at IS NULL AND key > ? ORDER BY key LIMIT ?"
            ))
            .bind(tenant)
            .bind(to_json!(namespaces, "namespaces")?)
            .bind(after)
            .bind(codec::limit(limit))
            .fetch_all(&self.reader)
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
        let (cmp, dir) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let mut sql = format!(
            "SELECT {} FROM memories WHERE tenant = ? AND deleted_at IS NULL",
            memory_cols!()
        );
        if !namespaces.is_empty() {
            sql.push_str(" AND namespace IN (SELECT value FROM json_each(?))");
        }
        if after.is_some() {
            sql.push_str(&format!(" AND (occurred_at, key) {cmp} (?, ?)"));
        }
        sql.push_str(&format!(" ORDER BY occurred_at {dir}, key {dir} LIMIT ?"));
        let mut q = sqlx::query(&sql).bind(tenant);
        if !namespaces.is_empty() {
            q = q.bind(to_json!(namespaces, "namespaces")?);
        }
        if let Some((t, key)) = after {
            q = q.bind(codec::micros(t)).bind(codec::int(key));
        }
        let rows = q.bind(codec::limit(limit)).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::memory))
            .collect()
    }

    pub(crate) async fn list_namespaces(&self, tenant: &str) -> Result<Vec<NamespaceInfo>> {
        let rows = sqlx::query(
            "SELECT n.name, n.created_at, n.default_ttl_secs, \
             (SELECT count(*) FROM memories m WHERE m.tenant = n.tenant \
              AND m.namespace = n.name AND m.deleted_at IS NULL) AS memories \
             FROM namespaces n WHERE n.tenant = ? ORDER BY n.name",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(codec::namespace).collect()
    }

    pub(crate) async fn has_namespace(&self, tenant: &str, namespace: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM namespaces WHERE tenant = ? AND name = ?")
                .bind(tenant)
                .bind(namespace)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    pub(crate) async fn store_stats(&self, tenant: Option<&str>) -> Result<StoreStats> {
        // Both answered from covering indexes (memories_tenant_state, jobs_tenant_state).
        macro_rules! memories {
            () => {
                "SELECT \
                 coalesce(sum(deleted_at IS NULL), 0) AS memories, \
                 coalesce(sum(deleted_at IS NULL AND state = 'pending'), 0) AS pending, \
                 coalesce(sum(deleted_at IS NULL AND state = 'failed'), 0) AS failed, \
                 coalesce(sum(deleted_at IS NOT NULL), 0) AS deleted, \
                 coalesce(max(seq), 0) AS max_seq \
                 FROM memories"
            };
        }
        macro_rules! jobs {
            () => {
                "SELECT \
                 coalesce(sum(state IN ('queued', 'running')), 0) AS queued, \
                 coalesce(sum(state = 'dead'), 0) AS dead, \
                 min(CASE WHEN state IN ('queued', 'running') THEN created_at END) AS oldest \
                 FROM jobs"
            };
        }
        let (m, j) = match tenant {
            Some(t) => (
                sqlx::query(concat!(memories!(), " WHERE tenant = ?"))
                    .bind(t)
                    .fetch_one(&self.reader)
                    .await?,
                sqlx::query(concat!(jobs!(), " WHERE tenant = ?"))
                    .bind(t)
                    .fetch_one(&self.reader)
                    .await?,
            ),
            None => (
                sqlx::query(memories!()).fetch_one(&self.reader).await?,
                sqlx::query(jobs!()).fetch_one(&self.reader).await?,
            ),
        };
        let n = |row: &sqlx::sqlite::SqliteRow, col: &str| -> Result<u64> {
            codec::unsigned(row.try_get(col)?, col)
        };
        Ok(StoreStats {
            memories: n(&m, "memories")?,
            pending: n(&m, "pending")?,
            failed: n(&m, "failed")?,
            deleted: n(&m, "deleted")?,
            jobs_queued: n(&j, "queued")?,
            jobs_dead: n(&j, "dead")?,
            oldest_job_at: j
                .try_get::<Option<i64>, _>("oldest")?
                .map(|v| codec::time(v, "oldest"))
                .transpose()?,
            max_seq: n(&m, "max_seq")?,
        })
    }
}
