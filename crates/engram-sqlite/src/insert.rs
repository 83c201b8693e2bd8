//! Batch insert with dedupe, in a constant number of statements per batch:
//! rows travel as one JSON array bound to a single parameter and are expanded
//! with `json_each`, so a batch of 500 costs the same handful of round trips
//! to the SQLite worker as a batch of one.

use engram_core::batch::InsertPlan;
use engram_core::{AuditCtx, Inserted, Key, NewMemory};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

use crate::codec::{self, micros, to_json};
use crate::{wall_clock, Result, SqliteError, SqliteStore, WriteTx};

const INSERT_NAMESPACE: &str =
    "INSERT INTO namespaces (tenant, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";

/// Live memories matching `[idx, tenant, namespace, checksum]` probes.
const EXISTING_BY_CHECKSUM: &str = "SELECT j.value ->> 0 AS idx, m.key, m.id, m.state, m.seq \
     FROM json_each(?) j JOIN memories m ON m.tenant = j.value ->> 1 \
     AND m.namespace = j.value ->> 2 AND m.checksum = j.value ->> 3 AND m.deleted_at IS NULL";

/// Live memories matching `[idx, tenant, namespace, client_id]` probes.
const EXISTING_BY_CLIENT_ID: &str = "SELECT j.value ->> 0 AS idx, m.key, m.id, m.state, m.seq \
     FROM json_each(?) j JOIN memories m ON m.tenant = j.value ->> 1 \
     AND m.namespace = j.value ->> 2 AND m.client_id = j.value ->> 3 AND m.deleted_at IS NULL";

/// One row per array element, in array order (see `row_json` for the layout).
const INSERT_MEMORIES: &str =
    "INSERT INTO memories (id, tenant, namespace, kind, state, checksum, \
     client_id, seq, created_at, updated_at, expires_at, legal_hold, tags, pii, provenance, \
     metadata, text, occurred_at, session, position, speaker) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, 'pending', value ->> 4, \
     value ->> 5, value ->> 6, value ->> 7, value ->> 7, \
     coalesce(value ->> 8, (SELECT value ->> 7 + n.default_ttl_secs * 1000000 FROM namespaces n \
     WHERE n.tenant = value ->> 1 AND n.name = value ->> 2)), 0, value ->> 9, \
     value ->> 10, value ->> 11, value ->> 12, value ->> 13, value ->> 14, value ->> 15, \
     value ->> 16, value ->> 17 \
     FROM json_each(?) ORDER BY key RETURNING key, seq";

/// An embedding job for every memory inserted with a seq in `[?2, ?3]`,
/// runnable at once (even if the caller's clock is a little ahead of ours).
const INSERT_JOBS: &str = "INSERT INTO jobs (tenant, kind, memory_key, state, attempts, \
     next_run_at, created_at, traceparent) \
     SELECT tenant, 'embed', key, 'queued', 0, min(created_at, ?1), ?1, ?4 FROM memories \
     WHERE seq BETWEEN ?2 AND ?3 ORDER BY seq";

impl SqliteStore {
    pub(crate) async fn insert_memories(
        &self,
        items: Vec<NewMemory>,
        ctx: &AuditCtx,
    ) -> Result<Vec<Inserted>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let now = wall_clock();

        let mut namespaces: HashSet<(&str, &str)> = HashSet::new();
        for item in &items {
            if namespaces.insert((&item.tenant, &item.namespace)) {
                sqlx::query(INSERT_NAMESPACE)
                    .bind(&item.tenant)
                    .bind(&item.namespace)
                    .bind(now)
                    .execute(tx.conn())
                    .await?;
            }
        }

        // Live duplicates already stored.
        let by_checksum = existing(
            &mut tx,
            EXISTING_BY_CHECKSUM,
            items
                .iter()
                .enumerate()
                .map(|(i, m)| json!([i, m.tenant, m.namespace, m.checksum]))
                .collect(),
        )
        .await?;
        let client_probes: Vec<Value> = items
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.client_id
                    .as_ref()
                    .map(|c| json!([i, m.tenant, m.namespace, c]))
            })
            .collect();
        let by_client = if client_probes.is_empty() {
            HashMap::new()
        } else {
            existing(&mut tx, EXISTING_BY_CLIENT_ID, client_probes).await?
        };

        let plan = InsertPlan::new(&items, &by_client, &by_checksum);
        let mut stored: Vec<(Key, u64)> = Vec::with_capacity(plan.fresh().len());
        if !plan.fresh().is_empty() {
            let mut rows = Vec::with_capacity(plan.fresh().len());
            let mut seqs = Vec::with_capacity(plan.fresh().len());
            for &i in plan.fresh() {
                let seq = tx.next_seq().await?;
                rows.push(row_json(&items[i], seq)?);
                seqs.push(seq);
            }
            let returned = sqlx::query(INSERT_MEMORIES)
                .bind(to_json!(&rows, "rows")?)
                .fetch_all(tx.conn())
                .await?;
            let mut keys: HashMap<i64, i64> = HashMap::with_capacity(returned.len()); // seq -> key
            for row in &returned {
                keys.insert(row.try_get("seq")?, row.try_get("key")?);
            }
            sqlx::query(INSERT_JOBS)
                .bind(now)
                .bind(seqs[0])
                .bind(seqs[seqs.len() - 1])
                .bind(&ctx.traceparent)
                .execute(tx.conn())
                .await?;
            tx.audit(plan.audit_entries(&items), ctx, codec::time(now, "now")?)
                .await?;
            for seq in seqs {
                let key = keys
                    .get(&seq)
                    .copied()
                    .ok_or_else(|| SqliteError::corrupt("inserted row not returned"))?;
                stored.push((codec::unsigned(key, "key")?, codec::unsigned(seq, "seq")?));
            }
        }
        tx.commit().await?;
        plan.outcome(&items, &stored).map_err(SqliteError::corrupt)
    }
}

/// Stored live memories matching the probes, by item index.
async fn existing(
    tx: &mut WriteTx,
    sql: &'static str,
    probes: Vec<Value>,
) -> Result<HashMap<usize, Inserted>> {
    let rows = sqlx::query(sql)
        .bind(to_json!(&probes, "probes")?)
        .fetch_all(tx.conn())
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let idx: i64 = row.try_get("idx")?;
        let idx = usize::try_from(idx).map_err(|_| crate::SqliteError::corrupt("probe index"))?;
        out.insert(idx, codec::existing(row)?);
    }
    Ok(out)
}

/// `[id, tenant, namespace, kind, checksum, client_id, seq, created_at,
/// expires_at, tags, pii, provenance, metadata, text, occurred_at, session,
/// position, speaker]`, the JSON columns as strings holding their JSON text.
fn row_json(m: &NewMemory, seq: i64) -> Result<Value> {
    let provenance = match &m.provenance {
        Some(p) => Some(to_json!(p, "provenance")?),
        None => None,
    };
    Ok(json!([
        m.id.to_string(),
        m.tenant,
        m.namespace,
        m.kind.as_str(),
        m.checksum,
        m.client_id,
        seq,
        micros(m.created_at),
        m.expires_at.map(micros),
        to_json!(&m.tags, "tags")?,
        to_json!(&m.pii, "pii")?,
        provenance,
        to_json!(&m.metadata, "metadata")?,
        m.text,
        micros(m.occurred_at),
        m.session.as_ref().map(|s| &s.id),
        m.session.as_ref().map(|s| codec::int(s.position)),
        m.session.as_ref().and_then(|s| s.speaker.as_ref()),
    ]))
}
