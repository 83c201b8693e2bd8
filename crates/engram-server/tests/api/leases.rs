//! Job leases under a slow embedder: a worker still embedding renews its
//! jobs' leases, so a second worker never picks them up and embeds them again.

use super::*;
use std::sync::Mutex;

/// FAILURE INJECTION ONLY: the real model, slowed down (a loaded GPU box, a
/// remote embedder queueing requests), recording every text it is given.
struct SlowEmbedder {
    inner: Arc<LocalEmbedder>,
    delay: Duration,
    seen: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Embedder for SlowEmbedder {
    fn model(&self) -> &ModelInfo {
        self.inner.model()
    }
    async fn embed(&self, texts: &[String]) -> engram_core::Result<Vec<Vec<f32>>> {
        self.seen.lock().unwrap().extend(texts.iter().cloned());
        tokio::time::sleep(self.delay).await;
        self.inner.embed(texts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_batch_keeps_its_lease_and_is_embedded_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("engram.db"))
            .await
            .unwrap(),
    );
    let embedder = Arc::new(SlowEmbedder {
        inner: model(),
        // Five leases long: without renewal the other worker claims the job
        // (it polls every second) well before the first one is done.
        delay: Duration::from_millis(3000),
        seen: Mutex::new(Vec::new()),
    });
    let cfg = EngineConfig {
        job_lease: Duration::from_millis(600),
        ..EngineConfig::default()
    };
    let backends = Backends {
        next: None,
        queue: Arc::new(StoreQueue::new(store.clone(), cfg.job_lease, cfg.retry)),
        store,
        vectors: Arc::new(
            UsearchIndex::open(&dir.path().join("v"), 384, VectorOptions::default()).unwrap(),
        ),
        keywords: Arc::new(
            TantivyIndex::open(
                &dir.path().join("k"),
                &engram_core::context::Recipe::default().id(),
            )
            .unwrap(),
        ),
        embedder: embedder.clone(),
        cache: Arc::new(MemoryCache::new(16)),
        llm: None,
    };
    let engine = Engine::open(backends, cfg).await.unwrap();
    let (_stop, rx) = watch::channel(false);
    tokio::spawn(engine.clone().run_indexer(rx.clone()));
    tokio::spawn(engine.worker().run(rx.clone()));
    tokio::spawn(engine.worker().run(rx));

    let p = Principal::new("acme", "test", Role::Admin);
    let input =
        serde_json::from_value(json!({"text": "the slow batch of the night shift"})).unwrap();
    let created = engine.create(&p, "ns", vec![input]).await.unwrap();
    let id = created[0].0.id;
    assert!(
        engine
            .wait_searchable(&[id], &p, Duration::from_secs(30))
            .await
            .unwrap(),
        "never embedded"
    );
    // Give a second worker every chance to have claimed it meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = embedder.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec!["the slow batch of the night shift".to_string()],
        "embedded more than once"
    );
    let jobs = engine.jobs(&p, None, None, 10).await.unwrap();
    assert!(jobs.is_empty(), "{jobs:?}");
}
