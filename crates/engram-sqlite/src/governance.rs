//! Audit chain, API keys, legal hold, restore, purge and retention sweeps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engram_core::audit::GENESIS;
use engram_core::ApiKey;
use engram_core::{
    AuditAction, AuditCtx, AuditEntry, AuditEvent, AuditQuery, Due, Key, Memory, Permission,
    Result as CoreResult, Role, StoreTx,
};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

use crate::codec::{self, memory_cols, micros, to_json};
use crate::{Result, SqliteError, SqliteStore, WriteTx};

const INSERT_AUDIT: &str = "INSERT INTO audit (tenant, n, at, actor, action, target, request_id, \
     details, prev_hash, hash) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
     value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
     FROM json_each(?)";

const AUDIT_COLS: &str =
    "tenant, n, at, actor, action, target, request_id, details, prev_hash, hash";

const KEY_COLS: &str = "id, tenant, name, role, namespaces, permissions, secret_hash, \
     created_at, created_by, revoked_at";

impl WriteTx {
    /// Append events to their tenants' chains, in order, inside this transaction.
    pub(crate) async fn audit(
        &mut self,
        entries: Vec<AuditEntry>,
        ctx: &AuditCtx,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // Truncate to what the stores keep, so the hash recomputes from the row.
        let at = codec::time(micros(now), "audit.at")?;
        let mut heads: HashMap<String, (u64, String)> = HashMap::new();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            if !heads.contains_key(&entry.tenant) {
                let head = sqlx::query("SELECT n, hash FROM audit_heads WHERE tenant = ?")
                    .bind(&entry.tenant)
                    .fetch_optional(self.conn())
                    .await?;
                let head = match head {
                    Some(r) => (
                        codec::unsigned(r.try_get("n")?, "audit_heads.n")?,
                        r.try_get("hash")?,
                    ),
                    None => (0, GENESIS.to_string()),
                };
                heads.insert(entry.tenant.clone(), head);
            }
            let head = heads.get_mut(&entry.tenant).expect("inserted above");
            let e = AuditEvent::chain(entry, ctx, head.0 + 1, at, head.1.clone());
            *head = (e.n, e.hash.clone());
            rows.push(json!([
                e.tenant,
                e.n,
                micros(e.at),
                e.actor,
                e.action.as_str(),
                e.target,
                e.request_id,
                to_json!(&e.details, "audit details")?,
                e.prev_hash,
                e.hash,
            ]));
        }
        sqlx::query(INSERT_AUDIT)
            .bind(to_json!(&rows, "audit rows")?)
            .execute(self.conn())
            .await?;
        for (tenant, (n, hash)) in heads {
            sqlx::query(
                "INSERT INTO audit_heads (tenant, n, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant) DO UPDATE SET n = ?2, hash = ?3",
            )
            .bind(tenant)
            .bind(codec::int(n))
            .bind(hash)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Place or release a memory's legal hold, in this transaction. Not a
    /// content change: the seq (and so the indexes) stay as they are.
    pub(crate) async fn set_hold(
        &mut self,
        key: engram_core::Key,
        hold: bool,
        now: DateTime<Utc>,
    ) -> Result<Memory> {
        let row = sqlx::query(concat!(
            "UPDATE memories SET legal_hold = ?, updated_at = ? WHERE key = ? RETURNING ",
            memory_cols!()
        ))
        .bind(i64::from(hold))
        .bind(micros(now))
        .bind(codec::int(key))
        .fetch_one(self.conn())
        .await?;
        codec::memory(&row)
    }

    /// The live or deleted memory `id` of `tenant`, for an update in this transaction.
    pub(crate) async fn memory_for_update(
        &mut self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<Memory>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            memory_cols!(),
            ", purged_at FROM memories WHERE id = ? AND tenant = ?"
        ))
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(self.conn())
        .await?;
        match row {
            Some(r) if r.try_get::<Option<i64>, _>("purged_at")?.is_none() => {
                Ok(Some(codec::memory(&r)?))
            }
            _ => Ok(None),
        }
    }
}

fn audit_event(row: &SqliteRow) -> Result<AuditEvent> {
    let action: String = row.try_get("action")?;
    let details: String = row.try_get("details")?;
    Ok(AuditEvent {
        tenant: row.try_get("tenant")?,
        n: codec::unsigned(row.try_get("n")?, "audit.n")?,
        at: codec::time(row.try_get("at")?, "audit.at")?,
        actor: row.try_get("actor")?,
        action: AuditAction::parse(&action)
            .ok_or_else(|| SqliteError::corrupt(format!("audit.action: {action:?}")))?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        details: serde_json::from_str(&details)
            .map_err(|e| SqliteError::corrupt(format!("audit.details: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn api_key(row: &SqliteRow) -> Result<ApiKey> {
    let role: String = row.try_get("role")?;
    let namespaces: Option<String> = row.try_get("namespaces")?;
    let permissions: String = row.try_get("permissions")?;
    let permissions: Vec<String> = serde_json::from_str(&permissions)
        .map_err(|e| SqliteError::corrupt(format!("api_keys.permissions: {e}")))?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| SqliteError::corrupt(format!("api_keys.role: {role:?}")))?,
        namespaces: namespaces
            .map(|n| serde_json::from_str(&n))
            .transpose()
            .map_err(|e| SqliteError::corrupt(format!("api_keys.namespaces: {e}")))?,
        permissions: permissions
            .iter()
            .map(|p| {
                Permission::parse(p)
                    .ok_or_else(|| SqliteError::corrupt(format!("api_keys.permissions: {p:?}")))
            })
            .collect::<Result<_>>()?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: codec::time(row.try_get("created_at")?, "api_keys.created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: codec::opt_time(row.try_get("revoked_at")?, "api_keys.revoked_at")?,
    })
}

impl SqliteStore {
    pub(crate) async fn append_audit_entries(
        &self,
        entries: Vec<AuditEntry>,
        ctx: &AuditCtx,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        tx.audit(entries, ctx, Utc::now()).await?;
        tx.commit().await
    }

    pub(crate) async fn audit_page(&self, tenant: &str, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM audit WHERE tenant = ?1 AND n > ?2 \
             AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR actor = ?4) \
             AND (?5 IS NULL OR target = ?5) AND (?6 IS NULL OR at >= ?6) \
             AND (?7 IS NULL OR at < ?7) ORDER BY n LIMIT ?8"
        ))
        .bind(tenant)
        .bind(q.after.map_or(0, codec::int))
        .bind(q.action.map(|a| a.as_str()))
        .bind(q.actor.as_deref())
        .bind(q.target.as_deref())
        .bind(q.since.map(micros))
        .bind(q.until.map(micros))
        .bind(codec::limit(q.limit.unwrap_or(100)))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(audit_event).collect()
    }

    pub(crate) async fn head(&self, tenant: &str) -> Result<Option<(u64, String)>> {
        let row = sqlx::query("SELECT n, hash FROM audit_heads WHERE tenant = ?")
            .bind(tenant)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            Ok((
                codec::unsigned(r.try_get("n")?, "audit_heads.n")?,
                r.try_get("hash")?,
            ))
        })
        .transpose()
    }

    pub(crate) async fn insert_api_key(&self, key: ApiKey, ctx: &AuditCtx) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let permissions: Vec<&str> = key.permissions.iter().map(|p| p.as_str()).collect();
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
        ))
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(
            key.namespaces
                .as_ref()
                .map(|n| to_json!(n, "namespaces"))
                .transpose()?,
        )
        .bind(to_json!(&permissions, "permissions")?)
        .bind(&key.secret_hash)
        .bind(micros(key.created_at))
        .bind(&key.created_by)
        .execute(tx.conn())
        .await?;
        tx.audit(vec![AuditEntry::key_created(&key)], ctx, key.created_at)
            .await?;
        tx.commit().await
    }

    pub(crate) async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    pub(crate) async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant = ? ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(api_key).collect()
    }

    pub(crate) async fn revoke_key(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
        ctx: &AuditCtx,
    ) -> Result<Option<ApiKey>> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = ? AND tenant = ?"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(tx.conn())
        .await?
        else {
            return Ok(None);
        };
        let mut key = api_key(&row)?;
        if key.revoked_at.is_none() {
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
                .bind(micros(now))
                .bind(id)
                .execute(tx.conn())
                .await?;
            key.revoked_at = Some(codec::time(micros(now), "revoked_at")?);
            tx.audit(
                vec![AuditEntry::key_revoked(tenant, id, &key.name)],
                ctx,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(key))
    }
}

/// Soft-delete a memory with a new seq (its jobs are the caller's to drop).
async fn soft_delete_row(tx: &mut WriteTx, key: i64, now: DateTime<Utc>) -> Result<Memory> {
    let seq = tx.next_seq().await?;
    let row = sqlx::query(concat!(
        "UPDATE memories SET deleted_at = ?1, updated_at = ?1, seq = ?2 WHERE key = ?3 \
         RETURNING ",
        memory_cols!()
    ))
    .bind(micros(now))
    .bind(seq)
    .bind(key)
    .fetch_one(tx.conn())
    .await?;
    codec::memory(&row)
}

/// Erase a memory's content, leaving a deleted tombstone with a new seq (so
/// derived indexes drop it); its jobs are the caller's to drop.
async fn purge_row(tx: &mut WriteTx, key: i64, now: DateTime<Utc>) -> Result<Memory> {
    let seq = tx.next_seq().await?;
    let row = sqlx::query(concat!(
        "UPDATE memories SET text = '', metadata = '{}', tags = '[]', provenance = NULL, \
         client_id = NULL, checksum = '', vector = NULL, embedded_checksum = NULL, \
         target_vector = NULL, target_checksum = NULL, target_version = NULL, \
         deleted_at = coalesce(deleted_at, ?1), purged_at = ?1, updated_at = ?1, seq = ?2 \
         WHERE key = ?3 RETURNING ",
        memory_cols!()
    ))
    .bind(micros(now))
    .bind(seq)
    .bind(key)
    .fetch_one(tx.conn())
    .await?;
    codec::memory(&row)
}

/// The primitives [`engram_core::lifecycle`] composes; SQLite's single
/// writer (`BEGIN IMMEDIATE`) is the lock of every row read here.
#[async_trait]
impl StoreTx for WriteTx {
    async fn lock_memory(&mut self, tenant: &str, id: Uuid) -> CoreResult<Option<Memory>> {
        Ok(self.memory_for_update(tenant, id).await?)
    }

    async fn lock_due(
        &mut self,
        due: Due,
        by: DateTime<Utc>,
        limit: usize,
    ) -> CoreResult<Vec<Memory>> {
        let query = match due {
            Due::Expired => concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE deleted_at IS NULL AND expires_at IS NOT NULL \
                 AND expires_at <= ? AND legal_hold = 0 ORDER BY expires_at, key LIMIT ?"
            ),
            Due::Deleted => concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE deleted_at IS NOT NULL AND purged_at IS NULL \
                 AND deleted_at <= ? AND legal_hold = 0 ORDER BY deleted_at, key LIMIT ?"
            ),
        };
        let rows = sqlx::query(query)
            .bind(micros(by))
            .bind(codec::limit(limit))
            .fetch_all(self.conn())
            .await
            .map_err(SqliteError::from)?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            // A row that cannot be decoded is left for the feed to quarantine.
            if let Ok(m) = codec::decoded(row, "key", codec::memory)? {
                due.push(m);
            }
        }
        Ok(due)
    }

    async fn enqueue_job(
        &mut self,
        m: &Memory,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> CoreResult<()> {
        sqlx::query(crate::memories::INSERT_JOB)
            .bind(&m.tenant)
            .bind(codec::int(m.key))
            .bind(micros(now))
            .bind(micros(now))
            .bind(&audit.traceparent)
            .execute(self.conn())
            .await
            .map_err(SqliteError::from)?;
        Ok(())
    }

    async fn drop_jobs(&mut self, keys: &[Key]) -> CoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM jobs WHERE memory_key IN (SELECT value FROM json_each(?))")
            .bind(to_json!(&keys, "memory keys")?)
            .execute(self.conn())
            .await
            .map_err(SqliteError::from)?;
        Ok(())
    }

    async fn append_audit(
        &mut self,
        entries: Vec<AuditEntry>,
        audit: &AuditCtx,
        now: DateTime<Utc>,
    ) -> CoreResult<()> {
        Ok(self.audit(entries, audit, now).await?)
    }

    async fn set_hold(&mut self, key: Key, hold: bool, now: DateTime<Utc>) -> CoreResult<Memory> {
        Ok(WriteTx::set_hold(self, key, hold, now).await?)
    }

    async fn live_with_checksum(
        &mut self,
        tenant: &str,
        namespace: &str,
        checksum: &str,
        except: Key,
    ) -> CoreResult<Option<Uuid>> {
        let other: Option<String> = sqlx::query_scalar(
            "SELECT id FROM memories WHERE tenant = ? AND namespace = ? AND checksum = ? \
             AND deleted_at IS NULL AND key <> ?",
        )
        .bind(tenant)
        .bind(namespace)
        .bind(checksum)
        .bind(codec::int(except))
        .fetch_optional(self.conn())
        .await
        .map_err(SqliteError::from)?;
        other
            .map(|id| {
                Uuid::parse_str(&id)
                    .map_err(|e| SqliteError::corrupt(format!("memories.id {id:?}: {e}")).into())
            })
            .transpose()
    }

    async fn write_content(&mut self, m: &Memory, now: DateTime<Utc>) -> CoreResult<Memory> {
        let seq = self.next_seq().await?;
        let row = sqlx::query(concat!(
            "UPDATE memories SET text = ?, checksum = ?, state = ?, kind = ?, metadata = ?, \
             tags = ?, expires_at = ?, pii = ?, legal_hold = ?, updated_at = ?, seq = ? \
             WHERE key = ? RETURNING ",
            memory_cols!()
        ))
        .bind(&m.text)
        .bind(&m.checksum)
        .bind(m.state.as_str())
        .bind(m.kind.as_str())
        .bind(to_json!(&m.metadata, "metadata")?)
        .bind(to_json!(&m.tags, "tags")?)
        .bind(m.expires_at.map(micros))
        .bind(to_json!(&m.pii, "pii")?)
        .bind(i64::from(m.legal_hold))
        .bind(micros(now))
        .bind(seq)
        .bind(codec::int(m.key))
        .fetch_one(self.conn())
        .await
        .map_err(SqliteError::from)?;
        Ok(codec::memory(&row)?)
    }

    async fn undelete(&mut self, key: Key, now: DateTime<Utc>) -> CoreResult<Memory> {
        let seq = self.next_seq().await?;
        // The live-uniqueness indexes reject a restore whose text or client id
        // was reused meanwhile (mapped to a conflict).
        let row = sqlx::query(concat!(
            "UPDATE memories SET deleted_at = NULL, updated_at = ?1, seq = ?2 WHERE key = ?3 \
             RETURNING ",
            memory_cols!()
        ))
        .bind(micros(now))
        .bind(seq)
        .bind(codec::int(key))
        .fetch_one(self.conn())
        .await
        .map_err(SqliteError::from)?;
        Ok(codec::memory(&row)?)
    }

    async fn soft_delete_rows(
        &mut self,
        keys: &[Key],
        now: DateTime<Utc>,
    ) -> CoreResult<Vec<Memory>> {
        let mut out = Vec::with_capacity(keys.len());
        for &key in keys {
            out.push(soft_delete_row(self, codec::int(key), now).await?);
        }
        Ok(out)
    }

    async fn purge_rows(&mut self, keys: &[Key], now: DateTime<Utc>) -> CoreResult<Vec<Memory>> {
        let mut out = Vec::with_capacity(keys.len());
        for &key in keys {
            out.push(purge_row(self, codec::int(key), now).await?);
        }
        Ok(out)
    }

    async fn set_namespace_ttl(
        &mut self,
        tenant: &str,
        namespace: &str,
        ttl_seconds: Option<u64>,
    ) -> CoreResult<bool> {
        let done =
            sqlx::query("UPDATE namespaces SET default_ttl_secs = ? WHERE tenant = ? AND name = ?")
                .bind(ttl_seconds.map(codec::int))
                .bind(tenant)
                .bind(namespace)
                .execute(self.conn())
                .await
                .map_err(SqliteError::from)?
                .rows_affected()
                > 0;
        Ok(done)
    }

    async fn commit(self: Box<Self>) -> CoreResult<()> {
        Ok(WriteTx::commit(*self).await?)
    }
}
