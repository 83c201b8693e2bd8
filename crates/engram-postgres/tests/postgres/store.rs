//! PgStore against a real PostgreSQL (with pgvector): the store conformance
//! suite plus what only a shared, multi-node database can get wrong.
//!
//! The server comes from `ENGRAM_TEST_PG_URL` (default
//! `postgres://engram@127.0.0.1:55432/engram`, what `scripts/services.sh`
//! starts). Every test creates a database of its own (the role needs
//! CREATEDB; the `vector` extension must be in `template1`) and drops it at
//! the end, so tests run in parallel without seeing each other.

use chrono::{DateTime, TimeDelta, Utc};
use engram_core::audit::{AuditCtx, AuditQuery, Verifier};
use engram_core::conformance::{self, new_memory, now, Healthy};
use engram_core::Lifecycle;
use engram_core::{
    ChangeOp, ClaimedJob, Error, JobFailure, Key, MemoryPatch, NewMemory, RetryPolicy, Store,
};
use engram_postgres::{PgOptions, PgStore};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://engram@127.0.0.1:55432/engram";

fn admin_url() -> String {
    std::env::var("ENGRAM_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn admin_options() -> PgConnectOptions {
    let url = admin_url();
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("ENGRAM_TEST_PG_URL {url:?} is not a postgres URL: {e}"))
}

async fn admin() -> sqlx::PgConnection {
    let url = admin_url();
    admin_options().connect().await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is unreachable ({e}). Start the test services with \
             `scripts/services.sh` (or point ENGRAM_TEST_PG_URL at a PostgreSQL 17 with pgvector)."
        )
    })
}

/// A database of this test's own.
struct TestDb {
    name: String,
    options: PgConnectOptions,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = format!("engram_test_{}", Uuid::now_v7().simple());
        let mut conn = admin().await;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        conn.close().await.ok();
        TestDb {
            options: admin_options().database(&name),
            name,
        }
    }

    /// A store (one "node") on this database, not migrated.
    async fn connect(&self, opts: PgOptions) -> PgStore {
        PgStore::connect_with(self.options.clone(), opts)
            .await
            .expect("connect")
    }

    /// A migrated store.
    async fn store(&self) -> PgStore {
        let store = self.connect(PgOptions::default()).await;
        store.migrate().await.expect("migrate");
        store
    }

    async fn drop(self, stores: &[&PgStore]) {
        for s in stores {
            s.close().await;
        }
        let mut conn = admin().await;
        // An autovacuum worker (a superuser process the test role may not
        // terminate) can hold the database for a moment: retry, at worst leave it.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        for attempt in 1..=40 {
            match conn.execute(sql.as_str()).await {
                Ok(_) => break,
                Err(e) if attempt == 40 => eprintln!("leaving {} behind: {e}", self.name),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
        conn.close().await.ok();
    }
}

fn ctx() -> AuditCtx {
    conformance::audit()
}

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Unavailable { .. }))
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let db = TestDb::new().await;
    let store = db.store().await;
    conformance::run_all(Arc::new(store.clone())).await;
    db.drop(&[&store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_on_a_fresh_database_both_succeed() {
    let db = TestDb::new().await;
    let a = db.connect(PgOptions::default()).await;
    let b = db.connect(PgOptions::default()).await;
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first node migrates");
    rb.expect("second node migrates");
    a.migrate().await.expect("migrating again is a no-op");

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(a.pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files, "every migration applied once");
    // The migration connections are gone: no advisory lock is left behind.
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(locks, 0, "advisory locks released");
    a.ping().await.expect("ping");
    assert_eq!(a.stats(None).await.unwrap().max_seq, 0);

    // Options reach the sessions.
    let c = db
        .connect(PgOptions {
            statement_timeout: Some(Duration::from_secs(5)),
            ..PgOptions::default()
        })
        .await;
    let (timeout, app): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('application_name')",
    )
    .fetch_one(c.pool())
    .await
    .unwrap();
    assert_eq!((timeout.as_str(), app.as_str()), ("5s", "engram"));
    db.drop(&[&a, &b, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_hand_out_the_same_job() {
    let db = TestDb::new().await;
    let a = db.store().await;
    let b = db.store().await;
    let t = conformance::tenant("claims");
    let items: Vec<NewMemory> = (0..200)
        .map(|i| new_memory(&t, "ns", &format!("job {i}")))
        .collect();
    a.insert(items, &ctx()).await.expect("insert");
    let all: HashSet<u64> = a
        .list_jobs(&t, None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(all.len(), 200);

    let at = now();
    let total = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let claimer = |store: PgStore, total: Arc<AtomicUsize>, start: Arc<tokio::sync::Barrier>| async move {
        let mut mine = Vec::new();
        start.wait().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while total.load(Ordering::SeqCst) < 200 && tokio::time::Instant::now() < deadline {
            let got = store
                .claim_jobs(3, Duration::from_secs(600), at)
                .await
                .expect("claim")
                .healthy();
            total.fetch_add(got.len(), Ordering::SeqCst);
            mine.extend(got.into_iter().map(|j| j.job_id));
        }
        mine
    };
    let (ja, jb) = tokio::join!(
        tokio::spawn(claimer(a.clone(), total.clone(), start.clone())),
        tokio::spawn(claimer(b.clone(), total.clone(), start.clone()))
    );
    let (ja, jb) = (ja.unwrap(), jb.unwrap());
    let sa: HashSet<u64> = ja.iter().copied().collect();
    let sb: HashSet<u64> = jb.iter().copied().collect();
    assert_eq!(sa.len(), ja.len(), "no job twice to one claimer");
    assert_eq!(sb.len(), jb.len(), "no job twice to one claimer");
    assert!(sa.is_disjoint(&sb), "a job was handed to both claimers");
    assert_eq!(&sa | &sb, all, "every job claimed");
    assert!(!sa.is_empty() && !sb.is_empty(), "both claimers got work");
    // Leased: nothing is runnable before the lease ends.
    assert!(a
        .claim_jobs(1000, Duration::ZERO, at + TimeDelta::seconds(1))
        .await
        .unwrap()
        .healthy()
        .is_empty());

    // The same race through claim_jobs_by_id (messages of an external queue
    // delivered to two workers): every job goes to exactly one of them.
    let later = at + TimeDelta::seconds(601); // every lease above has expired
    let ids: Vec<u64> = all.iter().copied().collect();
    let by_id = |store: PgStore, ids: Vec<u64>| async move {
        let mut mine = Vec::new();
        for chunk in ids.chunks(10) {
            let got: Vec<ClaimedJob> = store
                .claim_jobs_by_id(chunk, Duration::from_secs(600), later)
                .await
                .expect("claim by id")
                .healthy();
            mine.extend(got.into_iter().map(|j| j.job_id));
        }
        mine
    };
    let mut reversed = ids.clone();
    reversed.reverse();
    let (ra, rb) = tokio::join!(
        tokio::spawn(by_id(a.clone(), ids.clone())),
        tokio::spawn(by_id(b.clone(), reversed))
    );
    let ra: HashSet<u64> = ra.unwrap().into_iter().collect();
    let rb: HashSet<u64> = rb.unwrap().into_iter().collect();
    assert!(ra.is_disjoint(&rb), "a job was claimed by id twice");
    assert_eq!(&ra | &rb, all, "every announced job claimed once");
    db.drop(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_the_same_memory_create_it_once() {
    let db = TestDb::new().await;
    let a = db.store().await;
    let b = db.store().await;
    let t = conformance::tenant("race");
    let c = ctx();

    // Same text from two nodes at once.
    for i in 0..40 {
        let text = format!("raced text {i}");
        let ma = new_memory(&t, "ns", &text);
        let mb = new_memory(&t, "ns", &text);
        let (ra, rb) = tokio::join!(
            a.insert(vec![ma.clone()], &c),
            b.insert(vec![mb.clone()], &c)
        );
        let (ra, rb) = (
            ra.expect("insert on a").remove(0),
            rb.expect("insert on b").remove(0),
        );
        assert!(
            ra.created ^ rb.created,
            "exactly one creates: {ra:?} {rb:?}"
        );
        assert_eq!((ra.id, ra.key, ra.seq), (rb.id, rb.key, rb.seq));
    }

    // Same client id, different texts.
    for i in 0..20 {
        let ma = NewMemory {
            client_id: Some(format!("client-{i}")),
            ..new_memory(&t, "ns", &format!("client text a {i}"))
        };
        let mb = NewMemory {
            client_id: Some(format!("client-{i}")),
            ..new_memory(&t, "ns", &format!("client text b {i}"))
        };
        let (ra, rb) = tokio::join!(a.insert(vec![ma], &c), b.insert(vec![mb], &c));
        let (ra, rb) = (ra.unwrap().remove(0), rb.unwrap().remove(0));
        assert!(ra.created ^ rb.created);
        assert_eq!(ra.id, rb.id);
    }

    // Overlapping batches in opposite orders.
    for i in 0..20 {
        let texts: Vec<String> = (0..5).map(|k| format!("batch {i} item {k}")).collect();
        let fwd: Vec<NewMemory> = texts.iter().map(|x| new_memory(&t, "ns", x)).collect();
        let rev: Vec<NewMemory> = texts
            .iter()
            .rev()
            .map(|x| new_memory(&t, "ns", x))
            .collect();
        let (ra, rb) = tokio::join!(a.insert(fwd, &c), b.insert(rev, &c));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        for (x, y) in ra.iter().zip(rb.iter().rev()) {
            assert_eq!(x.id, y.id, "both see one memory per text");
            assert!(x.created ^ y.created);
        }
    }

    let stats = a.stats(Some(&t)).await.unwrap();
    assert_eq!(stats.memories, 40 + 20 + 100);
    assert_eq!(stats.jobs_queued, 160, "one job per created memory");
    // One create event per memory, in one unbroken chain.
    let events = a
        .audit_events(
            &t,
            &AuditQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 160);
    let mut v = Verifier::new();
    assert!(v.feed(&events));
    let (n, hash) = a.audit_head(&t).await.unwrap().expect("head");
    v.expect_head(n, &hash);
    assert!(v.report().ok);
    db.drop(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_never_skips_a_commit_under_concurrent_writers() {
    let db = TestDb::new().await;
    let nodes = [db.store().await, db.store().await];
    const WRITERS: usize = 8;
    const ROUNDS: usize = 25;
    // A tenant per writer: writes of one tenant queue on its audit chain
    // head, so only the seq row orders writers of different tenants.
    let tenants: Vec<String> = (0..WRITERS)
        .map(|w| conformance::tenant(&format!("feed{w}")))
        .collect();

    // Phase 1: inserts only, from both nodes, while a follower tails the feed.
    let done = Arc::new(AtomicBool::new(false));
    let follower = follow(nodes[0].clone(), 0, done.clone());
    let mut tasks = Vec::new();
    for (w, t) in tenants.iter().enumerate() {
        let store = nodes[w % 2].clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for r in 0..ROUNDS {
                let batch: Vec<NewMemory> = (0..1 + r % 3)
                    .map(|k| new_memory(&t, "ns", &format!("r{r} k{k}")))
                    .collect();
                for i in store.insert(batch, &ctx()).await.expect("insert") {
                    assert!(i.created);
                    ids.push(i.id);
                }
            }
            ids
        }));
    }
    let mut ids: Vec<Vec<Uuid>> = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let inserted: usize = ids.iter().map(Vec::len).sum();
    done.store(true, Ordering::SeqCst);
    let (mut seen, order) = follower.await.unwrap();
    // Rows never change seq in this phase, so a follower that moved past a
    // seq whose transaction committed later would miss it for good.
    assert_eq!(
        order,
        (1..=inserted as u64).collect::<Vec<_>>(),
        "the follower saw every insert, in seq order"
    );
    // And every seq from 1 up is one committed row.
    let feed = nodes[1].changes_since(0, 100_000).await.unwrap();
    let seqs: Vec<u64> = feed.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, order, "seqs are 1..=n without holes");

    // Phase 2: updates and deletes from both nodes; each writer also works
    // on its neighbour's memories, racing with it.
    let done = Arc::new(AtomicBool::new(false));
    let follower = follow(nodes[1].clone(), inserted as u64, done.clone());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = nodes[w % 2].clone();
        let next = (w + 1) % WRITERS;
        let mut work: Vec<(String, Uuid)> = ids[w]
            .iter()
            .take(40)
            .map(|id| (tenants[w].clone(), *id))
            .collect();
        work.extend(
            ids[next]
                .iter()
                .take(10)
                .map(|id| (tenants[next].clone(), *id)),
        );
        tasks.push(tokio::spawn(async move {
            for (i, (t, id)) in work.into_iter().enumerate() {
                if i % 7 == 6 {
                    let _ = store
                        .soft_delete(&t, id, now(), &ctx())
                        .await
                        .expect("delete");
                } else {
                    let patch = MemoryPatch {
                        metadata: Some(json!({"w": w, "i": i}).as_object().unwrap().clone()),
                        ..Default::default()
                    };
                    let _ = store
                        .update(&t, id, patch, now(), &ctx())
                        .await
                        .expect("update");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (seen2, order) = follower.await.unwrap();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    seen.extend(seen2);

    // The follower saw the final state of every memory: nothing it passed
    // was committed later with a smaller seq.
    for (t, ids) in tenants.iter().zip(&ids) {
        for id in ids {
            let m = nodes[0].get(t, *id).await.unwrap().expect("memory");
            assert_eq!(
                seen.get(&m.key),
                Some(&m.seq),
                "the follower missed the last change of memory {}",
                m.key
            );
        }
    }
    let stats = nodes[0].stats(None).await.unwrap();
    let counter: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'seq'")
        .fetch_one(nodes[0].pool())
        .await
        .unwrap();
    assert_eq!(
        stats.max_seq, counter as u64,
        "the counter is the latest seq"
    );
    db.drop(&[&nodes[0], &nodes[1]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_not_an_internal_error() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = PgOptions {
        acquire_timeout: Duration::from_millis(500),
        ..PgOptions::default()
    };
    let url = format!("postgres://engram@127.0.0.1:{closed}/engram");
    let err = PgStore::connect(&url, opts.clone())
        .await
        .expect_err("nothing listens there");
    assert!(err.is_transient(), "{err}");
    let err = Error::from(err);
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    let lazy = PgStore::connect_lazy(&url, opts.clone()).expect("lazy");
    assert!(is_unavailable(&lazy.ping().await));
    assert!(is_unavailable(&lazy.get("t", Uuid::now_v7()).await));
    assert!(is_unavailable(
        &lazy.insert(vec![new_memory("t", "ns", "x")], &ctx()).await
    ));
    assert!(is_unavailable(
        &lazy.claim_jobs(1, Duration::ZERO, now()).await
    ));

    // A server that goes away under a working store: a proxy in front of
    // the real one, then stopped.
    let db = TestDb::new().await;
    let target = format!("{}:{}", db.options.get_host(), db.options.get_port());
    let proxy = Proxy::start(target).await;
    let store = PgStore::connect_with(db.options.clone().host("127.0.0.1").port(proxy.port), opts)
        .await
        .expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    let t = conformance::tenant("down");
    let m = new_memory(&t, "ns", "before the outage");
    store.insert(vec![m.clone()], &ctx()).await.expect("insert");
    store.ping().await.expect("ping");

    proxy.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(is_unavailable(&store.ping().await));
    assert!(is_unavailable(&store.get(&t, m.id).await));
    assert!(is_unavailable(
        &store
            .insert(vec![new_memory(&t, "ns", "during")], &ctx())
            .await
    ));
    let r = store.stats(Some(&t)).await;
    assert!(is_unavailable(&r), "{r:?}");
    db.drop(&[&store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_kept_to_the_microsecond_like_sqlite() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let t = conformance::tenant("times");
    let cases = [
        "1999-12-31T23:59:59.999999500Z", // before PostgreSQL's epoch
        "2024-02-29T12:00:00.123456789Z",
    ];
    for (i, c) in cases.iter().enumerate() {
        let at: DateTime<Utc> = c.parse().unwrap();
        let m = NewMemory {
            created_at: at,
            expires_at: Some(at + TimeDelta::days(1)),
            ..new_memory(&t, "ns", &format!("time {i}"))
        };
        store.insert(vec![m.clone()], &ctx()).await.unwrap();
        let got = store.get(&t, m.id).await.unwrap().unwrap();
        let micros =
            |x: DateTime<Utc>| DateTime::from_timestamp_micros(x.timestamp_micros()).unwrap();
        assert_eq!(got.created_at, micros(at), "{c}");
        assert_eq!(got.updated_at, micros(at));
        assert_eq!(got.expires_at, Some(micros(at + TimeDelta::days(1))));
    }
    db.drop(&[&store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_postgres_cannot_store_are_invalid_input() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let t = conformance::tenant("nul");
    let r = store
        .insert(vec![new_memory(&t, "ns", "nul \0 inside")], &ctx())
        .await;
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    let mut m = new_memory(&t, "ns", "nul in metadata");
    m.metadata = json!({"k": "a\u{0}b"}).as_object().unwrap().clone();
    let r = store.insert(vec![m], &ctx()).await;
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    // Nothing half-written.
    assert_eq!(store.stats(Some(&t)).await.unwrap().memories, 0);
    assert!(store.audit_head(&t).await.unwrap().is_none());
    db.drop(&[&store]).await;
}

/// A row that cannot be decoded (a hand edit past the CHECK constraints)
/// fails only reads of that row: scans, the change feed, claims and the
/// attribute loader return it as `Corrupt` in its place and go on; values
/// past the constraints are refused first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_come_back_as_corrupt_in_place() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let (t, bad, good) = conformance::memories_to_corrupt(&store).await;
    let mut conn = PgConnection::connect_with(&db.options).await.unwrap();
    let corrupt = "UPDATE memories SET kind = 'bogus', metadata = '[1]', state = 'ready', \
                   embedding = '[1,0,0]' WHERE id = $1";
    let refused = sqlx::query(corrupt)
        .bind(bad.id)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("check constraint"),
        "{refused}"
    );
    conn.execute(
        "ALTER TABLE memories DROP CONSTRAINT memories_kind, DROP CONSTRAINT memories_json",
    )
    .await
    .unwrap();
    sqlx::query(corrupt)
        .bind(bad.id)
        .execute(&mut conn)
        .await
        .unwrap();
    // A claimed job's row that cannot be decoded: attempts below zero.
    sqlx::query("UPDATE jobs SET attempts = -1 WHERE memory_key = $1")
        .bind(bad.key as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    conformance::corrupt_row_comes_back_in_place(&store, &t, &bad, &good).await;
    db.drop(&[&store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_lists_unannounced_jobs_until_they_are_published() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let t = conformance::tenant("outbox");
    let items: Vec<NewMemory> = (0..3)
        .map(|i| new_memory(&t, "ns", &format!("outbox {i}")))
        .collect();
    store.insert(items, &ctx()).await.unwrap();
    let t0 = now();
    let ids: Vec<u64> = store
        .unpublished_jobs(t0, t0 - TimeDelta::seconds(60), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, at)| {
            assert_eq!(at, None);
            id
        })
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");

    store.mark_published(&ids, t0).await.unwrap();
    assert!(store
        .unpublished_jobs(t0, t0 - TimeDelta::seconds(60), 100)
        .await
        .unwrap()
        .is_empty());
    // Announced long enough ago: announce again.
    let later = t0 + TimeDelta::seconds(120);
    let again = store
        .unpublished_jobs(later, later - TimeDelta::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(
        again,
        ids.iter().map(|&id| (id, Some(t0))).collect::<Vec<_>>()
    );

    // A failure reschedules: unannounced again once due.
    let claimed = store
        .claim_jobs_by_id(&ids[..1], Duration::from_secs(30), t0)
        .await
        .unwrap()
        .healthy();
    assert_eq!(claimed.len(), 1);
    let policy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    store
        .fail_jobs(
            vec![JobFailure {
                job_id: ids[0],
                error: "boom".into(),
            }],
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_secs(10),
                ..policy
            },
            t0,
        )
        .await
        .unwrap();
    let due = t0 + TimeDelta::seconds(11);
    let listed = store
        .unpublished_jobs(due, t0 - TimeDelta::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(listed, vec![(ids[0], None)]);

    // Dead, then retried: unannounced again.
    store
        .claim_jobs_by_id(&ids[..1], Duration::from_secs(30), due)
        .await
        .unwrap()
        .healthy();
    store
        .fail_jobs(
            vec![JobFailure {
                job_id: ids[0],
                error: "boom".into(),
            }],
            policy,
            due,
        )
        .await
        .unwrap();
    store.mark_published(&ids[..1], due).await.unwrap();
    assert!(
        store
            .claim_jobs_by_id(&ids[..1], Duration::ZERO, due)
            .await
            .unwrap()
            .healthy()
            .is_empty(),
        "dead jobs are not claimed by id"
    );
    store
        .retry_job(&t, ids[0], due, &ctx())
        .await
        .unwrap()
        .expect("dead job retried");
    let listed = store
        .unpublished_jobs(due, t0 - TimeDelta::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(listed, vec![(ids[0], None)]);

    // A deleted memory's job is dropped, not claimed.
    let m = store.list_jobs(&t, None, None, 100).await.unwrap();
    let victim = m.iter().find(|j| j.id == ids[1]).unwrap().memory_id;
    store.soft_delete(&t, victim, now(), &ctx()).await.unwrap();
    assert!(store
        .claim_jobs_by_id(&ids[1..2], Duration::ZERO, now())
        .await
        .unwrap()
        .healthy()
        .is_empty());
    db.drop(&[&store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_round_trip_through_pgvector() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let t = conformance::tenant("vectors");
    let texts = ["vector one", "vector two", "vector three"];
    let items: Vec<NewMemory> = texts.iter().map(|x| new_memory(&t, "ns", x)).collect();
    store.insert(items.clone(), &ctx()).await.unwrap();
    let jobs = store
        .claim_jobs(100, Duration::ZERO, now())
        .await
        .unwrap()
        .healthy();
    assert_eq!(jobs.len(), 3);
    let vector_of = |i: usize| -> Vec<f32> {
        (0..384)
            .map(|k| ((k * (i + 1)) as f32 * 0.37).sin() / 7.0)
            .collect()
    };
    let model = engram_core::ModelInfo {
        name: "m".into(),
        version: "1".into(),
        dims: 384,
    };
    let embedded = |j: &ClaimedJob, vector: Option<Vec<f32>>| engram_core::Embedded {
        job_id: j.job_id,
        key: j.key,
        checksum: j.checksum.clone(),
        vector,
        model: model.clone(),
        also: None,
    };
    let index = |j: &ClaimedJob| texts.iter().position(|x| *x == j.text).unwrap();
    // One batch: every memory gets its own vector; the first one twice, the
    // second time as "already current" (no vector), which keeps the first.
    let mut batch: Vec<engram_core::Embedded> = jobs
        .iter()
        .map(|j| embedded(j, Some(vector_of(index(j)))))
        .collect();
    batch.push(embedded(&jobs[0], None));
    store.complete_jobs(batch, now()).await.unwrap();

    let feed = store.changes_since(0, 10).await.unwrap();
    assert_eq!(feed.len(), 3);
    let by_key: HashMap<Key, &ChangeOp> = feed.iter().map(|c| (c.key, &c.op)).collect();
    for j in &jobs {
        match by_key[&j.key] {
            ChangeOp::Upsert(doc) => assert_eq!(doc.vector, vector_of(index(j)), "bit-exact f32s"),
            ChangeOp::Remove | ChangeOp::Corrupt(_) => panic!("ready memory must be an upsert"),
        }
    }
    let dims: Vec<i32> = sqlx::query_scalar("SELECT vector_dims(embedding) FROM memories")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(dims, vec![384; 3]);
    assert_eq!(store.stats(Some(&t)).await.unwrap().jobs_queued, 0);
    db.drop(&[&store]).await;
}

/// Several stores on one database: the audit chain of a tenant stays one
/// unbroken chain when nodes write to it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_audit_chain_per_tenant_across_nodes() {
    let db = TestDb::new().await;
    let nodes = [db.store().await, db.store().await, db.store().await];
    let t = conformance::tenant("chain");
    let mut tasks = Vec::new();
    for (w, store) in nodes.iter().enumerate() {
        let store = store.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let m = new_memory(&t, &format!("ns{}", i % 3), &format!("node {w} item {i}"));
                store.insert(vec![m.clone()], &ctx()).await.unwrap();
                store
                    .append_audit(
                        vec![engram_core::AuditEntry {
                            tenant: t.clone(),
                            action: engram_core::AuditAction::Read,
                            target: "search".into(),
                            details: json!({"ids": [m.id]}),
                        }],
                        &ctx(),
                    )
                    .await
                    .unwrap();
                if i % 4 == 0 {
                    store.soft_delete(&t, m.id, now(), &ctx()).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = nodes[0]
        .audit_events(
            &t,
            &AuditQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 3 * (20 + 20 + 5));
    let mut v = Verifier::new();
    assert!(v.feed(&events), "{:?}", v.clone().report());
    let (n, hash) = nodes[1].audit_head(&t).await.unwrap().unwrap();
    v.expect_head(n, &hash);
    assert!(v.report().ok);
    let per_action: HashMap<&str, usize> = events.iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e.action.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per_action["create"], 60);
    assert_eq!(per_action["read"], 60);
    assert_eq!(per_action["delete"], 15);
    db.drop(&[&nodes[0], &nodes[1], &nodes[2]]).await;
}

/// Tail the change feed from `pos` until `done` is set and the feed is
/// drained: the last seq seen per key, and every seq in the order seen.
fn follow(
    store: PgStore,
    mut pos: u64,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(BTreeMap<Key, u64>, Vec<u64>)> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<Key, u64> = BTreeMap::new();
        let mut order: Vec<u64> = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            let page = store.changes_since(pos, 50).await.expect("changes_since");
            for c in &page {
                assert!(c.seq > pos, "the feed moves forward");
                pos = c.seq;
                order.push(c.seq);
                seen.insert(c.key, c.seq);
            }
            if page.is_empty() {
                if finished {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        (seen, order)
    })
}

// ---------------------------------------------------------------------------

/// A TCP proxy that can be stopped: the listener and every connection go.
struct Proxy {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tracked = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(h);
            }
        });
        Proxy {
            port,
            accept,
            conns,
        }
    }

    fn stop(&self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
