//! RedisCache against a real Redis (`scripts/services.sh` starts one on
//! 127.0.0.1:6379; `ENGRAM_TEST_REDIS_URL` overrides), and cache coherence
//! of two engines ("nodes") that share one store and one Redis, with the
//! real MiniLM model (`ENGRAM_MODEL_DIR`).

use engram_core::requests::{Created, MemoryInput, SearchMode, SearchRequest};
use engram_core::{Backends, Cache, Engine, EngineConfig, Inserted, Principal, Role, StoreQueue};
use engram_embed::LocalEmbedder;
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use engram_redis::{RedisCache, RedisError, RedisOptions};
use engram_sqlite::SqliteStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn redis_url() -> String {
    std::env::var("ENGRAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test run uses.
fn fresh_prefix() -> String {
    format!("engram-test:{}:", uuid::Uuid::now_v7().simple())
}

async fn connect(prefix: &str) -> RedisCache {
    let url = redis_url();
    RedisCache::connect(&url, prefix).await.unwrap_or_else(|e| {
        panic!("Redis at {url} is not reachable ({e}); run scripts/services.sh")
    })
}

#[tokio::test]
async fn values_round_trip_and_expire() {
    let c = connect(&fresh_prefix()).await;
    assert_eq!(c.get("a").await.unwrap(), None);
    let bytes: Vec<u8> = (0..=255).collect();
    c.put("a", &bytes, Duration::from_secs(60)).await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), Some(bytes));
    c.put("short", b"x", Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(c.get("short").await.unwrap().as_deref(), Some(&b"x"[..]));
    c.put("zero", b"x", Duration::ZERO).await.unwrap();
    assert_eq!(
        c.get("zero").await.unwrap(),
        None,
        "a zero TTL stores nothing"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.get("short").await.unwrap(), None, "expired");
    assert!(c.get("a").await.unwrap().is_some());
    // Another prefix is another cache.
    let other = connect(&fresh_prefix()).await;
    assert_eq!(other.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn generations_are_shared_by_every_node() {
    let prefix = fresh_prefix();
    let node1 = connect(&prefix).await;
    let node2 = connect(&prefix).await;
    assert_eq!(node1.generation("acme").await.unwrap(), 0);
    assert_eq!(node1.bump("acme").await.unwrap(), 1);
    assert_eq!(node2.generation("acme").await.unwrap(), 1);
    assert_eq!(node2.bump("acme").await.unwrap(), 2);
    assert_eq!(node1.generation("acme").await.unwrap(), 2);
    assert_eq!(node1.generation("globex").await.unwrap(), 0);
    // Concurrent bumps from both nodes are all counted.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 {
            node1.clone()
        } else {
            node2.clone()
        };
        tasks.push(tokio::spawn(async move { c.bump("acme").await.unwrap() }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (3..=22).collect::<Vec<u64>>());
    assert_eq!(node2.generation("acme").await.unwrap(), 22);
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_clearly() {
    // Nothing listens here: refused at once, or after the bounded retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = RedisCache::connect(&format!("redis://127.0.0.1:{port}"), "x:")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            e,
            RedisError::Connect { .. } | RedisError::ConnectTimeout { .. }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    // A server that accepts but never answers: the connect timeout decides.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let started = Instant::now();
    let e = RedisCache::connect_with(
        &format!("redis://:hunter2@{addr}"),
        "x:",
        RedisOptions {
            connect_timeout: Duration::from_secs(2),
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("cannot connect to Redis"), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    let core: engram_core::Error = e.into();
    assert!(
        matches!(core, engram_core::Error::Unavailable { what: "redis", .. }),
        "{core:?}"
    );
    hold.abort();
}

/// The shared cache, counting result hits so a test can tell a cached
/// ranking from a fresh one.
struct Counting {
    inner: RedisCache,
    result_hits: AtomicUsize,
}

#[async_trait::async_trait]
impl Cache for Counting {
    async fn get(&self, key: &str) -> engram_core::Result<Option<Vec<u8>>> {
        let v = self.inner.get(key).await?;
        if v.is_some() && key.starts_with("res:") {
            self.result_hits.fetch_add(1, Ordering::SeqCst);
        }
        Ok(v)
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> engram_core::Result<()> {
        self.inner.put(key, value, ttl).await
    }
    async fn generation(&self, tenant: &str) -> engram_core::Result<u64> {
        self.inner.generation(tenant).await
    }
    async fn bump(&self, tenant: &str) -> engram_core::Result<u64> {
        self.inner.bump(tenant).await
    }
}

struct Node {
    engine: Arc<Engine>,
    cache: Arc<Counting>,
    _stop: watch::Sender<bool>,
}

fn model() -> Arc<LocalEmbedder> {
    let dir = std::env::var("ENGRAM_MODEL_DIR").expect(
        "ENGRAM_MODEL_DIR must point at the all-MiniLM-L6-v2 folder (scripts/fetch-model.sh)",
    );
    Arc::new(LocalEmbedder::load(std::path::Path::new(&dir)).expect("loading the model"))
}

async fn node(
    store: Arc<SqliteStore>,
    model: Arc<LocalEmbedder>,
    dir: &std::path::Path,
    prefix: &str,
) -> Node {
    let cfg = EngineConfig {
        // Long enough that only an invalidation can make a ranking fresh.
        result_cache_ttl: Duration::from_secs(600),
        ..EngineConfig::default()
    };
    let cache = Arc::new(Counting {
        inner: connect(prefix).await,
        result_hits: AtomicUsize::new(0),
    });
    let backends = Backends {
        next: None,
        queue: Arc::new(StoreQueue::new(store.clone(), cfg.job_lease, cfg.retry)),
        store,
        vectors: Arc::new(
            UsearchIndex::open(&dir.join("v"), 384, VectorOptions::default()).unwrap(),
        ),
        keywords: Arc::new(
            TantivyIndex::open(
                &dir.join("k"),
                &engram_core::context::Recipe::default().id(),
            )
            .unwrap(),
        ),
        embedder: model,
        cache: cache.clone(),
        llm: None,
    };
    let engine = Engine::open(backends, cfg).await.unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(engine.clone().run_indexer(rx.clone()));
    tokio::spawn(engine.worker().run(rx));
    Node {
        engine,
        cache,
        _stop: stop,
    }
}

fn search(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        namespaces: Vec::new(),
        filter: None,
        k: Some(5),
        mode: SearchMode::Hybrid,
        ..Default::default()
    }
}

fn memory(text: &str) -> MemoryInput {
    serde_json::from_value(serde_json::json!({ "text": text })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_redis_never_serve_stale_contents() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("engram.db"))
            .await
            .unwrap(),
    );
    let model = model();
    let prefix = fresh_prefix();
    let a = node(store.clone(), model.clone(), &dir.path().join("a"), &prefix).await;
    let b = node(store, model, &dir.path().join("b"), &prefix).await;
    let p = Principal::new("acme", "test", Role::Admin);
    let wait = |n: &Node, ids: Vec<uuid::Uuid>| {
        let e = n.engine.clone();
        let p = p.clone();
        async move {
            assert!(e
                .wait_searchable(&ids, &p, Duration::from_secs(60))
                .await
                .unwrap());
        }
    };
    let ids = |created: Vec<(Created, Inserted)>| {
        created.into_iter().map(|(c, _)| c.id).collect::<Vec<_>>()
    };

    let first = ids(a
        .engine
        .create(
            &p,
            "ops",
            vec![memory("Deploys go out every Friday afternoon")],
        )
        .await
        .unwrap());
    wait(&a, first.clone()).await;
    wait(&b, first.clone()).await;

    // Node B ranks and caches; node A is served B's ranking.
    let q = "when do we deploy?";
    let hits = b.engine.search(&p, search(q)).await.unwrap().hits;
    assert_eq!(hits[0].id, first[0]);
    assert_eq!(b.cache.result_hits.load(Ordering::SeqCst), 0);
    let hits = a.engine.search(&p, search(q)).await.unwrap().hits;
    assert_eq!(hits[0].id, first[0]);
    assert_eq!(
        a.cache.result_hits.load(Ordering::SeqCst),
        1,
        "A used B's ranking"
    );
    let gen_before = a.cache.generation("acme").await.unwrap();

    // Deleted through A: gone at once from searches on both nodes.
    a.engine.delete(&p, first[0], false).await.unwrap();
    assert!(a.cache.generation("acme").await.unwrap() > gen_before);
    for n in [&a, &b] {
        let hits = n.engine.search(&p, search(q)).await.unwrap().hits;
        assert!(hits.iter().all(|h| h.id != first[0]), "{hits:?}");
    }

    // Created through A after rankings were cached: once searchable on a
    // node, that node's searches find it (its indexer bumped the generation).
    let second = ids(a
        .engine
        .create(
            &p,
            "ops",
            vec![memory("We deploy to production on Tuesdays now")],
        )
        .await
        .unwrap());
    let cached_before = b.engine.search(&p, search(q)).await.unwrap().hits;
    assert!(cached_before.iter().all(|h| h.id != first[0]));
    wait(&a, second.clone()).await;
    wait(&b, second.clone()).await;
    for n in [&a, &b] {
        let hits = n.engine.search(&p, search(q)).await.unwrap().hits;
        assert_eq!(
            hits.first().map(|h| h.id),
            Some(second[0]),
            "the new memory is found: {hits:?}"
        );
    }

    // Restored through B: back in both nodes' rankings once re-indexed.
    b.engine.restore(&p, first[0]).await.unwrap();
    wait(&a, first.clone()).await;
    wait(&b, first.clone()).await;
    for n in [&a, &b] {
        let hits = n.engine.search(&p, search(q)).await.unwrap().hits;
        assert!(hits.iter().any(|h| h.id == first[0]), "{hits:?}");
    }
}
