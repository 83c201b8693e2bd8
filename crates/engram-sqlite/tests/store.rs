//! SqliteStore: the shared Store conformance suite plus SQLite-specific checks
//! (durability settings, reopen, concurrent writers, error mapping).

use chrono::Utc;
use engram_core::conformance::{self, new_memory, tenant, Healthy};
use engram_core::{ChangeOp, Embedded, Error, ModelInfo, Store};
use engram_sqlite::SqliteStore;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("engram.db"))
        .await
        .expect("open store")
}

fn model() -> ModelInfo {
    ModelInfo {
        name: "test".into(),
        version: "1".into(),
        dims: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn durability_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert_eq!(store.pragma("journal_mode").await.unwrap(), "wal");
    assert_eq!(store.pragma("synchronous").await.unwrap(), "2", "FULL");
    assert_eq!(store.pragma("foreign_keys").await.unwrap(), "1");
    assert_ne!(store.pragma("busy_timeout").await.unwrap(), "0");
    assert!(store
        .pragma("journal_mode; DROP TABLE memories")
        .await
        .is_err());
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant("reopen");
    let (a, b) = (
        new_memory(&t, "ns", "persisted one"),
        new_memory(&t, "ns", "persisted two"),
    );
    let (before_a, before_b, max_seq) = {
        let store = open(dir.path()).await;
        store
            .insert(vec![a.clone(), b.clone()], &conformance::audit())
            .await
            .unwrap();
        let job = store
            .claim_jobs(10, Duration::ZERO, Utc::now())
            .await
            .unwrap()
            .healthy()
            .into_iter()
            .find(|j| j.memory_id == a.id)
            .unwrap();
        store
            .complete_jobs(
                vec![Embedded {
                    job_id: job.job_id,
                    key: job.key,
                    checksum: job.checksum,
                    vector: Some(vec![1.0, 0.0, 0.0]),
                    model: model(),
                    also: None,
                }],
                Utc::now(),
            )
            .await
            .unwrap();
        let ga = store.get(&t, a.id).await.unwrap().unwrap();
        let gb = store.get(&t, b.id).await.unwrap().unwrap();
        let max = store.stats(None).await.unwrap().max_seq;
        store.close().await;
        (ga, gb, max)
    };

    let store = open(dir.path()).await;
    assert_eq!(store.get(&t, a.id).await.unwrap().unwrap(), before_a);
    assert_eq!(store.get(&t, b.id).await.unwrap().unwrap(), before_b);
    assert_eq!(store.stats(None).await.unwrap().max_seq, max_seq);
    assert!(store.namespace_exists(&t, "ns").await.unwrap());

    // The feed still has both, with the vector.
    let ch = store.changes_since(0, 100).await.unwrap();
    assert_eq!(ch.len(), 2);
    match &ch.iter().find(|c| c.key == before_a.key).unwrap().op {
        ChangeOp::Upsert(doc) => assert_eq!(doc.vector, vec![1.0, 0.0, 0.0]),
        ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("a is ready"),
    }

    // b's job is still there, and seq continues above the old maximum.
    let jobs = store
        .claim_jobs(10, Duration::ZERO, Utc::now())
        .await
        .unwrap()
        .healthy();
    assert_eq!(
        jobs.iter().map(|j| j.memory_id).collect::<Vec<_>>(),
        vec![b.id]
    );
    let c = store
        .insert(
            vec![new_memory(&t, "ns", "after reopen")],
            &conformance::audit(),
        )
        .await
        .unwrap();
    assert_eq!(c[0].seq, max_seq + 1);
    assert!(c[0].key > before_b.key);
    // Dedupe still sees the old rows.
    let dup = store
        .insert(
            vec![new_memory(&t, "ns", "persisted one")],
            &conformance::audit(),
        )
        .await
        .unwrap();
    assert!(!dup[0].created && dup[0].id == a.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_get_unique_increasing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    let t = tenant("concurrent");
    let tasks = 16;
    let per_task = 20;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_task {
                let m = new_memory(
                    &t,
                    &format!("ns{}", task % 3),
                    &format!("task {task} item {i}"),
                );
                let ins = store
                    .insert(vec![m], &conformance::audit())
                    .await
                    .expect("insert");
                seqs.push((ins[0].seq, ins[0].key));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let seqs = h.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0].0 < w[1].0),
            "one task's inserts commit in order"
        );
        all.extend(seqs);
    }
    let n = tasks * per_task;
    assert_eq!(all.len(), n);
    assert_eq!(
        all.iter().map(|s| s.0).collect::<HashSet<_>>().len(),
        n,
        "unique seqs"
    );
    assert_eq!(
        all.iter().map(|s| s.1).collect::<HashSet<_>>().len(),
        n,
        "unique keys"
    );
    // With one writer, seq order is commit order is key order for inserts.
    all.sort_unstable();
    assert!(all.windows(2).all(|w| w[0].1 < w[1].1));

    let feed = store.changes_since(0, 10_000).await.unwrap();
    assert_eq!(feed.len(), n);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.stats(Some(&t)).await.unwrap().memories, n as u64);
}

/// A row that cannot be decoded (a damaged file, a hand edit past the
/// guards) fails only reads of that row: scans, the change feed, claims and
/// the attribute loader return it as `Corrupt` in its place and go on.
#[tokio::test]
async fn corrupt_rows_come_back_as_corrupt_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (t, bad, good) = conformance::memories_to_corrupt(&store).await;
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("engram.db").display()
    ))
    .await
    .unwrap();
    let corrupt = "UPDATE memories SET metadata = 'not json', kind = 'bogus', state = 'ready', \
                   vector = zeroblob(16), text = x'ff' WHERE id = ?";
    // The schema's guards refuse it...
    let refused = sqlx::query(corrupt)
        .bind(bad.id.to_string())
        .execute(&raw)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("wrong type"), "{refused}");
    // ...so get past them, as a damaged file or a hand edit would.
    for trigger in ["memories_guard_update", "memories_guard_update_json"] {
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(&raw)
            .await
            .unwrap();
    }
    sqlx::query(corrupt)
        .bind(bad.id.to_string())
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    conformance::corrupt_row_comes_back_in_place(&store, &t, &bad, &good).await;
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.close().await;
    let err = store.ping().await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "store", .. }),
        "{err:?}"
    );
    let err = store
        .insert(vec![new_memory("t", "ns", "x")], &conformance::audit())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn single_insert_latency() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let t = tenant("latency");
    let mut times = Vec::new();
    for i in 0..50 {
        let m = new_memory(&t, "ns", &format!("latency probe {i}"));
        let start = Instant::now();
        store.insert(vec![m], &conformance::audit()).await.unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let p95 = times[times.len() * 95 / 100];
    eprintln!("single insert (synchronous=FULL): p50 {p50:?}, p95 {p95:?}");
    // Generous: catches a missing index or a per-insert full scan, not a slow disk.
    assert!(p50 < Duration::from_millis(250), "p50 {p50:?}");
}

/// Many rows: batch inserts, then the whole feed page by page.
#[tokio::test]
async fn change_feed_pages_through_many_rows() {
    let rows: usize = std::env::var("ENGRAM_FEED_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let t = tenant("feed");
    let start = Instant::now();
    let mut i = 0;
    while i < rows {
        let batch: Vec<_> = (i..(i + 500).min(rows))
            .map(|n| new_memory(&t, "ns", &format!("row {n}")))
            .collect();
        i += batch.len();
        store.insert(batch, &conformance::audit()).await.unwrap();
    }
    let inserted = start.elapsed();

    let start = Instant::now();
    let mut pos = 0;
    let mut seen = 0;
    loop {
        let page = store.changes_since(pos, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        pos = last.seq;
        seen += page.len();
    }
    let fed = start.elapsed();
    eprintln!("{rows} rows: insert {inserted:?} (batches of 500), feed {fed:?} (pages of 1000)");
    assert_eq!(seen, rows);
    let s = store.stats(Some(&t)).await.unwrap();
    assert_eq!(
        (s.memories, s.pending, s.jobs_queued),
        (rows as u64, rows as u64, rows as u64)
    );
}

#[tokio::test]
async fn awkward_text_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let t = tenant("awkward");
    let texts = [
        "nul \0 inside".to_string(),
        "quotes \" ' and \\ backslashes \\\" and json: {\"a\": [1]}".to_string(),
        "emoji 🦀 and combining e\u{301} and RTL \u{202e}abc".to_string(),
        "control \u{1} \u{1f} \t\r\n".to_string(),
        "long ".repeat(50_000),
    ];
    let items: Vec<_> = texts
        .iter()
        .map(|x| {
            let mut m = new_memory(&t, "ns \" ' \\ 🦀", x);
            m.metadata = serde_json::json!({"k\0": "v\"\\🦀", "n": u64::MAX, "f": -0.1})
                .as_object()
                .unwrap()
                .clone();
            m.tags = vec!["\0".into(), "🦀".into()];
            m.client_id = Some(format!("client \0 {}", x.len()));
            m
        })
        .collect();
    let ins = store
        .insert(items.clone(), &conformance::audit())
        .await
        .unwrap();
    assert!(ins.iter().all(|i| i.created));
    for m in &items {
        let got = store.get(&t, m.id).await.unwrap().unwrap();
        assert_eq!(got.text, m.text);
        assert_eq!(got.namespace, m.namespace);
        assert_eq!(got.metadata, m.metadata);
        assert_eq!(got.tags, m.tags);
        assert_eq!(got.client_id, m.client_id);
    }
    // And they dedupe against themselves.
    let again = store
        .insert(items.clone(), &conformance::audit())
        .await
        .unwrap();
    assert!(again
        .iter()
        .zip(&ins)
        .all(|(a, i)| !a.created && a.id == i.id));
}

/// Tampering with stored audit events (as someone with write access to the
/// database file could) is caught by verification at the right event.
#[tokio::test]
async fn audit_verify_detects_tampering_at_the_right_event() {
    use engram_core::{Principal, Role, StoreAdmin};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let t = tenant("tamper");
    for i in 0..6 {
        store
            .insert(
                vec![new_memory(&t, "ns", &format!("event {i}"))],
                &conformance::audit(),
            )
            .await
            .unwrap();
    }
    let admin = StoreAdmin::new(Arc::new(store.clone()));
    let p = Principal::new(t.clone(), "auditor", Role::Admin);
    let report = admin.verify_audit(&p).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 6);

    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("engram.db").display()
    ))
    .await
    .unwrap();
    let exec = |sql: &'static str| {
        let raw = raw.clone();
        let t = t.clone();
        async move {
            sqlx::query(sql).bind(&t).execute(&raw).await.unwrap();
        }
    };
    // Take a copy of the table to restore between cases.
    exec("CREATE TABLE audit_copy AS SELECT * FROM audit WHERE tenant = ?").await;
    let reset = || async {
        exec("DELETE FROM audit WHERE tenant = ?").await;
        exec("INSERT INTO audit SELECT * FROM audit_copy WHERE tenant = ?").await;
        let r = admin.verify_audit(&p).await.unwrap();
        assert!(r.ok, "{r:?}");
    };

    let cases: [(&str, &'static str, u64); 5] = [
        (
            "edited actor",
            "UPDATE audit SET actor = 'mallory' WHERE tenant = ? AND n = 3",
            3,
        ),
        (
            "edited details",
            "UPDATE audit SET details = '{\"namespace\":\"other\"}' WHERE tenant = ? AND n = 4",
            4,
        ),
        ("removed", "DELETE FROM audit WHERE tenant = ? AND n = 2", 2),
        (
            "reordered",
            // (n is unique, so swap through a negative n)
            "UPDATE audit SET n = -n WHERE tenant = ?1 AND n IN (2, 5); \
             UPDATE audit SET n = CASE n WHEN -2 THEN 5 WHEN -5 THEN 2 END \
             WHERE tenant = ?1 AND n < 0",
            2,
        ),
        (
            "tail removed",
            "DELETE FROM audit WHERE tenant = ? AND n = 6",
            6,
        ),
    ];
    for (what, sql, at) in cases {
        exec(sql).await;
        let r = admin.verify_audit(&p).await.unwrap();
        assert!(!r.ok, "{what}: tampering not detected");
        assert_eq!(r.broken_at, Some(at), "{what}: {r:?}");
        assert!(r.reason.is_some());
        reset().await;
    }
}
