//! Batch insert with dedupe, in a constant number of statements per batch:
//! columns travel as arrays and are expanded with `unnest`, so a batch of 500
//! costs the same handful of round trips as a batch of one.
//!
//! Concurrency: the live duplicates are looked up before the seq is taken (to
//! keep the seq lock short). A concurrent transaction may commit the same
//! text or client id in between; the insert then violates a live unique index
//! and the whole transaction is retried, and the retry finds the other
//! memory and returns it with `created: false`.

use chrono::{DateTime, Utc};
use engram_core::batch::InsertPlan;
use engram_core::{AuditCtx, Inserted, Key, NewMemory};
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

use crate::codec::{self, to_json, ts};
use crate::{wall_clock, PgError, PgStore, Result, WriteTx};

/// How many times an insert runs when concurrent inserts keep taking its
/// texts or client ids first (each retry finds those, so two is the norm).
const MAX_ATTEMPTS: usize = 8;

/// Namespaces on first use, in key order (the lock order of concurrent inserts).
const INSERT_NAMESPACES: &str = "INSERT INTO namespaces (tenant, name, created_at) \
     SELECT t, n, $3 FROM unnest($1::text[], $2::text[]) AS u(t, n) ORDER BY t, n \
     ON CONFLICT DO NOTHING";

/// Default TTLs of namespaces.
const NAMESPACE_TTLS: &str = "SELECT n.tenant, n.name, n.default_ttl_secs FROM namespaces n \
     JOIN unnest($1::text[], $2::text[]) AS u(t, ns) ON n.tenant = u.t AND n.name = u.ns \
     WHERE n.default_ttl_secs IS NOT NULL";

/// Live memories matching `(idx, tenant, namespace, checksum)` probes.
const EXISTING_BY_CHECKSUM: &str = "SELECT p.idx, m.key, m.id, m.state, m.seq \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS p(idx, tenant, ns, v) \
     JOIN memories m ON m.tenant = p.tenant AND m.namespace = p.ns AND m.checksum = p.v \
     AND m.deleted_at IS NULL";

/// Live memories matching `(idx, tenant, namespace, client_id)` probes.
const EXISTING_BY_CLIENT_ID: &str = "SELECT p.idx, m.key, m.id, m.state, m.seq \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS p(idx, tenant, ns, v) \
     JOIN memories m ON m.tenant = p.tenant AND m.namespace = p.ns AND m.client_id = p.v \
     AND m.deleted_at IS NULL";

/// One row per array element, in seq order (so keys increase with seqs),
/// each with an embedding job runnable at once (even if the caller's clock
/// is a little ahead of ours: `$15` is our now).
const INSERT_MEMORIES: &str = "WITH ins AS (INSERT INTO memories (id, tenant, namespace, kind, \
     state, checksum, client_id, seq, created_at, updated_at, expires_at, legal_hold, tags, pii, \
     provenance, metadata, text, occurred_at, session, position, speaker) \
     SELECT u.id, u.tenant, u.ns, u.kind, 'pending', u.checksum, u.client_id, u.seq, \
     u.created_at, u.created_at, u.expires_at, false, \
     ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.pii, u.provenance, u.metadata, u.text, \
     u.occurred_at, u.session, u.position, u.speaker \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[], $11::jsonb[], \
     $12::jsonb[], $13::jsonb[], $14::text[], $17::timestamptz[], $18::text[], $19::bigint[], \
     $20::text[]) \
     AS u(id, tenant, ns, kind, checksum, client_id, seq, created_at, expires_at, tags, pii, \
     provenance, metadata, text, occurred_at, session, position, speaker) \
     ORDER BY u.seq RETURNING key, seq, tenant, created_at), \
     jobs AS (INSERT INTO jobs (tenant, kind, memory_key, state, attempts, next_run_at, \
     created_at, traceparent) \
     SELECT tenant, 'embed', key, 'queued', 0, least(created_at, $15), $15, $16 \
     FROM ins ORDER BY seq) \
     SELECT key, seq FROM ins";

impl PgStore {
    pub(crate) async fn insert_memories(
        &self,
        items: Vec<NewMemory>,
        ctx: &AuditCtx,
    ) -> Result<Vec<Inserted>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 1;
        loop {
            match self.try_insert(&items, ctx).await {
                Err(e) if e.is_live_duplicate() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, "concurrent insert of the same memory; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_insert(&self, items: &[NewMemory], ctx: &AuditCtx) -> Result<Vec<Inserted>> {
        let mut tx = self.begin_write().await?;
        let now = wall_clock();

        let namespaces: BTreeSet<(&str, &str)> = items
            .iter()
            .map(|m| (m.tenant.as_str(), m.namespace.as_str()))
            .collect();
        let (ns_tenants, ns_names): (Vec<&str>, Vec<&str>) = namespaces.iter().copied().unzip();
        sqlx::query(INSERT_NAMESPACES)
            .bind(&ns_tenants)
            .bind(&ns_names)
            .bind(now)
            .execute(tx.conn())
            .await?;

        // Live duplicates already stored.
        let by_checksum = existing(
            &mut tx,
            EXISTING_BY_CHECKSUM,
            items
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m, m.checksum.as_str())),
        )
        .await?;
        let by_client = existing(
            &mut tx,
            EXISTING_BY_CLIENT_ID,
            items
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.client_id.as_deref().map(|c| (i, m, c))),
        )
        .await?;

        let plan = InsertPlan::new(items, &by_client, &by_checksum);
        let fresh = plan.fresh();
        let mut stored: Vec<(Key, u64)> = Vec::with_capacity(fresh.len());
        if !fresh.is_empty() {
            let expiry = expiries(&mut tx, items, fresh).await?;
            tx.audit(plan.audit_entries(items), ctx, now).await?;
            // Last: the seqs, and the rows that carry them.
            let seqs = tx.next_seqs(fresh.len()).await?;
            let rows = Columns::of(items, fresh, *seqs.start(), &expiry)?;
            let returned = rows
                .insert(&mut tx, now, ctx.traceparent.as_deref())
                .await?;
            let mut keys: HashMap<i64, i64> = HashMap::with_capacity(returned.len());
            for row in &returned {
                keys.insert(row.try_get("seq")?, row.try_get("key")?);
            }
            for seq in seqs {
                let key = keys
                    .get(&seq)
                    .copied()
                    .ok_or_else(|| PgError::corrupt("inserted row not returned"))?;
                stored.push((codec::unsigned(key, "key")?, codec::unsigned(seq, "seq")?));
            }
        }
        tx.commit().await?;
        plan.outcome(items, &stored).map_err(PgError::corrupt)
    }
}

/// Stored live memories matching the probes `(item index, item, value)`, by item index.
async fn existing<'a>(
    tx: &mut WriteTx,
    sql: &'static str,
    probes: impl Iterator<Item = (usize, &'a NewMemory, &'a str)>,
) -> Result<HashMap<usize, Inserted>> {
    let (mut idx, mut tenants, mut namespaces, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, m, v) in probes {
        idx.push(codec::limit(i));
        tenants.push(m.tenant.as_str());
        namespaces.push(m.namespace.as_str());
        values.push(v);
    }
    if idx.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(sql)
        .bind(&idx)
        .bind(&tenants)
        .bind(&namespaces)
        .bind(&values)
        .fetch_all(tx.conn())
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let i: i64 = row.try_get("idx")?;
        let i = usize::try_from(i).map_err(|_| PgError::corrupt("probe index"))?;
        out.insert(i, codec::existing(row)?);
    }
    Ok(out)
}

/// The expiry of each fresh item: its own, else its namespace's default TTL.
async fn expiries(
    tx: &mut WriteTx,
    items: &[NewMemory],
    fresh: &[usize],
) -> Result<Vec<Option<DateTime<Utc>>>> {
    let open: BTreeSet<(&str, &str)> = fresh
        .iter()
        .map(|&i| &items[i])
        .filter(|m| m.expires_at.is_none())
        .map(|m| (m.tenant.as_str(), m.namespace.as_str()))
        .collect();
    let mut ttls: HashMap<(String, String), i64> = HashMap::new();
    if !open.is_empty() {
        let (tenants, names): (Vec<&str>, Vec<&str>) = open.into_iter().unzip();
        let rows = sqlx::query(NAMESPACE_TTLS)
            .bind(&tenants)
            .bind(&names)
            .fetch_all(tx.conn())
            .await?;
        for row in &rows {
            ttls.insert(
                (row.try_get("tenant")?, row.try_get("name")?),
                row.try_get("default_ttl_secs")?,
            );
        }
    }
    Ok(fresh
        .iter()
        .map(|&i| {
            let m = &items[i];
            match m.expires_at {
                Some(t) => Some(ts(t)),
                None => ttls
                    .get(&(m.tenant.clone(), m.namespace.clone()))
                    .and_then(|&secs| codec::ts_plus_secs(m.created_at, secs)),
            }
        })
        .collect())
}

/// The fresh rows of a batch, column by column.
struct Columns<'a> {
    id: Vec<Uuid>,
    tenant: Vec<&'a str>,
    namespace: Vec<&'a str>,
    kind: Vec<&'static str>,
    checksum: Vec<&'a str>,
    client_id: Vec<Option<&'a str>>,
    seq: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    tags: Vec<Value>,
    pii: Vec<Value>,
    provenance: Vec<Option<Value>>,
    metadata: Vec<Value>,
    text: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    session: Vec<Option<&'a str>>,
    position: Vec<Option<i64>>,
    speaker: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(
        items: &'a [NewMemory],
        fresh: &[usize],
        first_seq: i64,
        expiry: &[Option<DateTime<Utc>>],
    ) -> Result<Self> {
        let n = fresh.len();
        let mut c = Columns {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            namespace: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            checksum: Vec::with_capacity(n),
            client_id: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            expires_at: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
            pii: Vec::with_capacity(n),
            provenance: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            text: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            session: Vec::with_capacity(n),
            position: Vec::with_capacity(n),
            speaker: Vec::with_capacity(n),
        };
        for (f, (&i, seq)) in fresh.iter().zip(first_seq..).enumerate() {
            let m = &items[i];
            c.id.push(m.id);
            c.tenant.push(&m.tenant);
            c.namespace.push(&m.namespace);
            c.kind.push(m.kind.as_str());
            c.checksum.push(&m.checksum);
            c.client_id.push(m.client_id.as_deref());
            c.seq.push(seq);
            c.created_at.push(ts(m.created_at));
            c.expires_at.push(expiry[f]);
            c.tags.push(to_json!(&m.tags, "tags")?);
            c.pii.push(to_json!(&m.pii, "pii")?);
            c.provenance.push(match &m.provenance {
                Some(p) => Some(to_json!(p, "provenance")?),
                None => None,
            });
            c.metadata.push(Value::Object(m.metadata.clone()));
            c.text.push(&m.text);
            c.occurred_at.push(ts(m.occurred_at));
            c.session.push(m.session.as_ref().map(|s| s.id.as_str()));
            c.position.push(
                m.session
                    .as_ref()
                    .map(|s| i64::try_from(s.position).unwrap_or(i64::MAX)),
            );
            c.speaker
                .push(m.session.as_ref().and_then(|s| s.speaker.as_deref()));
        }
        Ok(c)
    }

    async fn insert(
        &self,
        tx: &mut WriteTx,
        now: DateTime<Utc>,
        traceparent: Option<&str>,
    ) -> Result<Vec<sqlx::postgres::PgRow>> {
        Ok(sqlx::query(INSERT_MEMORIES)
            .bind(&self.id)
            .bind(&self.tenant)
            .bind(&self.namespace)
            .bind(&self.kind)
            .bind(&self.checksum)
            .bind(&self.client_id)
            .bind(&self.seq)
            .bind(&self.created_at)
            .bind(&self.expires_at)
            .bind(&self.tags)
            .bind(&self.pii)
            .bind(&self.provenance)
            .bind(&self.metadata)
            .bind(&self.text)
            .bind(now)
            .bind(traceparent)
            .bind(&self.occurred_at)
            .bind(&self.session)
            .bind(&self.position)
            .bind(&self.speaker)
            .fetch_all(tx.conn())
            .await?)
    }
}
