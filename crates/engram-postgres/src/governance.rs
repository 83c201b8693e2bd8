//! Audit chain, API keys, legal hold, restore, purge and retention sweeps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engram_core::ApiKey;
use engram_core::{
    AuditAction, AuditCtx, AuditEntry, AuditEvent, AuditQuery, Due, Key, Memory, Permission,
    Result as CoreResult, Role, StoreTx,
};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

use crate::codec::{self, memory_cols, to_json, ts};
use crate::memories::{in_order, soft_delete_rows};
use crate::{PgError, PgStore, Result, WriteTx};

const INSERT_AUDIT: &str = "INSERT INTO audit (tenant, n, at, actor, action, target, \
     request_id, details, prev_hash, hash) \
     SELECT u.tenant, u.n, $3, $4, u.action, u.target, $5, u.details, u.prev_hash, u.hash \
     FROM unnest($1::text[], $2::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], \
     $10::text[]) AS u(tenant, n, action, target, details, prev_hash, hash)";

const AUDIT_COLS: &str =
    "tenant, n, at, actor, action, target, request_id, details, prev_hash, hash";

const KEY_COLS: &str = "id, tenant, name, role, namespaces, permissions, secret_hash, \
     created_at, created_by, revoked_at";

impl WriteTx {
    /// Append events to their tenants' chains, in order, inside this
    /// transaction, locking the heads not locked yet. Transactions that take
    /// a seq append before taking it (the events only describe the change),
    /// which keeps the seq lock short and the lock order intact.
    pub(crate) async fn audit(
        &mut self,
        entries: Vec<AuditEntry>,
        ctx: &AuditCtx,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        debug_assert!(
            !self.seq_taken,
            "audit events are appended before the seq is taken"
        );
        // Truncate to what the store keeps, so the hash recomputes from the row.
        let at = ts(now);
        let tenants: Vec<String> = entries.iter().map(|e| e.tenant.clone()).collect();
        self.lock_heads(tenants.iter().map(String::as_str)).await?;

        let n = entries.len();
        let (mut tenant, mut seq, mut action, mut target) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut details, mut prev_hash, mut hash) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut touched: HashMap<String, (u64, String)> = HashMap::new();
        for entry in entries {
            let head = self
                .heads
                .get_mut(&entry.tenant)
                .ok_or_else(|| PgError::corrupt("audit head not locked"))?;
            let e = AuditEvent::chain(entry, ctx, head.0 + 1, at, head.1.clone());
            *head = (e.n, e.hash.clone());
            touched.insert(e.tenant.clone(), head.clone());
            details.push(
                serde_json::to_string(&e.details)
                    .map_err(|err| PgError::Encode(format!("audit details: {err}")))?,
            );
            tenant.push(e.tenant);
            seq.push(codec::int(e.n));
            action.push(e.action.as_str());
            target.push(e.target);
            prev_hash.push(e.prev_hash);
            hash.push(e.hash);
        }
        sqlx::query(INSERT_AUDIT)
            .bind(&tenant)
            .bind(&seq)
            .bind(at)
            .bind(&ctx.actor)
            .bind(ctx.request_id.as_deref())
            .bind(&action)
            .bind(&target)
            .bind(&details)
            .bind(&prev_hash)
            .bind(&hash)
            .execute(self.conn())
            .await?;
        let (mut head_tenant, mut head_n, mut head_hash) = (Vec::new(), Vec::new(), Vec::new());
        for (t, (n, h)) in touched {
            head_tenant.push(t);
            head_n.push(codec::int(n));
            head_hash.push(h);
        }
        sqlx::query(
            "UPDATE audit_heads h SET n = u.n, hash = u.hash \
             FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(tenant, n, hash) \
             WHERE h.tenant = u.tenant",
        )
        .bind(&head_tenant)
        .bind(&head_n)
        .bind(&head_hash)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Place or release a memory's legal hold in this transaction. Not a
    /// content change: the seq (and so the indexes) stay as they are.
    pub(crate) async fn set_hold(
        &mut self,
        key: Key,
        hold: bool,
        now: DateTime<Utc>,
    ) -> Result<Memory> {
        let row = sqlx::query(concat!(
            "UPDATE memories SET legal_hold = $1, updated_at = $2 WHERE key = $3 RETURNING ",
            memory_cols!()
        ))
        .bind(hold)
        .bind(now)
        .bind(codec::int(key))
        .fetch_one(self.conn())
        .await?;
        codec::memory(&row)
    }

    /// The live or deleted, unpurged memory `id` of `tenant`, its row locked
    /// for an update in this transaction.
    pub(crate) async fn memory_for_update(
        &mut self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<Memory>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            memory_cols!(),
            " FROM memories WHERE id = $1 AND tenant = $2 AND purged_at IS NULL FOR UPDATE"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(codec::memory).transpose()
    }
}

fn audit_event(row: &PgRow) -> Result<AuditEvent> {
    let action: String = row.try_get("action")?;
    let details: String = row.try_get("details")?;
    Ok(AuditEvent {
        tenant: row.try_get("tenant")?,
        n: codec::unsigned(row.try_get("n")?, "audit.n")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: AuditAction::parse(&action)
            .ok_or_else(|| PgError::corrupt(format!("audit.action: {action:?}")))?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        details: serde_json::from_str(&details)
            .map_err(|e| PgError::corrupt(format!("audit.details: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn api_key(row: &PgRow) -> Result<ApiKey> {
    let role: String = row.try_get("role")?;
    let namespaces: Option<Value> = row.try_get("namespaces")?;
    let permissions: Value = row.try_get("permissions")?;
    let permissions: Vec<String> = serde_json::from_value(permissions)
        .map_err(|e| PgError::corrupt(format!("api_keys.permissions: {e}")))?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| PgError::corrupt(format!("api_keys.role: {role:?}")))?,
        namespaces: namespaces
            .filter(|n| !n.is_null())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| PgError::corrupt(format!("api_keys.namespaces: {e}")))?,
        permissions: permissions
            .iter()
            .map(|p| {
                Permission::parse(p)
                    .ok_or_else(|| PgError::corrupt(format!("api_keys.permissions: {p:?}")))
            })
            .collect::<Result<_>>()?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl PgStore {
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
            "SELECT {AUDIT_COLS} FROM audit WHERE tenant = $1 AND n > $2 \
             AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR actor = $4) \
             AND ($5::text IS NULL OR target = $5) \
             AND ($6::timestamptz IS NULL OR at >= $6) \
             AND ($7::timestamptz IS NULL OR at < $7) ORDER BY n LIMIT $8"
        ))
        .bind(tenant)
        .bind(q.after.map_or(0, codec::int))
        .bind(q.action.map(|a| a.as_str()))
        .bind(q.actor.as_deref())
        .bind(q.target.as_deref())
        .bind(q.since.map(ts))
        .bind(q.until.map(ts))
        .bind(codec::limit(q.limit.unwrap_or(100)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_event).collect()
    }

    pub(crate) async fn head(&self, tenant: &str) -> Result<Option<(u64, String)>> {
        // A head row with n = 0 was created by a transaction that appended nothing.
        let row = sqlx::query("SELECT n, hash FROM audit_heads WHERE tenant = $1 AND n > 0")
            .bind(tenant)
            .fetch_optional(&self.pool)
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
            "INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
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
        .bind(ts(key.created_at))
        .bind(&key.created_by)
        .execute(tx.conn())
        .await?;
        tx.audit(vec![AuditEntry::key_created(&key)], ctx, key.created_at)
            .await?;
        tx.commit().await
    }

    pub(crate) async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    pub(crate) async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
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
        let now = ts(now);
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = $1 AND tenant = $2 FOR UPDATE"
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
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(tx.conn())
                .await?;
            key.revoked_at = Some(now);
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

/// Erase memories' content, leaving deleted tombstones, each with a new seq
/// (so derived indexes drop them). The caller drops their jobs and appends
/// the audit events first: this takes the seq.
async fn purge_rows(tx: &mut WriteTx, keys: &[i64], now: DateTime<Utc>) -> Result<Vec<Memory>> {
    let seqs: Vec<i64> = tx.next_seqs(keys.len()).await?.collect();
    let rows = sqlx::query(
        "UPDATE memories m SET text = '', metadata = '{}', tags = '{}', provenance = NULL, \
         client_id = NULL, checksum = '', embedding = NULL, embedded_checksum = NULL, \
         target_embedding = NULL, target_checksum = NULL, target_version = NULL, \
         deleted_at = coalesce(m.deleted_at, $1), purged_at = $1, updated_at = $1, seq = u.seq \
         FROM unnest($2::bigint[], $3::bigint[]) AS u(key, seq) WHERE m.key = u.key \
         RETURNING m.key, m.id, m.tenant, m.namespace, m.kind, m.state, m.checksum, \
         m.client_id, m.seq, m.created_at, m.updated_at, m.expires_at, m.deleted_at, \
         m.legal_hold, m.embedding_model, m.embedding_version, m.tags, m.pii, m.provenance, \
         m.metadata, m.text, m.occurred_at, m.session, m.position, m.speaker",
    )
    .bind(now)
    .bind(keys)
    .bind(&seqs)
    .fetch_all(tx.conn())
    .await?;
    in_order(rows, keys)
}

/// The primitives [`engram_core::lifecycle`] composes. Rows are locked
/// `FOR UPDATE`; the lock order is [`WriteTx`]'s.
#[async_trait]
impl StoreTx for WriteTx {
    async fn lock_memory(&mut self, tenant: &str, id: Uuid) -> CoreResult<Option<Memory>> {
        Ok(self.memory_for_update(tenant, id).await?)
    }

    /// Due rows are locked `FOR UPDATE SKIP LOCKED`: sweepers on several
    /// nodes split the work instead of queueing behind each other (a memory
    /// being changed right now is left for the next sweep).
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
                 AND expires_at <= $1 AND NOT legal_hold ORDER BY expires_at, key LIMIT $2 \
                 FOR UPDATE SKIP LOCKED"
            ),
            Due::Deleted => concat!(
                "SELECT ",
                memory_cols!(),
                " FROM memories WHERE deleted_at IS NOT NULL AND purged_at IS NULL \
                 AND deleted_at <= $1 AND NOT legal_hold ORDER BY deleted_at, key LIMIT $2 \
                 FOR UPDATE SKIP LOCKED"
            ),
        };
        let rows = sqlx::query(query)
            .bind(ts(by))
            .bind(codec::limit(limit))
            .fetch_all(self.conn())
            .await
            .map_err(PgError::from)?;
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
            .bind(ts(now))
            .bind(&audit.traceparent)
            .execute(self.conn())
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn drop_jobs(&mut self, keys: &[Key]) -> CoreResult<()> {
        let keys: Vec<i64> = keys.iter().map(|&k| codec::int(k)).collect();
        Ok(WriteTx::drop_jobs(self, &keys).await?)
    }

    async fn append_audit(
        &mut self,
        entries: Vec<AuditEntry>,
        audit: &AuditCtx,
        now: DateTime<Utc>,
    ) -> CoreResult<()> {
        Ok(self.audit(entries, audit, ts(now)).await?)
    }

    async fn set_hold(&mut self, key: Key, hold: bool, now: DateTime<Utc>) -> CoreResult<Memory> {
        Ok(WriteTx::set_hold(self, key, hold, ts(now)).await?)
    }

    async fn live_with_checksum(
        &mut self,
        tenant: &str,
        namespace: &str,
        checksum: &str,
        except: Key,
    ) -> CoreResult<Option<Uuid>> {
        let other: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM memories WHERE tenant = $1 AND namespace = $2 \
             AND checksum = $3 AND deleted_at IS NULL AND key <> $4",
        )
        .bind(tenant)
        .bind(namespace)
        .bind(checksum)
        .bind(codec::int(except))
        .fetch_optional(self.conn())
        .await
        .map_err(PgError::from)?;
        Ok(other)
    }

    /// A text taken by a memory committed since the engine's check violates
    /// the live checksum index: a conflict as well.
    async fn write_content(&mut self, m: &Memory, now: DateTime<Utc>) -> CoreResult<Memory> {
        let seq = self.next_seq().await?;
        let row = sqlx::query(concat!(
            "UPDATE memories SET text = $1, checksum = $2, state = $3, kind = $4, \
             metadata = $5, tags = $6, expires_at = $7, pii = $8, updated_at = $9, seq = $10, \
             legal_hold = $12 WHERE key = $11 RETURNING ",
            memory_cols!()
        ))
        .bind(&m.text)
        .bind(&m.checksum)
        .bind(m.state.as_str())
        .bind(m.kind.as_str())
        .bind(Value::Object(m.metadata.clone()))
        .bind(&m.tags)
        .bind(m.expires_at.map(ts))
        .bind(to_json!(&m.pii, "pii")?)
        .bind(ts(now))
        .bind(seq)
        .bind(codec::int(m.key))
        .bind(m.legal_hold)
        .fetch_one(self.conn())
        .await
        .map_err(PgError::from)?;
        Ok(codec::memory(&row)?)
    }

    async fn undelete(&mut self, key: Key, now: DateTime<Utc>) -> CoreResult<Memory> {
        // The seq, and the row that carries it. The live-uniqueness indexes
        // reject a restore whose text or client id was reused meanwhile
        // (mapped to a conflict).
        let seq = self.next_seq().await?;
        let row = sqlx::query(concat!(
            "UPDATE memories SET deleted_at = NULL, updated_at = $1, seq = $2 WHERE key = $3 \
             RETURNING ",
            memory_cols!()
        ))
        .bind(ts(now))
        .bind(seq)
        .bind(codec::int(key))
        .fetch_one(self.conn())
        .await
        .map_err(PgError::from)?;
        Ok(codec::memory(&row)?)
    }

    async fn soft_delete_rows(
        &mut self,
        keys: &[Key],
        now: DateTime<Utc>,
    ) -> CoreResult<Vec<Memory>> {
        let keys: Vec<i64> = keys.iter().map(|&k| codec::int(k)).collect();
        Ok(soft_delete_rows(self, &keys, ts(now)).await?)
    }

    async fn purge_rows(&mut self, keys: &[Key], now: DateTime<Utc>) -> CoreResult<Vec<Memory>> {
        let keys: Vec<i64> = keys.iter().map(|&k| codec::int(k)).collect();
        Ok(purge_rows(self, &keys, ts(now)).await?)
    }

    async fn set_namespace_ttl(
        &mut self,
        tenant: &str,
        namespace: &str,
        ttl_seconds: Option<u64>,
    ) -> CoreResult<bool> {
        let done = sqlx::query(
            "UPDATE namespaces SET default_ttl_secs = $1 WHERE tenant = $2 AND name = $3",
        )
        .bind(ttl_seconds.map(codec::int))
        .bind(tenant)
        .bind(namespace)
        .execute(self.conn())
        .await
        .map_err(PgError::from)?
        .rows_affected()
            > 0;
        Ok(done)
    }

    async fn commit(self: Box<Self>) -> CoreResult<()> {
        Ok(WriteTx::commit(*self).await?)
    }
}
