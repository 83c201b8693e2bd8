//! Store conformance suite: the same cases run against every `Store` implementation.
//!
//! Enabled by the `conformance` feature. A back-end's tests call [`run_all`]
//! (or single cases) with a fresh or shared store:
//!
//! ```ignore
//! engram_core::conformance::run_all(Arc::new(MyStore::open(..).await?)).await;
//! ```
//!
//! Every case works in tenants of its own (a uuid in the name), so cases can
//! share one store. The store's job queue and change feed are global, though:
//! cases filter what they claim or read to their own memories, and claims made
//! only to reach a case's own jobs use a zero lease, so that other cases' jobs
//! are immediately claimable again. Run the cases one after another (as
//! [`run_all`] does), not concurrently against the same store.
//!
//! Contract details pinned down here beyond the trait docs:
//! - times round-trip with at least microsecond precision (the cases use
//!   microsecond-truncated times);
//! - a duplicate insert (same client id, else same checksum, among live memories
//!   of the tenant and namespace) returns the existing memory unchanged,
//!   including its `seq`; a client-id match wins over a checksum match;
//! - `StoreStats::memories`, `pending` and `failed` count live memories,
//!   `deleted` soft-deleted ones, `jobs_queued` jobs not yet finished or dead
//!   (queued or running), `max_seq` the highest seq of the tenant's memories
//!   (of all memories for `stats(None)`);
//! - a soft delete drops the memory's jobs; a stale or orphaned completion is
//!   accepted (`Ok`) and changes nothing;
//! - `renew_leases` extends running jobs only, whoever holds them;
//! - a job carries the `traceparent` of the write that enqueued it (insert,
//!   text update, restore of a pending memory), whichever way it is claimed;
//! - audit events carry the writer's actor and request id; a duplicate insert
//!   appends none; `expire_due` and `purge_deleted` are store-wide (they run
//!   last in [`run_all`] so they do not disturb other cases).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::error::Error;
use crate::lifecycle::Lifecycle;
use crate::traits::{RetryPolicy, Store};
use crate::types::*;

/// Run every case, one after another, against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    let s = &*store;
    ping(s).await;
    insert_get_roundtrip(s).await;
    dedupe_by_checksum(s).await;
    dedupe_by_client_id(s).await;
    tenant_isolation(s).await;
    get_by_keys(s).await;
    update_memory(s).await;
    soft_delete_memory(s).await;
    scan_pagination(s).await;
    scan_by_event_time(s).await;
    namespaces_listing(s).await;
    seq_and_changes(s).await;
    job_claim_complete_and_lease(s).await;
    job_failure_dead_letter_and_retry(s).await;
    stale_completion_after_text_change(s).await;
    job_outbox_and_claim_by_id(s).await;
    stats_counts(s).await;
    audit_chain_of_writes(s).await;
    legal_hold_blocks_changes(s).await;
    legal_hold_in_a_patch(s).await;
    soft_delete_many_in_one_go(s).await;
    purge_erases_content(s).await;
    restore_soft_deleted(s).await;
    api_keys_roundtrip(s).await;
    namespace_default_ttl(s).await;
    refuses_values_it_cannot_read_back(s).await;
    quarantine_entries(s).await;
    jobs_carry_trace_context(s).await;
    session_messages_in_order(s).await;
    // Last: it changes the store-wide active model.
    reembed_to_a_new_model(s).await;
}

// ---------------------------------------------------------------------------
// helpers

/// Rows of a healthy store: every one decodes.
pub trait Healthy<T> {
    fn healthy(self) -> Vec<T>;
}

impl<T> Healthy<T> for Vec<Decoded<T>> {
    fn healthy(self) -> Vec<T> {
        self.into_iter()
            .map(|r| r.unwrap_or_else(|c| panic!("a healthy store decodes every row: {c:?}")))
            .collect()
    }
}

/// Now, truncated to microseconds.
/// The actor of every write in the suite.
pub fn audit() -> crate::audit::AuditCtx {
    crate::audit::AuditCtx {
        actor: "conformance".into(),
        request_id: Some("req-1".into()),
        traceparent: None,
    }
}

pub fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("time in range")
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// A tenant name unique to this run of a case.
pub fn tenant(case: &str) -> String {
    format!("conformance-{case}-{}", Uuid::now_v7().simple())
}

/// A checksum in the engine's format (hex sha256 over namespace and text).
pub fn checksum(namespace: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// A minimal new memory: a fact with no metadata, tags, expiry or client id.
pub fn new_memory(tenant: &str, namespace: &str, text: &str) -> NewMemory {
    NewMemory {
        id: Uuid::now_v7(),
        tenant: tenant.to_string(),
        namespace: namespace.to_string(),
        text: text.to_string(),
        kind: Kind::Fact,
        metadata: Map::new(),
        tags: Vec::new(),
        provenance: None,
        client_id: None,
        checksum: checksum(namespace, text),
        created_at: now(),
        occurred_at: now(),
        session: None,
        expires_at: None,
        pii: Vec::new(),
    }
}

fn model() -> ModelInfo {
    ModelInfo {
        name: "conformance-model".into(),
        version: "v1".into(),
        dims: 4,
    }
}

/// A deterministic 4-d vector for a text.
fn vector_for(text: &str) -> Vec<f32> {
    let h = Sha256::digest(text.as_bytes());
    let v: Vec<f32> = h[..4]
        .iter()
        .map(|b| f32::from(*b) / 255.0 + 0.01)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn embedded(job: &ClaimedJob) -> Embedded {
    Embedded {
        job_id: job.job_id,
        key: job.key,
        checksum: job.checksum.clone(),
        vector: Some(vector_for(&job.text)),
        model: model(),
        also: None,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

async fn insert_one(store: &dyn Store, m: NewMemory) -> Inserted {
    let mut out = store.insert(vec![m], &audit()).await.expect("insert");
    assert_eq!(out.len(), 1, "insert of one item returns one result");
    out.pop().expect("one result")
}

async fn get(store: &dyn Store, tenant: &str, id: Uuid) -> Memory {
    store
        .get(tenant, id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("memory {id} should exist"))
}

/// Claim everything runnable at `at` and keep the jobs of `ids`. Other jobs
/// that happened to be claimed stay claimable (with a zero lease).
async fn claim_mine(
    store: &dyn Store,
    ids: &[Uuid],
    at: DateTime<Utc>,
    lease: Duration,
) -> Vec<ClaimedJob> {
    let mine: HashSet<Uuid> = ids.iter().copied().collect();
    store
        .claim_jobs(10_000, lease, at)
        .await
        .expect("claim_jobs")
        .healthy()
        .into_iter()
        .filter(|j| mine.contains(&j.memory_id))
        .collect()
}

/// Embed the given memories: claim their jobs and complete them.
async fn make_ready(store: &dyn Store, tenant: &str, ids: &[Uuid]) {
    let jobs = claim_mine(store, ids, now(), Duration::ZERO).await;
    assert_eq!(jobs.len(), ids.len(), "one runnable job per pending memory");
    store
        .complete_jobs(jobs.iter().map(embedded).collect(), now())
        .await
        .expect("complete_jobs");
    for id in ids {
        assert_eq!(get(store, tenant, *id).await.state, State::Ready);
    }
}

/// Every change after `after` concerning `keys`, read page by page.
async fn changes_for(store: &dyn Store, after: u64, keys: &HashSet<Key>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut pos = after;
    loop {
        let page = store.changes_since(pos, 100).await.expect("changes_since");
        let Some(last) = page.last() else { break };
        assert!(last.seq > pos, "changes_since must advance");
        pos = last.seq;
        out.extend(page.into_iter().filter(|c| keys.contains(&c.key)));
    }
    out
}

async fn jobs_of(store: &dyn Store, tenant: &str, state: Option<JobState>, id: Uuid) -> Vec<Job> {
    store
        .list_jobs(tenant, state, None, 10_000)
        .await
        .expect("list_jobs")
        .into_iter()
        .filter(|j| j.memory_id == id)
        .collect()
}

// ---------------------------------------------------------------------------
// cases

/// `ping` succeeds on a healthy store.
pub async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping");
}

/// Every field of an inserted memory comes back from `get`.
pub async fn insert_get_roundtrip(store: &dyn Store) {
    let t = tenant("roundtrip");
    let created = now() - secs(5);
    let full = NewMemory {
        kind: Kind::Summary,
        metadata: obj(json!({
            "source": "chat",
            "n": 3,
            "f": 1.5,
            "nested": {"list": [true, null, "x"], "deep": {"k": -7}},
        })),
        tags: vec!["alpha".into(), "beta".into()],
        provenance: Some(Provenance {
            agent: Some("agent:coder".into()),
            session: Some("s-42".into()),
            parent: Some("doc-1".into()),
            reference: Some("sig:abc".into()),
        }),
        client_id: Some("client-1".into()),
        created_at: created,
        occurred_at: created - TimeDelta::days(400),
        expires_at: Some(created + TimeDelta::days(30)),
        pii: vec!["email".into(), "phone".into()],
        ..new_memory(
            &t,
            "user:alice/session:42",
            "Alice prefers tea over coffee.",
        )
    };
    let minimal = new_memory(&t, "agent:coder", "The build uses cargo.");

    assert!(store
        .insert(Vec::new(), &audit())
        .await
        .expect("empty insert")
        .is_empty());

    let ins = store
        .insert(vec![full.clone(), minimal.clone()], &audit())
        .await
        .expect("insert");
    assert_eq!(ins.len(), 2);
    for (i, n) in ins.iter().zip([&full, &minimal]) {
        assert_eq!(i.id, n.id);
        assert!(i.created);
        assert_eq!(i.state, State::Pending);
        assert!(i.key > 0 && i.seq > 0);
    }
    assert!(ins[1].key > ins[0].key, "keys increase");
    assert!(ins[1].seq > ins[0].seq, "seqs increase");

    for (i, n) in ins.iter().zip([&full, &minimal]) {
        let m = get(store, &t, n.id).await;
        let want = Memory {
            id: n.id,
            key: i.key,
            tenant: t.clone(),
            namespace: n.namespace.clone(),
            text: n.text.clone(),
            kind: n.kind,
            metadata: n.metadata.clone(),
            tags: n.tags.clone(),
            provenance: n.provenance.clone(),
            client_id: n.client_id.clone(),
            checksum: n.checksum.clone(),
            state: State::Pending,
            embedding_model: None,
            embedding_version: None,
            occurred_at: n.occurred_at,
            session: None,
            created_at: n.created_at,
            updated_at: n.created_at,
            expires_at: n.expires_at,
            deleted_at: None,
            legal_hold: false,
            pii: n.pii.clone(),
            seq: i.seq,
        };
        assert_eq!(m, want, "get returns what was inserted");
    }

    assert!(store.get(&t, Uuid::now_v7()).await.expect("get").is_none());
    assert!(store
        .get(&tenant("other"), full.id)
        .await
        .expect("get")
        .is_none());
    assert!(store
        .namespace_exists(&t, "agent:coder")
        .await
        .expect("exists"));
    assert!(!store
        .namespace_exists(&t, "agent:none")
        .await
        .expect("exists"));

    // Each memory got one queued embedding job.
    for n in [&full, &minimal] {
        let jobs = jobs_of(store, &t, None, n.id).await;
        assert_eq!(jobs.len(), 1, "one job per inserted memory");
        let j = &jobs[0];
        assert_eq!(j.tenant, t);
        assert_eq!(j.kind, "embed");
        assert_eq!(j.state, JobState::Queued);
        assert_eq!(j.attempts, 0);
        assert!(j.last_error.is_none());
        let got = store.get_job(&t, j.id).await.expect("get_job");
        assert_eq!(got.as_ref(), Some(j));
    }
}

/// A message of a session at `position`.
pub fn message(
    tenant: &str,
    namespace: &str,
    session: &str,
    position: u64,
    text: &str,
) -> NewMemory {
    let s = SessionRef {
        id: session.to_string(),
        position,
        speaker: Some(
            if position.is_multiple_of(2) {
                "Ann"
            } else {
                "Bo"
            }
            .to_string(),
        ),
    };
    NewMemory {
        kind: Kind::Message,
        checksum: crate::sessions::message_checksum(namespace, &s, text),
        session: Some(s),
        ..new_memory(tenant, namespace, text)
    }
}

/// Messages keep their session, position, speaker and event time; a
/// session reads back in position order within bounds, either way, live
/// messages only; the same words at two positions are two messages; a live
/// position is unique; `session` and `occurred_at` reach the feed's
/// attributes.
pub async fn session_messages_in_order(store: &dyn Store) {
    let t = tenant("sessions");
    let ns = "chat";
    let mut batch: Vec<NewMemory> = [0, 1, 2, 5, 9]
        .iter()
        .map(|&p| message(&t, ns, "s1", p, if p == 5 { "thanks!" } else { "hello" }))
        .collect();
    batch[0].occurred_at = now() - TimeDelta::days(3);
    batch.push(message(&t, ns, "s2", 0, "other session"));
    batch.push(new_memory(&t, ns, "a fact"));
    let ins = store.insert(batch.clone(), &audit()).await.expect("insert");
    assert!(
        ins.iter().all(|i| i.created),
        "same words at other positions are new"
    );
    let m = get(store, &t, batch[0].id).await;
    assert_eq!(m.session, batch[0].session);
    assert_eq!(m.occurred_at, batch[0].occurred_at);
    assert_eq!(m.kind, Kind::Message);
    let fact = get(store, &t, ins[6].id).await;
    assert_eq!(fact.session, None);

    let tr = t.as_str();
    let read = |after, before, limit, descending| async move {
        store
            .session_messages(
                tr,
                ns,
                "s1",
                &SessionRange {
                    after,
                    before,
                    limit,
                    descending,
                },
            )
            .await
            .expect("session_messages")
            .healthy()
            .into_iter()
            .map(|m| m.session.expect("a message").position)
            .collect::<Vec<u64>>()
    };
    assert_eq!(read(None, None, 100, false).await, vec![0, 1, 2, 5, 9]);
    assert_eq!(read(None, None, 2, true).await, vec![9, 5]);
    assert_eq!(read(Some(1), Some(9), 100, false).await, vec![2, 5]);
    assert_eq!(read(None, Some(5), 2, true).await, vec![2, 1]);
    assert_eq!(read(Some(0), None, 1, false).await, vec![1]);
    let other = store
        .session_messages(
            &t,
            "elsewhere",
            "s1",
            &SessionRange {
                after: None,
                before: None,
                limit: 10,
                descending: false,
            },
        )
        .await
        .expect("other namespace");
    assert!(other.is_empty(), "sessions live in a namespace");

    // A retry of the same message is the stored one; another message at a
    // live position is refused.
    let again = store
        .insert(vec![message(&t, ns, "s1", 2, "hello")], &audit())
        .await
        .expect("retry");
    assert_eq!((again[0].id, again[0].created), (ins[2].id, false));
    let taken = store
        .insert(vec![message(&t, ns, "s1", 2, "something else")], &audit())
        .await;
    assert!(
        matches!(taken, Err(Error::Conflict(_))),
        "a live position is unique: {taken:?}"
    );

    // Deleted messages leave the session; their position is free again.
    store
        .soft_delete(&t, ins[1].id, now(), &audit())
        .await
        .expect("delete");
    assert_eq!(read(None, None, 100, false).await, vec![0, 2, 5, 9]);
    store
        .insert(vec![message(&t, ns, "s1", 1, "a new turn 1")], &audit())
        .await
        .expect("a freed position");
    assert_eq!(read(None, None, 100, false).await, vec![0, 1, 2, 5, 9]);

    // Once embedded, the feed's attributes carry the session and the event
    // time, and so does the attribute loader.
    make_ready(store, &t, &[batch[0].id]).await;
    let keys: HashSet<Key> = [ins[0].key].into();
    let changes = changes_for(store, 0, &keys).await;
    match changes.last().map(|c| &c.op) {
        Some(ChangeOp::Upsert(d)) => {
            assert_eq!(d.attrs.session, batch[0].session);
            assert_eq!(d.attrs.occurred_at, batch[0].occurred_at);
        }
        other => panic!("a ready message is an upsert in the feed: {other:?}"),
    }
    let attrs = store
        .live_attrs(None, 1_000_000)
        .await
        .expect("attrs")
        .healthy();
    let (_, a) = attrs
        .iter()
        .find(|(k, _)| *k == ins[0].key)
        .expect("the ready message's attributes");
    assert_eq!(a.session, batch[0].session);
    assert_eq!(a.occurred_at, batch[0].occurred_at);
}

/// Same text in the same tenant and namespace returns the existing live memory,
/// across calls and within one batch.
pub async fn dedupe_by_checksum(store: &dyn Store) {
    let t = tenant("dedupe-checksum");
    let a = new_memory(&t, "ns", "Water boils at 100 C.");
    let ia = insert_one(store, a.clone()).await;
    assert!(ia.created);

    let again = new_memory(&t, "ns", "Water boils at 100 C.");
    let ib = insert_one(store, again.clone()).await;
    assert!(!ib.created, "duplicate checksum is not created");
    assert_eq!((ib.id, ib.key, ib.seq), (ia.id, ia.key, ia.seq));
    assert_eq!(ib.state, State::Pending);
    assert!(store.get(&t, again.id).await.expect("get").is_none());

    // Another namespace is another memory.
    let other_ns = insert_one(store, new_memory(&t, "ns2", "Water boils at 100 C.")).await;
    assert!(other_ns.created);

    // Within one batch, and mixed with an earlier duplicate.
    let b1 = new_memory(&t, "ns", "Ice melts at 0 C.");
    let b2 = new_memory(&t, "ns", "Ice melts at 0 C.");
    let c = new_memory(&t, "ns", "Salt lowers the freezing point.");
    let a3 = new_memory(&t, "ns", "Water boils at 100 C.");
    let out = store
        .insert(vec![b1.clone(), b2, c.clone(), a3], &audit())
        .await
        .expect("insert batch");
    assert_eq!(out.len(), 4, "one result per input, in order");
    assert!(out[0].created && out[0].id == b1.id);
    assert!(!out[1].created && out[1].id == b1.id && out[1].key == out[0].key);
    assert!(out[2].created && out[2].id == c.id);
    assert!(!out[3].created && out[3].id == a.id);

    // One job per created memory only.
    let jobs = store
        .list_jobs(&t, None, None, 100)
        .await
        .expect("list_jobs");
    assert_eq!(jobs.len(), 4, "a, ns2, b1, c");

    // Once the original is deleted, the same text creates a new memory.
    store
        .soft_delete(&t, a.id, now(), &audit())
        .await
        .expect("delete")
        .expect("deleted");
    let fresh = new_memory(&t, "ns", "Water boils at 100 C.");
    let ifresh = insert_one(store, fresh.clone()).await;
    assert!(ifresh.created, "a deleted memory does not dedupe");
    assert_eq!(ifresh.id, fresh.id);
    assert_ne!(ifresh.key, ia.key);
}

/// Same client id in the same tenant and namespace returns the existing live
/// memory, whatever the text.
pub async fn dedupe_by_client_id(store: &dyn Store) {
    let t = tenant("dedupe-client");
    let x = NewMemory {
        client_id: Some("req-1".into()),
        ..new_memory(&t, "ns", "first text")
    };
    let ix = insert_one(store, x.clone()).await;
    assert!(ix.created);

    let y = NewMemory {
        client_id: Some("req-1".into()),
        ..new_memory(&t, "ns", "a different text")
    };
    let iy = insert_one(store, y.clone()).await;
    assert!(!iy.created, "same client id is a duplicate");
    assert_eq!((iy.id, iy.key), (ix.id, ix.key));
    assert_eq!(get(store, &t, x.id).await.text, "first text");

    // Within a batch.
    let p = NewMemory {
        client_id: Some("req-2".into()),
        ..new_memory(&t, "ns", "p text")
    };
    let q = NewMemory {
        client_id: Some("req-2".into()),
        ..new_memory(&t, "ns", "q text")
    };
    let out = store
        .insert(vec![p.clone(), q], &audit())
        .await
        .expect("insert");
    assert!(out[0].created && out[0].id == p.id);
    assert!(!out[1].created && out[1].id == p.id);

    // Another namespace, or no client id, is another memory.
    let other_ns = NewMemory {
        client_id: Some("req-1".into()),
        ..new_memory(&t, "ns2", "first text")
    };
    assert!(insert_one(store, other_ns).await.created);
    assert!(
        insert_one(store, new_memory(&t, "ns", "no client id"))
            .await
            .created
    );

    // After a delete the client id is free again.
    store
        .soft_delete(&t, x.id, now(), &audit())
        .await
        .expect("delete")
        .expect("deleted");
    let z = NewMemory {
        client_id: Some("req-1".into()),
        ..new_memory(&t, "ns", "third text")
    };
    let iz = insert_one(store, z.clone()).await;
    assert!(iz.created && iz.id == z.id);
}

/// Nothing of one tenant is visible to or changeable by another.
pub async fn tenant_isolation(store: &dyn Store) {
    let a = tenant("iso-a");
    let b = tenant("iso-b");
    let m = new_memory(&a, "shared", "Tenant A's secret.");
    let im = insert_one(store, m.clone()).await;
    let job = jobs_of(store, &a, None, m.id).await.pop().expect("job");
    let before = get(store, &a, m.id).await;

    assert!(store.get(&b, m.id).await.expect("get").is_none());
    assert!(store
        .scan(&b, &[], None, 100)
        .await
        .expect("scan")
        .healthy()
        .is_empty());
    assert!(store
        .scan(&b, &["shared".to_string()], None, 100)
        .await
        .expect("scan")
        .healthy()
        .is_empty());
    assert!(store
        .list_jobs(&b, None, None, 100)
        .await
        .expect("list_jobs")
        .is_empty());
    assert!(store.get_job(&b, job.id).await.expect("get_job").is_none());
    assert!(store
        .retry_job(&b, job.id, now(), &audit())
        .await
        .expect("retry")
        .is_none());
    let patch = MemoryPatch {
        metadata: Some(obj(json!({"hacked": true}))),
        ..Default::default()
    };
    assert!(store
        .update(&b, m.id, patch, now(), &audit())
        .await
        .expect("update")
        .is_none());
    assert!(store
        .soft_delete(&b, m.id, now(), &audit())
        .await
        .expect("delete")
        .is_none());
    assert!(store.namespaces(&b).await.expect("namespaces").is_empty());
    assert!(!store.namespace_exists(&b, "shared").await.expect("exists"));
    let sb = store.stats(Some(&b)).await.expect("stats");
    assert_eq!(
        (
            sb.memories,
            sb.pending,
            sb.deleted,
            sb.jobs_queued,
            sb.max_seq
        ),
        (0, 0, 0, 0, 0)
    );

    // A's memory is untouched.
    assert_eq!(get(store, &a, m.id).await, before);
    assert_eq!(before.seq, im.seq);

    // The same text in B is B's own memory.
    let mb = new_memory(&b, "shared", "Tenant A's secret.");
    let ib = insert_one(store, mb.clone()).await;
    assert!(ib.created && ib.id == mb.id);
    assert_eq!(
        store
            .scan(&b, &[], None, 100)
            .await
            .expect("scan")
            .healthy()
            .len(),
        1
    );
    assert_eq!(
        store
            .scan(&a, &[], None, 100)
            .await
            .expect("scan")
            .healthy()
            .len(),
        1
    );
}

/// `get_by_keys` returns the tenant's live memories among the keys, nothing else.
pub async fn get_by_keys(store: &dyn Store) {
    let t = tenant("by-keys");
    let other = tenant("by-keys-other");
    let [a, b, c] = ["a", "b", "c"].map(|x| new_memory(&t, "ns", x));
    let ins = store
        .insert(vec![a.clone(), b.clone(), c.clone()], &audit())
        .await
        .expect("insert");
    let foreign = insert_one(store, new_memory(&other, "ns", "a")).await;
    store
        .soft_delete(&t, c.id, now(), &audit())
        .await
        .expect("delete")
        .expect("live");

    let keys = [
        ins[0].key,
        ins[1].key,
        ins[2].key,
        foreign.key,
        u64::MAX / 4,
    ];
    let mut got = store
        .get_by_keys(&t, &keys)
        .await
        .expect("get_by_keys")
        .healthy();
    got.sort_by_key(|m| m.key);
    let want = vec![get(store, &t, a.id).await, get(store, &t, b.id).await];
    assert_eq!(got, want, "live memories of the tenant only");
    assert!(store
        .get_by_keys(&t, &[])
        .await
        .expect("get_by_keys")
        .healthy()
        .is_empty());
    assert!(store
        .get_by_keys(&other, &keys[..3])
        .await
        .expect("get_by_keys")
        .healthy()
        .is_empty());
}

/// Updates: metadata-only keeps the embedding; new text re-embeds; a text
/// that duplicates another live memory is a conflict.
pub async fn update_memory(store: &dyn Store) {
    let t = tenant("update");
    let m1 = new_memory(&t, "ns", "The sky is blue.");
    let m2 = new_memory(&t, "ns", "Grass is green.");
    store
        .insert(vec![m1.clone(), m2.clone()], &audit())
        .await
        .expect("insert");
    make_ready(store, &t, &[m1.id, m2.id]).await;
    let ready = get(store, &t, m1.id).await;
    assert_eq!(ready.embedding_model.as_deref(), Some("conformance-model"));
    assert_eq!(ready.embedding_version.as_deref(), Some("v1"));

    // Metadata-only.
    let at = now() + secs(1);
    let expiry = at + TimeDelta::days(7);
    let patch = MemoryPatch {
        text: None,
        kind: Some(Kind::Message),
        metadata: Some(obj(json!({"colour": "blue", "v": 2}))),
        tags: Some(vec!["sky".into()]),
        expires_at: Some(Some(expiry)),
        pii: Some(vec!["none".into()]),
        legal_hold: None,
    };
    let u = store
        .update(&t, m1.id, patch, at, &audit())
        .await
        .expect("update")
        .expect("live memory");
    assert_eq!(u.state, State::Ready, "metadata-only update keeps it ready");
    assert_eq!(u.kind, Kind::Message);
    assert_eq!(u.metadata, obj(json!({"colour": "blue", "v": 2})));
    assert_eq!(u.tags, vec!["sky".to_string()]);
    assert_eq!(u.expires_at, Some(expiry));
    assert_eq!(u.pii, vec!["none".to_string()]);
    assert_eq!(u.updated_at, at);
    assert_eq!(u.created_at, ready.created_at);
    assert_eq!(u.text, ready.text);
    assert_eq!(u.checksum, ready.checksum);
    assert_eq!(u.embedding_model, ready.embedding_model);
    assert!(u.seq > ready.seq, "an update takes a new seq");
    assert_eq!(get(store, &t, m1.id).await, u, "get sees the update");
    assert!(
        jobs_of(store, &t, None, m1.id).await.is_empty(),
        "no re-embedding for a metadata change"
    );
    let keys: HashSet<Key> = [u.key].into();
    let ch = changes_for(store, ready.seq, &keys).await;
    assert_eq!(ch.len(), 1);
    match &ch[0].op {
        ChangeOp::Upsert(doc) => {
            assert_eq!(doc.key, u.key);
            assert_eq!(doc.vector, vector_for(&m1.text), "vector kept");
            assert_eq!(doc.text, m1.text);
            assert_eq!(*doc.attrs, u.attrs());
        }
        ChangeOp::Remove | ChangeOp::Corrupt(_) => {
            panic!("a ready memory's metadata update is an upsert")
        }
    }

    // Clearing the expiry.
    let cleared = store
        .update(
            &t,
            m1.id,
            MemoryPatch {
                expires_at: Some(None),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect("update")
        .expect("live");
    assert_eq!(cleared.expires_at, None);
    assert_eq!(
        cleared.tags,
        vec!["sky".to_string()],
        "untouched fields stay"
    );

    // New text: pending, new checksum, a queued job.
    let new_text = "The sky is grey today.";
    let sum = checksum("ns", new_text);
    let before = cleared.seq;
    let r = store
        .update(
            &t,
            m1.id,
            MemoryPatch {
                text: Some((new_text.into(), sum.clone())),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect("update")
        .expect("live");
    assert_eq!(r.state, State::Pending);
    assert_eq!(r.text, new_text);
    assert_eq!(r.checksum, sum);
    assert!(r.seq > before);
    let queued = jobs_of(store, &t, Some(JobState::Queued), m1.id).await;
    assert_eq!(queued.len(), 1, "new text enqueues one embedding job");
    let ch = changes_for(store, before, &[r.key].into()).await;
    assert!(matches!(ch.as_slice(), [c] if matches!(c.op, ChangeOp::Remove) && c.seq == r.seq));

    // A conflicting text.
    let m2_before = get(store, &t, m2.id).await;
    let err = store
        .update(
            &t,
            m2.id,
            MemoryPatch {
                text: Some((new_text.into(), sum.clone())),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect_err("duplicate text must conflict");
    assert!(matches!(err, Error::Conflict(_)), "got {err:?}");
    assert_eq!(get(store, &t, m2.id).await, m2_before, "nothing changed");

    // Unknown and deleted memories.
    assert!(store
        .update(&t, Uuid::now_v7(), MemoryPatch::default(), now(), &audit())
        .await
        .expect("update")
        .is_none());
    store
        .soft_delete(&t, m2.id, now(), &audit())
        .await
        .expect("delete")
        .expect("deleted");
    assert!(store
        .update(&t, m2.id, MemoryPatch::default(), now(), &audit())
        .await
        .expect("update")
        .is_none());
}

/// Soft delete hides from scans, keeps `get`, is not repeatable, drops jobs.
pub async fn soft_delete_memory(store: &dyn Store) {
    let t = tenant("delete");
    let keep = new_memory(&t, "ns", "keep me");
    let ready = new_memory(&t, "ns", "delete me when ready");
    let pending = new_memory(&t, "ns", "delete me while pending");
    let claimed = new_memory(&t, "ns", "delete me while claimed");
    store
        .insert(
            vec![
                keep.clone(),
                ready.clone(),
                pending.clone(),
                claimed.clone(),
            ],
            &audit(),
        )
        .await
        .expect("insert");
    make_ready(store, &t, &[ready.id]).await;
    let job = claim_mine(store, &[claimed.id], now(), Duration::from_secs(600))
        .await
        .pop()
        .expect("claimed job");
    let start = store.stats(None).await.expect("stats").max_seq;

    let at = now() + secs(2);
    let before = get(store, &t, ready.id).await;
    let d = store
        .soft_delete(&t, ready.id, at, &audit())
        .await
        .expect("delete")
        .expect("live memory");
    assert_eq!(d.deleted_at, Some(at));
    assert_eq!(d.updated_at, at);
    assert!(d.seq > before.seq);
    assert_eq!(d.text, before.text);
    let g = get(store, &t, ready.id).await;
    assert_eq!(g, d, "get returns deleted memories");

    assert!(
        store
            .soft_delete(&t, ready.id, now(), &audit())
            .await
            .expect("delete")
            .is_none(),
        "a second delete finds nothing"
    );

    for m in [&pending, &claimed] {
        store
            .soft_delete(&t, m.id, now(), &audit())
            .await
            .expect("delete")
            .expect("live");
        assert!(
            jobs_of(store, &t, None, m.id).await.is_empty(),
            "a deleted memory has no jobs"
        );
    }
    // Its job is never handed out again.
    assert!(claim_mine(
        store,
        &[pending.id, claimed.id],
        now() + TimeDelta::days(1),
        Duration::ZERO
    )
    .await
    .is_empty());
    // A late completion of a deleted memory's job changes nothing.
    store
        .complete_jobs(vec![embedded(&job)], now())
        .await
        .expect("late completion is accepted");
    let c = get(store, &t, claimed.id).await;
    assert!(c.deleted_at.is_some());
    assert_eq!(c.state, State::Pending);

    let live = store
        .scan(&t, &[], None, 100)
        .await
        .expect("scan")
        .healthy();
    assert_eq!(
        live.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![keep.id],
        "scan shows live memories only"
    );
    let ns = store.namespaces(&t).await.expect("namespaces");
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].memories, 1, "namespace counts live memories");

    let keys: HashSet<Key> = [d.key, c.key].into();
    let ch = changes_for(store, start, &keys).await;
    assert_eq!(ch.len(), 2, "one change per deleted memory");
    assert!(ch.iter().all(|c| matches!(c.op, ChangeOp::Remove)));

    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!((s.memories, s.deleted), (1, 3));
}

/// Scans page by key, in key order, per namespace or for the whole tenant.
pub async fn scan_pagination(store: &dyn Store) {
    let t = tenant("scan");
    let items: Vec<NewMemory> = (0..25)
        .map(|i| {
            new_memory(
                &t,
                if i % 2 == 0 { "a" } else { "b" },
                &format!("memory {i}"),
            )
        })
        .collect();
    let ins = store.insert(items.clone(), &audit()).await.expect("insert");
    let mut want: Vec<Key> = ins.iter().map(|i| i.key).collect();
    want.sort_unstable();

    let tr: &str = &t;
    let scan_all = |namespaces: Vec<String>, page: usize| async move {
        let mut out: Vec<Memory> = Vec::new();
        let mut after = None;
        loop {
            let batch = store
                .scan(tr, &namespaces, after, page)
                .await
                .expect("scan")
                .healthy();
            assert!(batch.len() <= page, "scan respects the limit");
            let Some(last) = batch.last() else { break };
            after = Some(last.key);
            out.extend(batch);
        }
        out
    };

    let all = scan_all(Vec::new(), 10).await;
    let keys: Vec<Key> = all.iter().map(|m| m.key).collect();
    assert_eq!(keys, want, "every live memory once, in key order");
    assert!(all.iter().all(|m| m.tenant == t));

    let a = scan_all(vec!["a".into()], 4).await;
    assert_eq!(a.len(), 13);
    assert!(a.iter().all(|m| m.namespace == "a"));
    assert!(a.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(scan_all(vec!["a".into(), "b".into()], 7).await.len(), 25);
    assert!(scan_all(vec!["nope".into()], 10).await.is_empty());
    assert!(store
        .scan(&t, &[], None, 0)
        .await
        .expect("scan")
        .healthy()
        .is_empty());
    let tail = store
        .scan(&t, &[], Some(want[20]), 100)
        .await
        .expect("scan")
        .healthy();
    assert_eq!(tail.iter().map(|m| m.key).collect::<Vec<_>>(), want[21..]);
}

/// Event-time order: by `occurred_at`, ties by key, both ways, page by
/// page from a (time, key) position; soft-deleted memories left out.
pub async fn scan_by_event_time(store: &dyn Store) {
    let t = tenant("scan-time");
    let base = now();
    // Days 3, 1, 2, 1, 0, 2, 3, 1 for eight memories in two namespaces:
    // equal times are ordered by key.
    let days = [3, 1, 2, 1, 0, 2, 3, 1];
    let items: Vec<NewMemory> = days
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let mut m = new_memory(
                &t,
                if i % 2 == 0 { "a" } else { "b" },
                &format!("event {i}"),
            );
            m.occurred_at = base - TimeDelta::days(10 - d);
            m
        })
        .collect();
    let ins = store.insert(items.clone(), &audit()).await.expect("insert");
    store
        .soft_delete(&t, ins[6].id, now(), &audit())
        .await
        .expect("soft_delete")
        .expect("live");
    let mut want: Vec<(DateTime<Utc>, Key)> = items
        .iter()
        .zip(&ins)
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, (m, i))| (m.occurred_at, i.key))
        .collect();
    want.sort();

    let tr: &str = &t;
    let scan_all = |namespaces: Vec<String>, descending: bool, page: usize| async move {
        let mut out: Vec<(DateTime<Utc>, Key)> = Vec::new();
        let mut after = None;
        loop {
            let batch = store
                .scan_by_time(tr, &namespaces, after, descending, page)
                .await
                .expect("scan_by_time")
                .healthy();
            assert!(batch.len() <= page, "scan_by_time respects the limit");
            let Some(last) = batch.last() else { break };
            after = Some((last.occurred_at, last.key));
            out.extend(batch.iter().map(|m| (m.occurred_at, m.key)));
        }
        out
    };
    for page in [1, 3, 100] {
        assert_eq!(scan_all(Vec::new(), false, page).await, want, "page {page}");
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(scan_all(Vec::new(), true, page).await, rev, "page {page}");
    }
    let a = scan_all(vec!["a".into()], false, 2).await;
    let want_a: Vec<(DateTime<Utc>, Key)> = want
        .iter()
        .filter(|(_, k)| {
            let i = ins.iter().position(|x| x.key == *k).unwrap();
            i % 2 == 0
        })
        .copied()
        .collect();
    assert_eq!(a, want_a);
    assert!(scan_all(vec!["nope".into()], false, 10).await.is_empty());
    assert!(store
        .scan_by_time(&t, &[], None, false, 0)
        .await
        .expect("scan_by_time")
        .healthy()
        .is_empty());
    // Another tenant's memories never show.
    assert!(store
        .scan_by_time(&tenant("scan-time-other"), &[], None, false, 100)
        .await
        .expect("scan_by_time")
        .is_empty());
}

/// Namespaces are created on first use and list their live memory counts.
pub async fn namespaces_listing(store: &dyn Store) {
    let t = tenant("namespaces");
    assert!(store.namespaces(&t).await.expect("namespaces").is_empty());
    let start = now();
    let x1 = new_memory(&t, "user:alice", "one");
    store
        .insert(
            vec![
                x1.clone(),
                new_memory(&t, "user:alice", "two"),
                new_memory(&t, "agent:coder", "three"),
            ],
            &audit(),
        )
        .await
        .expect("insert");
    let mut ns = store.namespaces(&t).await.expect("namespaces");
    ns.sort_by(|a, b| a.name.cmp(&b.name));
    let counts: Vec<(&str, u64)> = ns.iter().map(|n| (n.name.as_str(), n.memories)).collect();
    assert_eq!(counts, vec![("agent:coder", 1), ("user:alice", 2)]);
    assert!(ns
        .iter()
        .all(|n| n.created_at >= start - secs(60) && n.created_at <= now() + secs(60)));
    assert!(store
        .namespace_exists(&t, "user:alice")
        .await
        .expect("exists"));

    store
        .soft_delete(&t, x1.id, now(), &audit())
        .await
        .expect("delete")
        .expect("live");
    let ns = store.namespaces(&t).await.expect("namespaces");
    let alice = ns.iter().find(|n| n.name == "user:alice").expect("alice");
    assert_eq!(alice.memories, 1);
}

/// Every change takes a new, larger seq; the feed returns each memory's
/// latest state once, in seq order; `live_attrs` lists ready live memories.
pub async fn seq_and_changes(store: &dyn Store) {
    let t = tenant("seq");
    let base = store.stats(None).await.expect("stats").max_seq;
    let mut seqs: Vec<u64> = Vec::new();

    let a = new_memory(&t, "ns", "alpha");
    let b = new_memory(&t, "ns", "beta");
    let c = new_memory(&t, "ns", "gamma");
    let ins = store
        .insert(vec![a.clone(), b.clone(), c.clone()], &audit())
        .await
        .expect("insert");
    for i in &ins {
        assert!(i.seq > base, "seq above every earlier seq");
        seqs.push(i.seq);
    }

    make_ready(store, &t, &[a.id]).await;
    seqs.push(get(store, &t, a.id).await.seq);

    let ub = store
        .update(
            &t,
            b.id,
            MemoryPatch {
                tags: Some(vec!["x".into()]),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect("update")
        .expect("live");
    seqs.push(ub.seq);

    make_ready(store, &t, &[c.id]).await;
    seqs.push(get(store, &t, c.id).await.seq);
    let dc = store
        .soft_delete(&t, c.id, now(), &audit())
        .await
        .expect("delete")
        .expect("live");
    seqs.push(dc.seq);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq strictly increases with every change: {seqs:?}"
    );

    let ma = get(store, &t, a.id).await;
    let mb = get(store, &t, b.id).await;
    let mc = get(store, &t, c.id).await;
    let keys: HashSet<Key> = [ma.key, mb.key, mc.key].into();
    let ch = changes_for(store, base, &keys).await;
    assert_eq!(ch.len(), 3, "each changed memory once: {ch:?}");
    assert!(ch.windows(2).all(|w| w[0].seq < w[1].seq), "in seq order");
    let by_key: HashMap<Key, &Change> = ch.iter().map(|c| (c.key, c)).collect();
    for m in [&ma, &mb, &mc] {
        assert_eq!(by_key[&m.key].seq, m.seq, "latest state of {}", m.text);
    }
    match &by_key[&ma.key].op {
        ChangeOp::Upsert(doc) => {
            assert_eq!(doc.key, ma.key);
            assert_eq!(doc.text, "alpha");
            assert_eq!(doc.vector, vector_for("alpha"));
            assert_eq!(*doc.attrs, ma.attrs());
        }
        ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("a ready live memory is an upsert"),
    }
    assert!(
        matches!(by_key[&mb.key].op, ChangeOp::Remove),
        "a pending memory is a remove"
    );
    assert!(
        matches!(by_key[&mc.key].op, ChangeOp::Remove),
        "a deleted memory is a remove"
    );

    // The same feed one entry at a time.
    let mut pos = base;
    let mut one_by_one = Vec::new();
    loop {
        let page = store.changes_since(pos, 1).await.expect("changes_since");
        assert!(page.len() <= 1);
        let Some(c) = page.into_iter().next() else {
            break;
        };
        pos = c.seq;
        if keys.contains(&c.key) {
            one_by_one.push((c.seq, c.key));
        }
    }
    assert_eq!(
        one_by_one,
        ch.iter().map(|c| (c.seq, c.key)).collect::<Vec<_>>()
    );
    assert!(store
        .changes_since(dc.seq.max(pos), 100)
        .await
        .expect("changes_since")
        .iter()
        .all(|c| !keys.contains(&c.key)));

    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!(s.max_seq, dc.seq, "tenant max_seq is its latest change");
    assert!(store.stats(None).await.expect("stats").max_seq >= dc.seq);

    // live_attrs: ready, live memories only, in key order.
    let mut attrs = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .live_attrs(after, 1000)
            .await
            .expect("live_attrs")
            .healthy();
        let Some((last, _)) = page.last() else { break };
        assert!(after.is_none_or(|a| *last > a));
        after = Some(*last);
        attrs.extend(page);
    }
    assert!(attrs.windows(2).all(|w| w[0].0 < w[1].0), "key order");
    let mine: Vec<&(Key, DocAttrs)> = attrs.iter().filter(|(k, _)| keys.contains(k)).collect();
    assert_eq!(mine.len(), 1, "only the ready live memory");
    assert_eq!(mine[0].0, ma.key);
    assert_eq!(mine[0].1, ma.attrs());
}

/// Claim hands out due jobs with their memory; a lease hides a job until it
/// expires; completion writes the embedding, marks ready, removes the job.
pub async fn job_claim_complete_and_lease(store: &dyn Store) {
    let t = tenant("jobs");
    let m = new_memory(&t, "ns", "Embed me.");
    let im = insert_one(store, m.clone()).await;
    let t0 = now();

    let lease = Duration::from_secs(30);
    let mut got = claim_mine(store, &[m.id], t0, lease).await;
    assert_eq!(got.len(), 1, "the new job is runnable");
    let job = got.pop().expect("job");
    assert_eq!(job.key, im.key);
    assert_eq!(job.memory_id, m.id);
    assert_eq!(job.text, m.text);
    assert_eq!(job.checksum, m.checksum);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.embedded_checksum, None);
    assert_eq!(job.embedding_version, None);
    let listed = store
        .get_job(&t, job.job_id)
        .await
        .expect("get_job")
        .expect("job exists");
    assert_eq!(listed.state, JobState::Running);
    assert_eq!(listed.memory_id, m.id);

    // Leased: not handed out again until the lease expires.
    assert!(claim_mine(store, &[m.id], t0 + secs(10), lease)
        .await
        .is_empty());
    let again = claim_mine(store, &[m.id], t0 + secs(31), lease).await;
    assert_eq!(again.len(), 1, "an expired lease is re-claimable");
    assert_eq!(again[0].job_id, job.job_id);
    // A renewed lease (a worker still busy) holds past its first end; an
    // unknown job renews nothing.
    let renewed = store
        .renew_leases(&[job.job_id, 9_999_999_999], lease, t0 + secs(50))
        .await
        .expect("renew_leases");
    assert_eq!(renewed, 1);
    assert!(
        claim_mine(store, &[m.id], t0 + secs(70), lease)
            .await
            .is_empty(),
        "renewed until t0 + 80 s"
    );

    // A limit is respected.
    let extra: Vec<NewMemory> = (0..3)
        .map(|i| new_memory(&t, "ns", &format!("extra {i}")))
        .collect();
    store.insert(extra, &audit()).await.expect("insert");
    assert!(
        store
            .claim_jobs(1, Duration::ZERO, now())
            .await
            .expect("claim")
            .healthy()
            .len()
            <= 1
    );
    assert!(store
        .claim_jobs(0, Duration::ZERO, now())
        .await
        .expect("claim")
        .healthy()
        .is_empty());

    let done_at = now() + secs(1);
    store
        .complete_jobs(vec![embedded(&again[0])], done_at)
        .await
        .expect("complete");
    let r = get(store, &t, m.id).await;
    assert_eq!(r.state, State::Ready);
    assert_eq!(r.embedding_model.as_deref(), Some("conformance-model"));
    assert_eq!(r.embedding_version.as_deref(), Some("v1"));
    assert_eq!(r.updated_at, done_at);
    assert!(r.seq > im.seq, "embedding written takes a new seq");
    assert!(store
        .get_job(&t, job.job_id)
        .await
        .expect("get_job")
        .is_none());
    assert!(jobs_of(store, &t, None, m.id).await.is_empty());
    let renewed = store
        .renew_leases(&[job.job_id], lease, now())
        .await
        .expect("renew_leases");
    assert_eq!(renewed, 0, "a finished job is not renewed");
    let ch = changes_for(store, im.seq, &[r.key].into()).await;
    match &ch[..] {
        [c] => match &c.op {
            ChangeOp::Upsert(doc) => assert_eq!(doc.vector, vector_for(&m.text)),
            ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("ready memory must be an upsert"),
        },
        other => panic!("expected one change, got {other:?}"),
    }

    // A redelivered completion (vector already current) is harmless.
    let redelivered = Embedded {
        vector: None,
        ..embedded(&again[0])
    };
    store
        .complete_jobs(vec![redelivered], now())
        .await
        .expect("idempotent completion");
    assert_eq!(get(store, &t, m.id).await.state, State::Ready);

    // A re-embed after a text change shows what is already stored.
    let text2 = "Embed me again.";
    store
        .update(
            &t,
            m.id,
            MemoryPatch {
                text: Some((text2.into(), checksum("ns", text2))),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect("update")
        .expect("live");
    let j2 = claim_mine(store, &[m.id], now(), Duration::ZERO)
        .await
        .pop()
        .expect("re-embed job");
    assert_eq!(j2.text, text2);
    assert_eq!(j2.embedded_checksum.as_deref(), Some(m.checksum.as_str()));
    assert_eq!(j2.embedding_version.as_deref(), Some("v1"));
    store
        .complete_jobs(vec![embedded(&j2)], now())
        .await
        .expect("complete");
    assert_eq!(get(store, &t, m.id).await.state, State::Ready);
}

/// Failures back off, then dead-letter (memory failed); a dead job can be
/// retried (memory pending again) and then completed.
pub async fn job_failure_dead_letter_and_retry(store: &dyn Store) {
    let t = tenant("dead-letter");
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(60),
    };
    let m = new_memory(&t, "ns", "I will fail twice.");
    let im = insert_one(store, m.clone()).await;

    let t0 = now();
    let job = claim_mine(store, &[m.id], t0, Duration::from_secs(30))
        .await
        .pop()
        .expect("job");
    store
        .fail_jobs(
            vec![JobFailure {
                job_id: job.job_id,
                error: "boom 1".into(),
            }],
            policy,
            t0,
        )
        .await
        .expect("fail");
    let j = store
        .get_job(&t, job.job_id)
        .await
        .expect("get_job")
        .expect("job");
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.attempts, 1);
    assert_eq!(j.last_error.as_deref(), Some("boom 1"));
    assert_eq!(j.next_run_at, t0 + secs(10), "back-off of policy.delay(1)");
    assert_eq!(get(store, &t, m.id).await.state, State::Pending);

    assert!(
        claim_mine(store, &[m.id], t0 + secs(5), Duration::from_secs(30))
            .await
            .is_empty()
    );
    let t1 = t0 + secs(11);
    let retry = claim_mine(store, &[m.id], t1, Duration::from_secs(30))
        .await
        .pop()
        .expect("due again after the back-off");
    assert_eq!(retry.job_id, job.job_id);
    assert_eq!(retry.attempts, 1);

    store
        .fail_jobs(
            vec![
                JobFailure {
                    job_id: job.job_id,
                    error: "boom 2".into(),
                },
                JobFailure {
                    job_id: u64::MAX / 2,
                    error: "no such job".into(),
                },
            ],
            policy,
            t1,
        )
        .await
        .expect("fail");
    let dead = store
        .get_job(&t, job.job_id)
        .await
        .expect("get_job")
        .expect("job");
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.last_error.as_deref(), Some("boom 2"));
    let failed = get(store, &t, m.id).await;
    assert_eq!(failed.state, State::Failed);
    assert!(failed.seq > im.seq, "marked failed takes a new seq");
    let listed = store
        .list_jobs(&t, Some(JobState::Dead), None, 100)
        .await
        .expect("list");
    assert_eq!(listed, vec![dead.clone()]);
    assert!(store
        .list_jobs(&t, Some(JobState::Queued), None, 100)
        .await
        .expect("list")
        .is_empty());
    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!((s.jobs_dead, s.failed, s.jobs_queued), (1, 1, 0));
    assert!(
        claim_mine(store, &[m.id], t1 + TimeDelta::days(1), Duration::ZERO)
            .await
            .is_empty(),
        "dead jobs are never claimed"
    );
    let ch = changes_for(store, im.seq, &[failed.key].into()).await;
    assert!(matches!(ch.as_slice(), [c] if matches!(c.op, ChangeOp::Remove)));

    // Retry.
    assert!(store
        .retry_job(&tenant("other"), job.job_id, now(), &audit())
        .await
        .expect("retry")
        .is_none());
    assert!(store
        .retry_job(&t, u64::MAX / 2, now(), &audit())
        .await
        .expect("retry")
        .is_none());
    let t2 = now();
    let requeued = store
        .retry_job(&t, job.job_id, t2, &audit())
        .await
        .expect("retry")
        .expect("dead job is retryable");
    assert_eq!(requeued.id, job.job_id);
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(requeued.attempts, 0);
    assert_eq!(requeued.next_run_at, t2);
    let pending = get(store, &t, m.id).await;
    assert_eq!(pending.state, State::Pending);
    assert!(pending.seq > failed.seq, "retry takes a new seq");
    assert!(
        store
            .retry_job(&t, job.job_id, now(), &audit())
            .await
            .expect("retry")
            .is_none(),
        "only dead jobs are retryable"
    );

    let j = claim_mine(store, &[m.id], now(), Duration::ZERO)
        .await
        .pop()
        .expect("retried job is claimable");
    assert_eq!(j.attempts, 0);
    store
        .complete_jobs(vec![embedded(&j)], now())
        .await
        .expect("complete");
    assert_eq!(get(store, &t, m.id).await.state, State::Ready);
    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!((s.jobs_dead, s.failed, s.jobs_queued), (0, 0, 0));
    assert_eq!(s.oldest_job_at, None, "no job waits");
}

/// An embedding computed for an old text is dropped; the job for the new text
/// survives and completes normally.
pub async fn stale_completion_after_text_change(store: &dyn Store) {
    let t = tenant("stale");
    let m = new_memory(&t, "ns", "old text");
    insert_one(store, m.clone()).await;
    let old_job = claim_mine(store, &[m.id], now(), Duration::from_secs(600))
        .await
        .pop()
        .expect("job");

    let new_text = "new text";
    let u = store
        .update(
            &t,
            m.id,
            MemoryPatch {
                text: Some((new_text.into(), checksum("ns", new_text))),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .expect("update")
        .expect("live");

    store
        .complete_jobs(vec![embedded(&old_job)], now())
        .await
        .expect("stale completion is accepted");
    let after = get(store, &t, m.id).await;
    assert_eq!(after, u, "a stale result does not touch the memory");
    assert_eq!(after.state, State::Pending);
    assert!(
        changes_for(store, u.seq, &[u.key].into()).await.is_empty(),
        "and makes no change"
    );
    let live_jobs = jobs_of(store, &t, None, m.id).await;
    assert_eq!(live_jobs.len(), 1, "the job for the new text remains");
    assert_eq!(live_jobs[0].state, JobState::Queued);

    let job = claim_mine(store, &[m.id], now(), Duration::ZERO)
        .await
        .pop()
        .expect("job for the new text");
    assert_eq!(job.text, new_text);
    assert_eq!(job.checksum, checksum("ns", new_text));
    store
        .complete_jobs(vec![embedded(&job)], now())
        .await
        .expect("complete");
    let r = get(store, &t, m.id).await;
    assert_eq!(r.state, State::Ready);
    let ch = changes_for(store, u.seq, &[r.key].into()).await;
    match &ch[..] {
        [c] => match &c.op {
            ChangeOp::Upsert(doc) => {
                assert_eq!(doc.text, new_text);
                assert_eq!(doc.vector, vector_for(new_text));
            }
            ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("ready memory must be an upsert"),
        },
        other => panic!("expected one change, got {other:?}"),
    }
}

/// The outbox an external queue (NATS) drains: unannounced and stale
/// announcements are listed, claims by id respect leases, retries are
/// announced again.
pub async fn job_outbox_and_claim_by_id(store: &dyn Store) {
    let t = tenant("outbox");
    let a = new_memory(&t, "ns", "Outbox A.");
    let b = new_memory(&t, "ns", "Outbox B.");
    insert_one(store, a.clone()).await;
    insert_one(store, b.clone()).await;
    let jobs = store
        .list_jobs(&t, None, None, 10)
        .await
        .expect("list_jobs");
    let job_of = |id: Uuid| {
        jobs.iter()
            .find(|j| j.memory_id == id)
            .map(|j| j.id)
            .expect("job of memory")
    };
    let (ja, jb) = (job_of(a.id), job_of(b.id));
    let t0 = now();
    let outbox = |at: DateTime<Utc>, before: DateTime<Utc>| async move {
        store
            .unpublished_jobs(at, before, 100_000)
            .await
            .expect("unpublished_jobs")
            .into_iter()
            .filter(|(id, _)| *id == ja || *id == jb)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outbox(t0, t0 - secs(60)).await,
        vec![(ja, None), (jb, None)],
        "new jobs are unannounced, oldest first"
    );

    store
        .mark_published(&[ja], t0)
        .await
        .expect("mark_published");
    assert_eq!(outbox(t0, t0 - secs(60)).await, vec![(jb, None)]);
    assert_eq!(
        outbox(t0 + secs(120), t0 + secs(60)).await,
        vec![(ja, Some(t0)), (jb, None)],
        "an announcement older than republish_before is due again"
    );
    store.mark_published(&[], t0).await.expect("empty mark");

    // Claim by id: unknown ids are ignored, a lease is respected.
    let lease = Duration::from_secs(30);
    let got = store
        .claim_jobs_by_id(&[ja, u64::MAX / 2], lease, t0)
        .await
        .expect("claim_jobs_by_id")
        .healthy();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job_id, ja);
    assert_eq!(got[0].memory_id, a.id);
    assert_eq!(got[0].text, a.text);
    assert!(store
        .claim_jobs_by_id(&[ja], lease, t0 + secs(10))
        .await
        .expect("claim")
        .healthy()
        .is_empty());
    assert!(
        outbox(t0 + secs(10), t0 + secs(5))
            .await
            .iter()
            .all(|(id, _)| *id != ja),
        "a leased job is not in the outbox"
    );
    let again = store
        .claim_jobs_by_id(&[ja], lease, t0 + secs(31))
        .await
        .expect("claim")
        .healthy();
    assert_eq!(again.len(), 1, "an expired lease is re-claimable by id");
    assert!(store
        .claim_jobs_by_id(&[], lease, t0)
        .await
        .expect("claim none")
        .healthy()
        .is_empty());

    // A failure reschedules the job; once due it must be announced again.
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(60),
    };
    store
        .fail_jobs(
            vec![JobFailure {
                job_id: ja,
                error: "boom".into(),
            }],
            policy,
            t0 + secs(31),
        )
        .await
        .expect("fail");
    assert!(outbox(t0 + secs(35), t0)
        .await
        .iter()
        .all(|(id, _)| *id != ja));
    assert!(
        outbox(t0 + secs(42), t0).await.contains(&(ja, None)),
        "a due retry is unannounced"
    );

    // Completed and deleted jobs are neither claimable nor in the outbox.
    let claimed = store
        .claim_jobs_by_id(&[ja], lease, t0 + secs(42))
        .await
        .expect("claim")
        .healthy();
    store
        .complete_jobs(vec![embedded(&claimed[0])], t0 + secs(43))
        .await
        .expect("complete");
    store
        .soft_delete(&t, b.id, t0 + secs(43), &audit())
        .await
        .expect("delete")
        .expect("deleted");
    assert!(store
        .claim_jobs_by_id(&[ja, jb], lease, t0 + secs(44))
        .await
        .expect("claim")
        .healthy()
        .is_empty());
    assert!(outbox(t0 + secs(44), t0 + secs(44)).await.is_empty());
    assert_eq!(get(store, &t, a.id).await.state, State::Ready);
}

/// Per-tenant counts.
pub async fn stats_counts(store: &dyn Store) {
    let t = tenant("stats");
    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!(
        (
            s.memories,
            s.pending,
            s.failed,
            s.deleted,
            s.jobs_queued,
            s.jobs_dead,
            s.max_seq
        ),
        (0, 0, 0, 0, 0, 0, 0)
    );
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|x| new_memory(&t, "ns", x));
    store
        .insert(vec![a.clone(), b.clone(), c.clone(), d.clone()], &audit())
        .await
        .expect("insert");
    make_ready(store, &t, &[a.id]).await;
    let jb = claim_mine(store, &[b.id], now(), Duration::ZERO)
        .await
        .pop()
        .expect("job b");
    store
        .fail_jobs(
            vec![JobFailure {
                job_id: jb.job_id,
                error: "nope".into(),
            }],
            RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            now(),
        )
        .await
        .expect("fail");
    let dd = store
        .soft_delete(&t, d.id, now(), &audit())
        .await
        .expect("delete")
        .expect("live");

    let s = store.stats(Some(&t)).await.expect("stats");
    assert_eq!(s.memories, 3, "a, b, c are live");
    assert_eq!(s.pending, 1, "c");
    assert_eq!(s.failed, 1, "b");
    assert_eq!(s.deleted, 1, "d");
    assert_eq!(s.jobs_queued, 1, "c's job");
    assert_eq!(s.jobs_dead, 1, "b's job");
    // The queue's age is that of c's job (dead jobs do not count).
    let oldest = s.oldest_job_at.expect("c's job is waiting");
    assert!(oldest <= now(), "{oldest}");
    assert!(now() - oldest < TimeDelta::minutes(5), "{oldest}");
    assert_eq!(s.max_seq, dd.seq);
    let all = store.stats(None).await.expect("stats");
    assert!(all.memories >= 3 && all.deleted >= 1 && all.max_seq >= dd.seq);
}

// ---------------------------------------------------------------------------
// governance cases

async fn events(store: &dyn Store, tenant: &str) -> Vec<crate::audit::AuditEvent> {
    store
        .audit_events(
            tenant,
            &crate::audit::AuditQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .expect("audit_events")
}

fn actions(ev: &[crate::audit::AuditEvent]) -> Vec<&'static str> {
    ev.iter().map(|e| e.action.as_str()).collect()
}

/// Every write appends a chained event in its tenant; duplicates append none;
/// the chain verifies against the recorded head; tenants' chains are separate.
pub async fn audit_chain_of_writes(store: &dyn Store) {
    let t = tenant("audit");
    let a = new_memory(&t, "ns", "audited one");
    let dup = new_memory(&t, "ns", "audited one");
    insert_one(store, a.clone()).await;
    assert!(!insert_one(store, dup).await.created);
    let patch = MemoryPatch {
        tags: Some(vec!["x".into()]),
        ..Default::default()
    };
    store
        .update(&t, a.id, patch, now(), &audit())
        .await
        .expect("update")
        .expect("live");
    store
        .soft_delete(&t, a.id, now(), &audit())
        .await
        .expect("delete")
        .expect("live");
    let restored = store
        .restore(&t, a.id, now(), &audit())
        .await
        .expect("restore");
    assert!(restored.is_some_and(|m| m.deleted_at.is_none()));

    let ev = events(store, &t).await;
    assert_eq!(actions(&ev), ["create", "update", "delete", "restore"]);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e.n, i as u64 + 1);
        assert_eq!(e.tenant, t);
        assert_eq!(e.actor, "conformance");
        assert_eq!(e.request_id.as_deref(), Some("req-1"));
        assert_eq!(e.target, a.id.to_string());
        assert_eq!(e.hash, e.compute_hash(), "stored hash recomputes");
    }
    assert_eq!(ev[0].details["checksum"], json!(a.checksum));
    assert_eq!(ev[1].details["fields"], json!(["tags"]));
    let mut v = crate::audit::Verifier::new();
    assert!(v.feed(&ev));
    let head = store
        .audit_head(&t)
        .await
        .expect("head")
        .expect("has events");
    v.expect_head(head.0, &head.1);
    assert!(v.report().ok);

    // Filters and cursor.
    let q = crate::audit::AuditQuery {
        action: Some(crate::audit::AuditAction::Delete),
        ..Default::default()
    };
    assert_eq!(
        actions(&store.audit_events(&t, &q).await.unwrap()),
        ["delete"]
    );
    let q = crate::audit::AuditQuery {
        after: Some(2),
        limit: Some(1),
        ..Default::default()
    };
    let page = store.audit_events(&t, &q).await.unwrap();
    assert_eq!(page.iter().map(|e| e.n).collect::<Vec<_>>(), [3]);

    let other = tenant("audit-other");
    insert_one(store, new_memory(&other, "ns", "audited one")).await;
    let ev = events(store, &other).await;
    assert_eq!(
        (ev.len(), ev[0].n, ev[0].prev_hash.as_str()),
        (1, 1, crate::audit::GENESIS)
    );

    // Reads are appended explicitly.
    store
        .append_audit(
            vec![crate::audit::AuditEntry {
                tenant: other.clone(),
                action: crate::audit::AuditAction::Read,
                target: "search".into(),
                details: json!({"ids": []}),
            }],
            &audit(),
        )
        .await
        .unwrap();
    let ev = events(store, &other).await;
    assert_eq!(actions(&ev), ["create", "read"]);
    assert_eq!(ev[1].prev_hash, ev[0].hash);
}

/// A held memory cannot be updated, deleted, purged or expired until released.
pub async fn legal_hold_blocks_changes(store: &dyn Store) {
    let t = tenant("hold");
    let mut held = new_memory(&t, "ns", "evidence");
    held.expires_at = Some(now() - TimeDelta::seconds(5));
    let mut free = new_memory(&t, "ns", "not evidence");
    free.expires_at = Some(now() - TimeDelta::seconds(5));
    insert_one(store, held.clone()).await;
    insert_one(store, free.clone()).await;
    let m = store
        .set_legal_hold(&t, held.id, true, now(), &audit())
        .await
        .unwrap()
        .expect("live");
    assert!(m.legal_hold);

    let is_hold = |r: crate::Result<Option<Memory>>| matches!(r, Err(Error::LegalHold(_)));
    let patch = MemoryPatch {
        tags: Some(vec!["t".into()]),
        ..Default::default()
    };
    assert!(is_hold(
        store.update(&t, held.id, patch, now(), &audit()).await
    ));
    assert!(is_hold(
        store.soft_delete(&t, held.id, now(), &audit()).await
    ));
    assert!(is_hold(store.purge(&t, held.id, now(), &audit()).await));

    let expired = store
        .expire_due(now(), 10_000, &crate::audit::AuditCtx::system("ttl"))
        .await
        .unwrap();
    assert!(expired >= 1);
    assert!(
        get(store, &t, free.id).await.deleted_at.is_some(),
        "expired"
    );
    let h = get(store, &t, held.id).await;
    assert!(
        h.deleted_at.is_none() && h.legal_hold,
        "a held memory does not expire"
    );

    store
        .set_legal_hold(&t, held.id, false, now(), &audit())
        .await
        .unwrap();
    assert!(store
        .soft_delete(&t, held.id, now(), &audit())
        .await
        .unwrap()
        .is_some());
    let ev = events(store, &t).await;
    assert_eq!(
        actions(&ev),
        [
            "create",
            "create",
            "legal_hold",
            "expire",
            "legal_release",
            "delete"
        ]
    );
    assert_eq!(ev[3].actor, "system:ttl");
    assert_eq!(ev[3].target, free.id.to_string());
}

/// A patch with a hold change is one transaction: release, change and
/// placement commit together with their audit events in that order, and a
/// patch refused after its release leaves the hold and the chain untouched.
pub async fn legal_hold_in_a_patch(store: &dyn Store) {
    let t = tenant("hold-patch");
    let a = insert_one(store, new_memory(&t, "ns", "first evidence")).await;
    insert_one(store, new_memory(&t, "ns", "second evidence")).await;
    let tags = |v: &str| MemoryPatch {
        tags: Some(vec![v.into()]),
        ..Default::default()
    };

    // Content and a placement: both, the hold after the change.
    let m = store
        .update(
            &t,
            a.id,
            MemoryPatch {
                legal_hold: Some(true),
                ..tags("one")
            },
            now(),
            &audit(),
        )
        .await
        .unwrap()
        .expect("live");
    assert!(m.legal_hold);
    assert_eq!(m.tags, vec!["one".to_string()]);
    let seq = m.seq;

    // A release with a text that another memory has: a conflict, and the
    // release rolls back with it.
    let before = events(store, &t).await.len();
    let conflict = MemoryPatch {
        text: Some(("second evidence".into(), checksum("ns", "second evidence"))),
        legal_hold: Some(false),
        ..Default::default()
    };
    let err = store
        .update(&t, a.id, conflict, now(), &audit())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let m = get(store, &t, a.id).await;
    assert!(m.legal_hold, "the release rolled back");
    assert_eq!(events(store, &t).await.len(), before, "no audit event left");

    // A placement alone keeps the seq; a change under a hold is refused.
    assert!(matches!(
        store.update(&t, a.id, tags("two"), now(), &audit()).await,
        Err(Error::LegalHold(_))
    ));
    // A release and a change: both, the release first.
    let m = store
        .update(
            &t,
            a.id,
            MemoryPatch {
                legal_hold: Some(false),
                ..tags("three")
            },
            now(),
            &audit(),
        )
        .await
        .unwrap()
        .expect("live");
    assert!(!m.legal_hold);
    assert_eq!(m.tags, vec!["three".to_string()]);
    assert!(m.seq > seq);
    let seq = m.seq;
    let m = store
        .update(
            &t,
            a.id,
            MemoryPatch {
                legal_hold: Some(true),
                ..Default::default()
            },
            now(),
            &audit(),
        )
        .await
        .unwrap()
        .expect("live");
    assert!(m.legal_hold);
    assert_eq!(m.seq, seq, "a hold alone is not a content change");
    assert_eq!(
        actions(&events(store, &t).await),
        [
            "create",
            "create",
            "update",
            "legal_hold",
            "legal_release",
            "update",
            "legal_hold"
        ]
    );
}

/// Several deletes in one transaction: held memories stay (and are named),
/// unknown, deleted and repeated ids are ignored, one audit event per delete.
pub async fn soft_delete_many_in_one_go(store: &dyn Store) {
    let t = tenant("delete-many");
    let ins = store
        .insert(
            (0..4)
                .map(|i| new_memory(&t, "ns", &format!("turn {i}")))
                .collect(),
            &audit(),
        )
        .await
        .expect("insert");
    let ids: Vec<Uuid> = ins.iter().map(|i| i.id).collect();
    store
        .set_legal_hold(&t, ids[1], true, now(), &audit())
        .await
        .unwrap()
        .expect("live");
    store
        .soft_delete(&t, ids[3], now(), &audit())
        .await
        .unwrap()
        .expect("live");
    let before = events(store, &t).await.len();
    let max_seq = ins.iter().map(|i| i.seq).max().unwrap();
    let done = store
        .soft_delete_many(
            &t,
            &[ids[0], ids[1], ids[2], ids[3], ids[0], Uuid::new_v4()],
            now(),
            &audit(),
        )
        .await
        .expect("soft_delete_many");
    let mut deleted: Vec<Uuid> = done.deleted.iter().map(|m| m.id).collect();
    deleted.sort();
    let mut want = vec![ids[0], ids[2]];
    want.sort();
    assert_eq!(deleted, want);
    assert!(done
        .deleted
        .iter()
        .all(|m| m.deleted_at.is_some() && m.seq > max_seq));
    assert_eq!(
        done.held.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert!(get(store, &t, ids[1]).await.deleted_at.is_none());
    let ev = events(store, &t).await;
    assert_eq!(actions(&ev[before..]), ["delete", "delete"]);
    // Another tenant's ids are not found.
    let other = store
        .soft_delete_many(&tenant("delete-many-other"), &[ids[1]], now(), &audit())
        .await
        .expect("soft_delete_many");
    assert!(other.deleted.is_empty() && other.held.is_empty());
    assert!(store
        .soft_delete_many(&t, &[], now(), &audit())
        .await
        .expect("empty")
        .deleted
        .is_empty());
}

/// A purge erases the content, keeps a deleted tombstone that the change feed
/// reports as a removal, and happens at most once; `purge_deleted` takes only
/// deletions older than its cut-off.
pub async fn purge_erases_content(store: &dyn Store) {
    let t = tenant("purge");
    let mut a = new_memory(&t, "ns", "secret to erase");
    a.client_id = Some("c-1".into());
    a.metadata = obj(json!({"k": "v"}));
    a.tags = vec!["tag".into()];
    let old = new_memory(&t, "ns", "deleted long ago");
    let recent = new_memory(&t, "ns", "deleted just now");
    for m in [&a, &old, &recent] {
        insert_one(store, m.clone()).await;
    }
    make_ready(store, &t, &[a.id]).await;
    let before = store.stats(None).await.unwrap().max_seq;
    let purged = store
        .purge(&t, a.id, now(), &audit())
        .await
        .unwrap()
        .expect("purged");
    assert!(purged.text.is_empty() && purged.metadata.is_empty() && purged.tags.is_empty());
    assert!(purged.client_id.is_none() && purged.deleted_at.is_some());
    let g = get(store, &t, a.id).await;
    assert!(g.text.is_empty() && g.checksum.is_empty());
    let changes = changes_for(store, before, &HashSet::from([purged.key])).await;
    assert!(matches!(
        changes.last().map(|c| &c.op),
        Some(ChangeOp::Remove)
    ));
    assert!(store
        .purge(&t, a.id, now(), &audit())
        .await
        .unwrap()
        .is_none());
    // The text and client id are free again.
    assert!(
        insert_one(store, new_memory(&t, "ns", "secret to erase"))
            .await
            .created
    );

    store
        .soft_delete(&t, old.id, now() - TimeDelta::days(40), &audit())
        .await
        .unwrap();
    store
        .soft_delete(&t, recent.id, now(), &audit())
        .await
        .unwrap();
    let n = store
        .purge_deleted(
            now() - TimeDelta::days(30),
            10_000,
            &crate::audit::AuditCtx::system("retention"),
        )
        .await
        .unwrap();
    assert!(n >= 1);
    assert!(
        get(store, &t, old.id).await.text.is_empty(),
        "old deletion purged"
    );
    assert_eq!(
        get(store, &t, recent.id).await.text,
        recent.text,
        "recent kept"
    );
    let ev = events(store, &t).await;
    assert_eq!(
        ev.iter().filter(|e| e.action.as_str() == "purge").count(),
        2
    );
}

/// A soft delete is undone by restore (a ready memory comes back to the feed
/// as an upsert); restoring a live or unknown memory gives `None`; a restore
/// whose text was reused meanwhile is a conflict.
pub async fn restore_soft_deleted(store: &dyn Store) {
    let t = tenant("restore");
    let a = new_memory(&t, "ns", "comes back");
    insert_one(store, a.clone()).await;
    make_ready(store, &t, &[a.id]).await;
    assert!(
        store
            .restore(&t, a.id, now(), &audit())
            .await
            .unwrap()
            .is_none(),
        "live"
    );
    assert!(store
        .restore(&t, Uuid::now_v7(), now(), &audit())
        .await
        .unwrap()
        .is_none());
    let key = store
        .soft_delete(&t, a.id, now(), &audit())
        .await
        .unwrap()
        .unwrap()
        .key;
    let before = store.stats(None).await.unwrap().max_seq;
    let r = store
        .restore(&t, a.id, now(), &audit())
        .await
        .unwrap()
        .expect("restored");
    assert_eq!((r.state, r.deleted_at), (State::Ready, None));
    let changes = changes_for(store, before, &HashSet::from([key])).await;
    assert!(matches!(
        changes.last().map(|c| &c.op),
        Some(ChangeOp::Upsert(_))
    ));

    store.soft_delete(&t, a.id, now(), &audit()).await.unwrap();
    insert_one(store, new_memory(&t, "ns", "comes back")).await;
    assert!(matches!(
        store.restore(&t, a.id, now(), &audit()).await,
        Err(Error::Conflict(_))
    ));
}

/// Keys are stored with their hash, found by id from any tenant, listed per
/// tenant, revoked once; creation and revocation are audited.
pub async fn api_keys_roundtrip(store: &dyn Store) {
    let t = tenant("keys");
    let key = crate::apikey::ApiKey {
        id: Uuid::now_v7().simple().to_string()[..16].to_string(),
        tenant: t.clone(),
        name: "agent".into(),
        role: Role::Writer,
        namespaces: Some(vec!["agent:*".into()]),
        permissions: vec![Permission::PiiRead],
        created_at: now(),
        created_by: "admin".into(),
        revoked_at: None,
        secret_hash: "ab".repeat(32),
    };
    store.create_api_key(key.clone(), &audit()).await.unwrap();
    assert_eq!(store.api_key(&key.id).await.unwrap(), Some(key.clone()));
    assert_eq!(store.list_api_keys(&t).await.unwrap(), vec![key.clone()]);
    assert!(store
        .list_api_keys(&tenant("keys-other"))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .revoke_api_key(&tenant("keys-other"), &key.id, now(), &audit())
        .await
        .unwrap()
        .is_none());
    let at = now();
    let r = store
        .revoke_api_key(&t, &key.id, at, &audit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.revoked_at, Some(at));
    let again = store
        .revoke_api_key(&t, &key.id, now() + TimeDelta::seconds(5), &audit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(at), "revoked once");
    assert_eq!(
        store.api_key(&key.id).await.unwrap().unwrap().revoked_at,
        Some(at)
    );
    assert_eq!(
        actions(&events(store, &t).await),
        ["key_create", "key_revoke"]
    );
    assert!(store.api_key("0000000000000000").await.unwrap().is_none());
}

/// A namespace's default TTL applies to memories inserted without an expiry.
pub async fn namespace_default_ttl(store: &dyn Store) {
    let t = tenant("ttl");
    insert_one(store, new_memory(&t, "ns", "before the default")).await;
    assert!(!store
        .set_namespace_ttl(&t, "nope", Some(60), &audit())
        .await
        .unwrap());
    assert!(store
        .set_namespace_ttl(&t, "ns", Some(3600), &audit())
        .await
        .unwrap());
    let ns = store.namespaces(&t).await.unwrap();
    assert_eq!(ns[0].default_ttl_seconds, Some(3600));
    let a = new_memory(&t, "ns", "gets the default");
    let mut b = new_memory(&t, "ns", "has its own");
    b.expires_at = Some(now() + TimeDelta::days(2));
    insert_one(store, a.clone()).await;
    insert_one(store, b.clone()).await;
    assert_eq!(
        get(store, &t, a.id).await.expires_at,
        Some(a.created_at + TimeDelta::seconds(3600))
    );
    assert_eq!(get(store, &t, b.id).await.expires_at, b.expires_at);
    assert!(store
        .set_namespace_ttl(&t, "ns", None, &audit())
        .await
        .unwrap());
    let c = new_memory(&t, "ns", "after clearing");
    insert_one(store, c.clone()).await;
    assert_eq!(get(store, &t, c.id).await.expires_at, None);
    assert_eq!(
        actions(&events(store, &t).await),
        [
            "create",
            "namespace_update",
            "create",
            "create",
            "namespace_update",
            "create"
        ]
    );
}

/// Whatever the store accepts it reads back: values past the documented
/// ranges (a TTL whose expiry overflows, an expiry past year 9999) are
/// refused as `out_of_range` with nothing written, even when the engine's
/// validation is bypassed, and the namespace keeps working: every read path
/// (get, scan, the change feed, the attribute loader) still decodes it.
pub async fn refuses_values_it_cannot_read_back(store: &dyn Store) {
    let t = tenant("guards");
    let before = insert_one(store, new_memory(&t, "ns", "a fine memory")).await;
    let refused = |r: crate::Result<bool>| match r {
        Err(e) => assert_eq!(e.code(), crate::Code::OutOfRange, "{e}"),
        Ok(ok) => panic!("a TTL past the range was stored ({ok})"),
    };
    for ttl in [
        u64::MAX,
        i64::MAX as u64,
        crate::limits::MAX_TTL_SECONDS + 1,
        0,
    ] {
        refused(store.set_namespace_ttl(&t, "ns", Some(ttl), &audit()).await);
    }
    assert_eq!(
        store.namespaces(&t).await.unwrap()[0].default_ttl_seconds,
        None
    );
    // The longest TTL in range still works, and expires when it should.
    assert!(store
        .set_namespace_ttl(&t, "ns", Some(crate::limits::MAX_TTL_SECONDS), &audit())
        .await
        .unwrap());
    let long = new_memory(&t, "ns", "kept for a century");
    insert_one(store, long.clone()).await;
    assert_eq!(
        get(store, &t, long.id).await.expires_at,
        Some(long.created_at + TimeDelta::seconds(crate::limits::MAX_TTL_SECONDS as i64))
    );
    // An expiry past the latest representable time, straight to the store.
    let mut far = new_memory(&t, "ns", "expires after year 9999");
    far.expires_at = Some(crate::limits::max_time() + TimeDelta::days(1));
    match store.insert(vec![far.clone()], &audit()).await {
        Err(e) => assert_eq!(e.code(), crate::Code::OutOfRange, "{e}"),
        Ok(_) => panic!("an expiry past year 9999 was stored"),
    }
    assert!(
        store.get(&t, far.id).await.unwrap().is_none(),
        "nothing written"
    );
    // The same through an update.
    let patch = MemoryPatch {
        expires_at: Some(Some(crate::limits::max_time() + TimeDelta::days(1))),
        ..Default::default()
    };
    match store.update(&t, before.id, patch, now(), &audit()).await {
        Err(e) => assert_eq!(e.code(), crate::Code::OutOfRange, "{e}"),
        Ok(_) => panic!("an update past year 9999 was stored"),
    }
    // Every read path still decodes the namespace.
    let scanned = store
        .scan(&t, &["ns".to_string()], None, 100)
        .await
        .unwrap()
        .healthy();
    assert_eq!(scanned.len(), 2);
    make_ready(store, &t, &[before.id, long.id]).await;
    let keys: HashSet<Key> = scanned.iter().map(|m| m.key).collect();
    let feed = changes_for(store, 0, &keys).await;
    assert!(
        feed.iter().all(|c| matches!(c.op, ChangeOp::Upsert(_))),
        "{feed:?}"
    );
    let mut after = None;
    let mut attrs = 0;
    loop {
        let page = store
            .live_attrs(after, 10_000)
            .await
            .expect("live_attrs decodes")
            .healthy();
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        attrs += page.iter().filter(|(k, _)| keys.contains(k)).count();
    }
    assert_eq!(attrs, 2);
}

/// Quarantine entries: one per key, upserted (keeping `first_seen`), listed
/// per tenant or store-wide in key order, released by key.
pub async fn quarantine_entries(store: &dyn Store) {
    let t = tenant("quarantine");
    let other = tenant("quarantine-other");
    let a = insert_one(store, new_memory(&t, "ns", "quarantined a")).await;
    let b = insert_one(store, new_memory(&other, "ns", "quarantined b")).await;
    let t0 = now() - secs(60);
    let e = |key: Key, tenant: &str, source, error: &str, at| QuarantineEntry {
        key,
        memory_id: None,
        tenant: Some(tenant.to_string()),
        source,
        seq: Some(7),
        error: error.to_string(),
        first_seen: at,
        last_seen: at,
    };
    store
        .quarantine(vec![
            e(a.key, &t, QuarantineSource::Feed, "metadata: bad", t0),
            e(b.key, &other, QuarantineSource::Job, "text: bad", t0),
        ])
        .await
        .expect("quarantine");
    // Met again later: the error and last_seen change, first_seen stays.
    let later = now();
    store
        .quarantine(vec![e(
            a.key,
            &t,
            QuarantineSource::Read,
            "kind: bad",
            later,
        )])
        .await
        .expect("quarantine again");
    let mine = store.quarantined(Some(&t), None, 100).await.expect("list");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].key, a.key);
    assert_eq!(mine[0].source, QuarantineSource::Read);
    assert_eq!(mine[0].error, "kind: bad");
    assert_eq!(mine[0].seq, Some(7));
    assert_eq!(mine[0].first_seen, t0);
    assert_eq!(mine[0].last_seen, later);
    let all: Vec<Key> = store
        .quarantined(None, None, 10_000)
        .await
        .expect("list all")
        .iter()
        .map(|e| e.key)
        .collect();
    assert!(all.contains(&a.key) && all.contains(&b.key), "{all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "key order");
    let page = store.quarantined(None, Some(a.key), 10_000).await.unwrap();
    assert!(page.iter().all(|e| e.key > a.key));
    assert_eq!(store.release_quarantine(&[a.key, b.key]).await.unwrap(), 2);
    assert_eq!(store.release_quarantine(&[a.key]).await.unwrap(), 0);
    assert!(store
        .quarantined(Some(&t), None, 100)
        .await
        .unwrap()
        .is_empty());
}

/// For a back-end's own corruption test (the damage is dialect-specific): a
/// tenant with two pending memories; the test damages the first one's row
/// past the schema's guards, then calls [`corrupt_row_comes_back_in_place`].
pub async fn memories_to_corrupt(store: &dyn Store) -> (String, Inserted, Inserted) {
    let t = tenant("corrupt");
    let mut ins = store
        .insert(
            vec![
                new_memory(&t, "ns", "soon corrupt"),
                new_memory(&t, "ns", "stays fine"),
            ],
            &audit(),
        )
        .await
        .expect("insert");
    let good = ins.pop().expect("two");
    let bad = ins.pop().expect("two");
    (t, bad, good)
}

/// After the test damaged `bad`'s row so that it is ready, has a job, and
/// cannot be decoded as a memory, its attributes or its claimed job: a
/// single read of it is `Error::Corrupt`, and every many-row read (scan,
/// hydration, the change feed, the attribute loader, a claim) returns it as
/// [`Corrupt`] in its place, with its key, id and tenant, and decodes `good`.
pub async fn corrupt_row_comes_back_in_place(
    store: &dyn Store,
    t: &str,
    bad: &Inserted,
    good: &Inserted,
) {
    let err = store.get(t, bad.id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert!(store.get(t, good.id).await.unwrap().is_some());
    let want =
        |c: &Corrupt| c.key == bad.key && c.id == Some(bad.id) && c.tenant.as_deref() == Some(t);
    let page = store.scan(t, &[], None, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(matches!(&page[0], Err(c) if want(c)), "{page:?}");
    assert_eq!(page[1].as_ref().unwrap().id, good.id);
    // In event-time order too, with the event time read on its own so that
    // a list can continue past the row.
    for descending in [false, true] {
        let page = store
            .scan_by_time(t, &[], None, descending, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 2, "{page:?}");
        assert!(
            page.iter()
                .any(|r| matches!(r, Err(c) if want(c) && c.occurred_at.is_some())),
            "{page:?}"
        );
    }
    let hits = store.get_by_keys(t, &[bad.key, good.key]).await.unwrap();
    assert_eq!(hits.iter().filter(|r| r.is_err()).count(), 1, "{hits:?}");
    let feed = changes_for(store, 0, &[bad.key].into_iter().collect()).await;
    assert!(
        feed.iter()
            .any(|c| matches!(&c.op, ChangeOp::Corrupt(x) if want(x) && c.key == x.key)),
        "{feed:?}"
    );
    let mut attrs = Vec::new();
    let mut after = None;
    loop {
        let page = store.live_attrs(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(match last {
            Ok((k, _)) => *k,
            Err(c) => c.key,
        });
        attrs.extend(page);
    }
    assert!(
        attrs.iter().any(|r| matches!(r, Err(c) if want(c))),
        "{attrs:?}"
    );
    let claimed: Vec<Decoded<ClaimedJob>> = store
        .claim_jobs(10_000, Duration::ZERO, now())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| match r {
            Ok(j) => j.key == bad.key || j.key == good.key,
            Err(c) => c.key == bad.key || c.key == good.key,
        })
        .collect();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let bad_job = claimed
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one corrupt");
    assert!(want(bad_job) && bad_job.job_id.is_some(), "{bad_job:?}");
}

/// A job keeps the `traceparent` of the write that enqueued it, so a worker
/// can link its span to that request; writes without one give jobs without.
pub async fn jobs_carry_trace_context(store: &dyn Store) {
    let t = tenant("trace");
    let traced = |tp: &str| crate::audit::AuditCtx {
        traceparent: Some(tp.to_string()),
        ..audit()
    };
    let tp_insert = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let tp_update = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tp_restore = "00-a3ce929d0e0e47364bf92f3577b34da6-5ee3f0c9b7ad6b71-01";
    let a = new_memory(&t, "ns", "traced one");
    let b = new_memory(&t, "ns", "traced two");
    let c = new_memory(&t, "ns", "untraced");
    store
        .insert(vec![a.clone(), b.clone()], &traced(tp_insert))
        .await
        .expect("insert");
    insert_one(store, c.clone()).await;
    let jobs = claim_mine(store, &[a.id, b.id, c.id], now(), Duration::ZERO).await;
    let tp_of = |jobs: &[ClaimedJob], id: Uuid| {
        jobs.iter()
            .find(|j| j.memory_id == id)
            .unwrap_or_else(|| panic!("a job for {id}"))
            .traceparent
            .clone()
    };
    assert_eq!(tp_of(&jobs, a.id).as_deref(), Some(tp_insert));
    assert_eq!(tp_of(&jobs, b.id).as_deref(), Some(tp_insert));
    assert_eq!(tp_of(&jobs, c.id), None);

    // A new text enqueues a new job, carrying the updating request's trace;
    // claimed by id (the external queue's path) it is the same.
    store
        .update(
            &t,
            a.id,
            MemoryPatch {
                text: Some((
                    "traced one, edited".into(),
                    checksum("ns", "traced one, edited"),
                )),
                ..Default::default()
            },
            now(),
            &traced(tp_update),
        )
        .await
        .expect("update")
        .expect("live");
    let job_id = jobs_of(store, &t, None, a.id).await[0].id;
    let by_id = store
        .claim_jobs_by_id(&[job_id], Duration::ZERO, now())
        .await
        .expect("claim_jobs_by_id")
        .healthy();
    assert_eq!(tp_of(&by_id, a.id).as_deref(), Some(tp_update));

    // A pending memory deleted and restored is enqueued again, by the restore.
    store.soft_delete(&t, b.id, now(), &audit()).await.unwrap();
    store
        .restore(&t, b.id, now(), &traced(tp_restore))
        .await
        .unwrap()
        .expect("restored");
    let jobs = claim_mine(store, &[b.id], now(), Duration::ZERO).await;
    assert_eq!(tp_of(&jobs, b.id).as_deref(), Some(tp_restore));
}

// ---------------------------------------------------------------------------

fn model_v2() -> ModelInfo {
    ModelInfo {
        name: "conformance-model-2".into(),
        version: "v2".into(),
        dims: 3,
    }
}

/// What the second model makes of a text: another space, another length.
fn vector_v2(text: &str) -> Vec<f32> {
    vector_for(&format!("v2:{text}"))[..3].to_vec()
}

/// Back-fill every memory the store reports, page by page; returns how many.
async fn backfill_all(store: &dyn Store) -> usize {
    let mut n = 0;
    let mut after = None;
    loop {
        let page = store
            .reembed_todo(after, 50)
            .await
            .expect("reembed_todo")
            .healthy();
        let Some(last) = page.last().map(|i| i.key) else {
            return n;
        };
        assert!(
            after.is_none_or(|a| last > a),
            "reembed_todo advances by key"
        );
        after = Some(last);
        let items: Vec<TargetVector> = page
            .into_iter()
            .map(|i| TargetVector {
                key: i.key,
                vector: vector_v2(&i.text),
                checksum: i.checksum,
            })
            .collect();
        n += store
            .put_target_vectors(&model_v2(), items)
            .await
            .expect("put_target_vectors");
    }
}

/// Re-embedding: the model state, the target slot, the back-fill, dual
/// completions, the feed's target vectors and the atomic switch.
pub async fn reembed_to_a_new_model(store: &dyn Store) {
    let (v1, v2) = (model(), model_v2());
    let t = tenant("reembed");
    let s0 = store.init_model(&v1).await.expect("init_model");
    assert_eq!(s0.active.as_ref(), Some(&v1), "the first model is recorded");
    assert_eq!(s0.target, None);
    let again = store.init_model(&v2).await.expect("init_model");
    assert_eq!(
        again.active.as_ref(),
        Some(&v1),
        "init never replaces the model"
    );
    assert!(store
        .reembed_todo(None, 10)
        .await
        .expect("todo")
        .healthy()
        .is_empty());
    assert_eq!(store.reembed_progress().await.expect("progress").total, 0);
    match store.begin_reembed(&v1).await {
        Err(Error::Conflict(_)) => {}
        other => panic!("re-embedding to the active model: {other:?}"),
    }

    let ms: Vec<NewMemory> = (0..4)
        .map(|i| new_memory(&t, "ns", &format!("reembed {i}")))
        .collect();
    let ids: Vec<Uuid> = ms.iter().map(|m| m.id).collect();
    store.insert(ms.clone(), &audit()).await.expect("insert");
    make_ready(store, &t, &ids[..3]).await;
    // ids[3] stays pending; ids[2] is soft-deleted (a restore must find a
    // vector of the right model, so it is re-embedded too).
    store
        .soft_delete(&t, ids[2], now(), &audit())
        .await
        .expect("soft_delete")
        .expect("live");

    let st = store.begin_reembed(&v2).await.expect("begin_reembed");
    assert_eq!(st.active.as_ref(), Some(&v1));
    assert_eq!(st.target.as_ref(), Some(&v2));
    assert_eq!(store.model_state().await.expect("state"), st);
    let p = store.reembed_progress().await.expect("progress");
    assert_eq!(p.done, 0);
    assert!(
        p.total >= 3,
        "every memory with a current vector counts: {p:?}"
    );
    let todo = store
        .reembed_todo(None, 10_000)
        .await
        .expect("todo")
        .healthy();
    let keys: Vec<Key> = todo.iter().map(|i| i.key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
    let mine: Vec<Uuid> = {
        let mut v = Vec::new();
        for i in &todo {
            for id in &ids {
                if get(store, &t, *id).await.key == i.key {
                    v.push(*id);
                }
            }
        }
        v
    };
    assert_eq!(
        mine,
        ids[..3].to_vec(),
        "ready and soft-deleted, not pending"
    );
    assert!(
        !store.switch_model(&v2).await.expect("switch"),
        "incomplete"
    );

    // A vector of another model, or for an old text, is not written.
    let m0 = get(store, &t, ids[0]).await;
    let wrong = TargetVector {
        key: m0.key,
        checksum: m0.checksum.clone(),
        vector: vector_v2(&m0.text),
    };
    assert_eq!(
        store
            .put_target_vectors(&v1, vec![wrong.clone()])
            .await
            .expect("put"),
        0
    );
    let stale = TargetVector {
        checksum: "not-the-text".into(),
        ..wrong.clone()
    };
    assert_eq!(
        store
            .put_target_vectors(&v2, vec![stale])
            .await
            .expect("put"),
        0
    );
    let head = store.stats(None).await.expect("stats").max_seq;
    assert_eq!(
        store
            .put_target_vectors(&v2, vec![wrong])
            .await
            .expect("put"),
        1
    );
    let keys0: HashSet<Key> = [m0.key].into();
    let ch = changes_for(store, head, &keys0).await;
    assert_eq!(ch.len(), 1, "a back-filled vector is a change");
    match &ch[0].op {
        ChangeOp::Upsert(d) => {
            assert_eq!(d.vector, vector_for(&m0.text), "the active vector stays");
            assert_eq!(d.target_vector.as_deref(), Some(&vector_v2(&m0.text)[..]));
        }
        ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("a ready memory is an upsert"),
    }

    // The pending one completes with both models at once.
    let jobs = claim_mine(store, &ids[3..], now(), Duration::ZERO).await;
    assert_eq!(jobs.len(), 1);
    let both = Embedded {
        also: Some(ModelVector {
            model: v2.clone(),
            vector: vector_v2(&jobs[0].text),
        }),
        ..embedded(&jobs[0])
    };
    store
        .complete_jobs(vec![both], now())
        .await
        .expect("complete");
    let m3 = get(store, &t, ids[3]).await;
    assert_eq!(m3.state, State::Ready);
    assert_eq!(m3.embedding_version.as_deref(), Some("v1"));

    // Everything else (other cases' memories included) is back-filled.
    backfill_all(store).await;
    let p = store.reembed_progress().await.expect("progress");
    assert_eq!(p.done, p.total, "{p:?}");
    assert!(store
        .reembed_todo(None, 10)
        .await
        .expect("todo")
        .healthy()
        .is_empty());

    // A job embedded only by the old model while the target is pending
    // still completes (v1 is active) but leaves the memory to the back-fill.
    let late = new_memory(&t, "ns", "reembed late");
    store
        .insert(vec![late.clone()], &audit())
        .await
        .expect("insert");
    make_ready(store, &t, &[late.id]).await;
    assert!(
        !store.switch_model(&v2).await.expect("switch"),
        "late is missing"
    );
    assert_eq!(backfill_all(store).await, 1);

    // A job claimed before the switch, to be completed after it.
    let racer = new_memory(&t, "ns", "reembed racer");
    store
        .insert(vec![racer.clone()], &audit())
        .await
        .expect("insert");
    let racing = claim_mine(store, &[racer.id], now(), Duration::ZERO).await;
    assert_eq!(racing.len(), 1);

    let head = store.stats(None).await.expect("stats").max_seq;
    assert!(store.switch_model(&v2).await.expect("switch"));
    let st = store.model_state().await.expect("state");
    assert_eq!(st.active.as_ref(), Some(&v2));
    assert_eq!(st.target, None);
    assert!(!store.switch_model(&v2).await.expect("switch"), "done once");
    assert_eq!(
        store.stats(None).await.expect("stats").max_seq,
        head,
        "the switch takes no seqs"
    );
    for id in &ids[..2] {
        let m = get(store, &t, *id).await;
        assert_eq!(m.embedding_version.as_deref(), Some("v2"));
        assert_eq!(m.embedding_model.as_deref(), Some("conformance-model-2"));
    }
    // The feed now carries the new vectors, and no target ones.
    let mine: HashSet<Key> = [m0.key, m3.key].into();
    let upserts: Vec<(Key, Vec<f32>)> = changes_for(store, 0, &mine)
        .await
        .into_iter()
        .filter_map(|c| match c.op {
            ChangeOp::Upsert(d) => {
                assert!(d.target_vector.is_none());
                Some((d.key, d.vector.clone()))
            }
            ChangeOp::Remove | ChangeOp::Corrupt(_) => None,
        })
        .collect();
    assert_eq!(upserts.len(), 2, "{upserts:?}");
    for (key, v) in upserts {
        let text = if key == m0.key { &m0.text } else { &m3.text };
        assert_eq!(v, vector_v2(text));
    }

    // The racing job's old-model vector is refused: the memory stays
    // pending and its job runnable; with a new-model vector it completes.
    store
        .complete_jobs(vec![embedded(&racing[0])], now())
        .await
        .expect("complete");
    assert_eq!(get(store, &t, racer.id).await.state, State::Pending);
    let again = claim_mine(store, &[racer.id], now(), Duration::ZERO).await;
    assert_eq!(again.len(), 1, "left to be claimed again");
    let v2_done = Embedded {
        vector: Some(vector_v2(&again[0].text)),
        model: v2.clone(),
        ..embedded(&again[0])
    };
    store
        .complete_jobs(vec![v2_done], now())
        .await
        .expect("complete");
    let r = get(store, &t, racer.id).await;
    assert_eq!(r.state, State::Ready);
    assert_eq!(r.embedding_version.as_deref(), Some("v2"));
}
