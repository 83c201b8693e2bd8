//! Re-embedding to a new model without downtime: the old model's index
//! serves every search until the new one is complete, then the engine
//! switches query embedder and index together.

use super::*;
use engram_core::reembed::{NextModel, OpenIndex};
use engram_core::requests::SearchRequest;
use engram_core::VectorIndex;
use std::sync::atomic::AtomicUsize;

/// The "new model" of these tests: all-MiniLM-L6-v2 with its output
/// dimensions permuted. Searches within it are as good as the real model's,
/// but its vectors are unrelated to the original's, so a query embedded by
/// one model and compared with the other's vectors finds the wrong memories:
/// exactly the mistake a model switch must never make. While `failing` is
/// set it fails (FAILURE INJECTION: a target server that is not up yet).
struct PermutedEmbedder {
    inner: Arc<LocalEmbedder>,
    info: ModelInfo,
    failing: AtomicBool,
    calls: AtomicUsize,
}

impl PermutedEmbedder {
    fn new() -> Self {
        let inner = model();
        let info = ModelInfo {
            name: "all-MiniLM-L6-v2-permuted".into(),
            version: format!("{}-permuted", inner.model().version),
            dims: inner.model().dims,
        };
        PermutedEmbedder {
            inner,
            info,
            failing: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Embedder for PermutedEmbedder {
    fn model(&self) -> &ModelInfo {
        &self.info
    }
    async fn embed(&self, texts: &[String]) -> engram_core::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(engram_core::Error::unavailable(
                "embedder",
                "injected: the new model's server is not up",
            ));
        }
        let vs = self.inner.embed(texts).await?;
        let n = self.info.dims;
        // i -> (7i + 3) mod 384 is a bijection (7 is prime to 384).
        Ok(vs
            .into_iter()
            .map(|v| (0..n).map(|i| v[(7 * i + 3) % n]).collect())
            .collect())
    }
}

const TOPICS: [&str; 12] = [
    "The espresso machine in the kitchen needs descaling every month",
    "Our Kubernetes cluster autoscaler adds nodes when pods are pending",
    "Grandmother's apple pie recipe uses cinnamon and brown sugar",
    "The quarterly tax filing deadline for the company is April 15",
    "Migrating birds navigate using the Earth's magnetic field",
    "The violin was tuned a semitone lower for the baroque concert",
    "PostgreSQL vacuum reclaims space left by dead tuples",
    "The marathon route passes the old lighthouse at mile twenty",
    "Tomato seedlings should be hardened off before transplanting",
    "The customer asked for a refund because the parcel arrived damaged",
    "Saturn's rings are made mostly of water ice particles",
    "The team retrospective concluded that code reviews were too slow",
];

fn vectors_at(dir: &std::path::Path, name: &str) -> Arc<dyn VectorIndex> {
    Arc::new(UsearchIndex::open(&dir.join(name), 384, VectorOptions::default()).unwrap())
}

fn backends(
    dir: &std::path::Path,
    store: Arc<SqliteStore>,
    embedder: Arc<dyn Embedder>,
    vectors: &str,
    next: Option<NextModel>,
) -> Backends {
    let cfg = EngineConfig::default();
    Backends {
        next,
        queue: Arc::new(StoreQueue::new(store.clone(), cfg.job_lease, cfg.retry)),
        store,
        vectors: vectors_at(dir, vectors),
        keywords: Arc::new(
            TantivyIndex::open(
                &dir.join("k"),
                &engram_core::context::Recipe::default().id(),
            )
            .unwrap(),
        ),
        embedder,
        cache: Arc::new(MemoryCache::new(1024)),
        llm: None,
    }
}

fn cfg() -> EngineConfig {
    EngineConfig {
        model_check_interval: Duration::from_millis(100),
        // Searches must really run against the indexes, not a cached ranking.
        result_cache_ttl: Duration::ZERO,
        ..EngineConfig::default()
    }
}

/// `embedder` as the model to re-embed to, its index in `dir/name`.
fn next_model(dir: &std::path::Path, embedder: Arc<dyn Embedder>, name: &'static str) -> NextModel {
    let d = dir.to_path_buf();
    let open_index: OpenIndex = Arc::new(move || {
        let d = d.clone();
        Box::pin(async move { Ok(vectors_at(&d, name)) })
    });
    NextModel {
        embedder,
        open_index,
    }
}

/// Open an engine on these back-ends, replay the feed and start its
/// indexer and worker; stop them through the returned sender and handle.
async fn start(
    backends: Backends,
) -> (
    Arc<Engine>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let engine = Engine::open(backends, cfg()).await.unwrap();
    engine.catch_up().await.unwrap();
    let (stop, rx) = watch::channel(false);
    let indexer = tokio::spawn(engine.clone().run_indexer(rx.clone()));
    tokio::spawn(engine.worker().run(rx));
    (engine, stop, indexer)
}

/// Wait (at most a minute) until the engine serves `version`.
async fn until_switched(engine: &Engine, p: &Principal, version: &str) {
    let started = std::time::Instant::now();
    while engine.model().version != version {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no switch: {:?}",
            engine.stats(p).await.unwrap().reembed
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Add memories with these texts and wait until all of `ids` (extended by
/// the new ones) are searchable.
async fn add(engine: &Engine, p: &Principal, texts: &[&str], ids: &mut Vec<uuid::Uuid>) {
    for t in texts {
        let input = serde_json::from_value(json!({ "text": t })).unwrap();
        ids.push(engine.create(p, "ns", vec![input]).await.unwrap()[0].0.id);
    }
    assert!(engine
        .wait_searchable(ids, p, Duration::from_secs(60))
        .await
        .unwrap());
}

async fn top1(engine: &Engine, p: &Principal, query: &str) -> Option<uuid::Uuid> {
    let req: SearchRequest =
        serde_json::from_value(json!({"query": query, "mode": "vector", "k": 1})).unwrap();
    let r = engine.search(p, req).await.unwrap();
    r.hits.first().map(|h| h.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_takes_over_only_once_every_vector_has_moved() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = Arc::new(SqliteStore::open(&d.join("engram.db")).await.unwrap());
    let p = Principal::new("acme", "test", Role::Admin);
    let old: Arc<dyn Embedder> = model();
    let old_version = old.model().version.clone();

    // 1. A node on the old model with some memories.
    let engine = Engine::open(
        backends(d, store.clone(), old.clone(), "v-old", None),
        cfg(),
    )
    .await
    .unwrap();
    let (stop, rx) = watch::channel(false);
    let indexer = tokio::spawn(engine.clone().run_indexer(rx.clone()));
    tokio::spawn(engine.worker().run(rx));
    let mut ids = Vec::new();
    add(&engine, &p, &TOPICS[..8], &mut ids).await;
    stop.send(true).unwrap();
    indexer.await.unwrap();
    drop(engine);

    // 2. Restarted with the next model configured; its server fails at first.
    let new = Arc::new(PermutedEmbedder::new());
    let new_version = new.model().version.clone();
    let next = next_model(d, new.clone(), "v-new");
    let (engine, stop, indexer) =
        start(backends(d, store.clone(), old.clone(), "v-old", Some(next))).await;

    // Searches keep running the whole time; every one must find its memory.
    let wrong = Arc::new(AtomicUsize::new(0));
    let searched = Arc::new(AtomicUsize::new(0));
    let searcher = {
        let (engine, p, wrong, searched) =
            (engine.clone(), p.clone(), wrong.clone(), searched.clone());
        let ids = ids.clone();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !flag.load(Ordering::SeqCst) {
                let k = i % ids.len();
                if top1(&engine, &p, TOPICS[k]).await != Some(ids[k]) {
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
                searched.fetch_add(1, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        (done, task)
    };

    // New writes still become searchable while the new model is down.
    add(&engine, &p, &TOPICS[8..10], &mut ids).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(new.calls.load(Ordering::SeqCst) > 0, "the target was tried");
    assert_eq!(engine.model().version, old_version, "nothing moved yet");
    let stats = engine.stats(&p).await.unwrap();
    let r = stats.reembed.expect("a re-embedding runs");
    assert_eq!(r.target.version, new_version);
    assert_eq!((r.done, r.total), (0, 10));
    assert!(r.node_has_target);

    // 3. The new model comes up: back-fill, shadow index, switch.
    new.failing.store(false, Ordering::SeqCst);
    until_switched(&engine, &p, &new_version).await;
    // Writes after the switch are embedded by the new model.
    add(&engine, &p, &TOPICS[10..], &mut ids).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    searcher.0.store(true, Ordering::SeqCst);
    searcher.1.await.unwrap();
    assert!(
        searched.load(Ordering::SeqCst) > 20,
        "searches ran throughout"
    );
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "a search found the wrong memory"
    );

    for (k, id) in ids.iter().enumerate() {
        let m = engine.get(&p, *id).await.unwrap();
        assert_eq!(m.embedding_version.as_deref(), Some(new_version.as_str()));
        assert_eq!(
            top1(&engine, &p, TOPICS[k]).await,
            Some(*id),
            "{}",
            TOPICS[k]
        );
    }
    let stats = engine.stats(&p).await.unwrap();
    assert!(stats.reembed.is_none());
    assert_eq!(stats.model.version, new_version);
    assert_eq!(stats.vectors, TOPICS.len());
    stop.send(true).unwrap();
    indexer.await.unwrap();
    drop(engine);

    // 4. A node still configured with only the old model refuses to start.
    let err = Engine::open(
        backends(d, store.clone(), old.clone(), "v-old", None),
        cfg(),
    )
    .await
    .err()
    .expect("the old model no longer matches the store");
    assert!(err.to_string().contains("embedder.next"), "{err}");

    // 5. Restarted on the new model, its persisted index serves at once.
    let engine = Engine::open(
        backends(d, store.clone(), new.clone(), "v-new", None),
        cfg(),
    )
    .await
    .unwrap();
    assert_eq!(engine.catch_up().await.unwrap(), 0, "nothing to replay");
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(
            top1(&engine, &p, TOPICS[k]).await,
            Some(*id),
            "{}",
            TOPICS[k]
        );
    }
}

/// The vector score of the best hit for `query` in vector mode.
async fn best_vector_score(engine: &Engine, p: &Principal, query: &str) -> (uuid::Uuid, f32) {
    let req: SearchRequest =
        serde_json::from_value(json!({"query": query, "mode": "vector", "k": 1})).unwrap();
    let r = engine.search(p, req).await.unwrap();
    let h = r.hits.first().expect("a hit");
    (h.id, h.scores.vector.expect("a vector score"))
}

/// Changing what a message's vector is computed from (its recipe) is a model
/// change: the same weights with `recipe = "text"` are another model version,
/// re-embedded to through `[embedder.next]` while the old vectors serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_recipe_change_re_embeds_through_the_next_model() {
    use engram_core::context::{with_recipe, VectorRecipe};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = Arc::new(SqliteStore::open(&d.join("engram.db")).await.unwrap());
    let p = Principal::new("acme", "test", Role::Admin);
    let speaker: Arc<dyn Embedder> = model();
    assert!(
        Arc::ptr_eq(
            &with_recipe(speaker.clone(), VectorRecipe::Speaker),
            &speaker
        ),
        "the default recipe is the embedder itself"
    );
    let text = with_recipe(model(), VectorRecipe::Text);
    assert_eq!(text.recipe(), VectorRecipe::Text);
    assert_eq!(
        text.model().version,
        format!("{}+text", speaker.model().version)
    );

    // 1. Messages embedded as "speaker: text" (the default recipe).
    let (engine, stop, indexer) = start(backends(
        d,
        store.clone(),
        speaker.clone(),
        "v-speaker",
        None,
    ))
    .await;
    let said = &TOPICS[..6];
    let messages: Vec<_> = said
        .iter()
        .map(|t| json!({"speaker": "Ann", "text": t}))
        .collect();
    let req = serde_json::from_value(json!({"namespace": "ns", "messages": messages})).unwrap();
    let ids: Vec<uuid::Uuid> = engine
        .append_messages(&p, "s1", req)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert!(engine
        .wait_searchable(&ids, &p, Duration::from_secs(60))
        .await
        .unwrap());
    // The bare text is close to "Ann: <text>" but not the same input.
    let (id, score) = best_vector_score(&engine, &p, said[0]).await;
    assert_eq!(id, ids[0]);
    assert!(score < 0.99, "speaker recipe: cosine {score}");
    stop.send(true).unwrap();
    indexer.await.unwrap();
    drop(engine);

    // 2. The same model with the text recipe as the next one: back-fill,
    // shadow index, switch.
    let next = next_model(d, text.clone(), "v-text");
    let (engine, stop, indexer) = start(backends(
        d,
        store.clone(),
        speaker.clone(),
        "v-speaker",
        Some(next),
    ))
    .await;
    until_switched(&engine, &p, &text.model().version).await;
    // Every message's vector is now its bare text's: the text as a query
    // finds it at cosine 1.
    for (k, t) in said.iter().enumerate() {
        let m = engine.get(&p, ids[k]).await.unwrap();
        assert_eq!(m.embedding_version, Some(text.model().version.clone()));
        let (id, score) = best_vector_score(&engine, &p, t).await;
        assert_eq!(id, ids[k], "{t}");
        assert!(score > 0.999, "text recipe: cosine {score} for {t}");
    }
    stop.send(true).unwrap();
    indexer.await.unwrap();
    drop(engine);

    // 3. The old recipe alone no longer matches the store; the new one does.
    let err = Engine::open(
        backends(d, store.clone(), speaker.clone(), "v-speaker", None),
        cfg(),
    )
    .await
    .err()
    .expect("the speaker recipe no longer matches the store");
    assert!(err.to_string().contains("embedder.next"), "{err}");
    Engine::open(backends(d, store.clone(), text, "v-text", None), cfg())
        .await
        .unwrap();
}
