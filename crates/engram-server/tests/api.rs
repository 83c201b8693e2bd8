//! HTTP API behaviour against the real embedded back-ends (SQLite, usearch,
//! tantivy, all-MiniLM-L6-v2). The model folder comes from ENGRAM_MODEL_DIR.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use engram_core::{
    Backends, Embedder, Engine, EngineConfig, MemoryCache, ModelInfo, Principal, RetryPolicy, Role,
    StoreQueue,
};
use engram_embed::LocalEmbedder;
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use engram_server::{router, AuthSettings, RateLimit, ServerConfig};
use engram_sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tower::ServiceExt;

fn model() -> Arc<LocalEmbedder> {
    static MODEL: OnceLock<Arc<LocalEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::var("ENGRAM_MODEL_DIR")
                .expect("ENGRAM_MODEL_DIR must point at the all-MiniLM-L6-v2 folder (scripts/fetch-model.sh)");
            Arc::new(LocalEmbedder::load(std::path::Path::new(&dir)).expect("loading the model"))
        })
        .clone()
}

/// FAILURE INJECTION ONLY: the real embedder, except that while `poisoned` is
/// set any text containing "POISON" fails. Used to drive the retry and
/// dead-letter paths; everything else goes through the real model.
struct PoisonEmbedder {
    inner: Arc<LocalEmbedder>,
    poisoned: AtomicBool,
}

#[async_trait::async_trait]
impl Embedder for PoisonEmbedder {
    fn model(&self) -> &ModelInfo {
        self.inner.model()
    }
    async fn embed(&self, texts: &[String]) -> engram_core::Result<Vec<Vec<f32>>> {
        if self.poisoned.load(Ordering::SeqCst) && texts.iter().any(|t| t.contains("POISON")) {
            return Err(engram_core::Error::Embedding("injected failure".into()));
        }
        self.inner.embed(texts).await
    }
}

struct App {
    router: Router,
    engine: Arc<Engine>,
    embedder: Arc<PoisonEmbedder>,
    /// Sent as `Authorization: Bearer` by `call`/`raw`.
    token: Option<String>,
    _stop: Arc<watch::Sender<bool>>,
    _dir: Arc<tempfile::TempDir>,
}

/// How a test app is set up beyond the defaults.
struct Opts {
    exact_threshold: usize,
    /// `None`: authentication off, requests act as an admin of `acme`.
    auth: Option<AuthSettings>,
    rate_limit: Option<RateLimit>,
    audit_reads: bool,
    cors_origins: Vec<String>,
    llm: Option<Arc<dyn engram_core::Llm>>,
    index_stall_after: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            exact_threshold: 20_000,
            auth: None,
            rate_limit: None,
            audit_reads: false,
            cors_origins: Vec::new(),
            llm: None,
            index_stall_after: Duration::from_secs(60),
        }
    }
}

async fn app_with(exact_threshold: usize) -> App {
    app_opts(Opts {
        exact_threshold,
        ..Opts::default()
    })
    .await
}

async fn app_opts(o: Opts) -> App {
    let exact_threshold = o.exact_threshold;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("engram.db"))
            .await
            .unwrap(),
    );
    let embedder = Arc::new(PoisonEmbedder {
        inner: model(),
        poisoned: AtomicBool::new(true),
    });
    let opts = VectorOptions {
        exact_threshold,
        ..VectorOptions::default()
    };
    let cfg = EngineConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        max_text_bytes: 4096,
        max_batch: 50,
        audit_reads: o.audit_reads,
        index_stall_after: o.index_stall_after,
        // A prompt unique to this app: llama-cpp-python reuses the KV cache
        // of a prompt identical to the previous one, which with gemma3's
        // sliding-window attention can end an answer at once.
        rag: engram_core::RagConfig {
            system_prompt: format!(
                "{} (test app {})",
                engram_core::rag::DEFAULT_SYSTEM_PROMPT,
                uuid::Uuid::now_v7()
            ),
            ..engram_core::RagConfig::default()
        },
        ..EngineConfig::default()
    };
    let backends = Backends {
        next: None,
        queue: Arc::new(StoreQueue::new(store.clone(), cfg.job_lease, cfg.retry)),
        store,
        vectors: Arc::new(UsearchIndex::open(&dir.path().join("v"), 384, opts).unwrap()),
        keywords: Arc::new(
            TantivyIndex::open(
                &dir.path().join("k"),
                &engram_core::context::Recipe::default().id(),
            )
            .unwrap(),
        ),
        embedder: embedder.clone(),
        cache: Arc::new(MemoryCache::new(cfg.query_cache_entries)),
        llm: o.llm.clone(),
    };
    let engine = Engine::open(backends, cfg).await.unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(engine.clone().run_indexer(rx.clone()));
    tokio::spawn(engine.worker().run(rx));
    let auth = o.auth.unwrap_or_else(|| AuthSettings {
        jwt: None,
        anonymous: Some(Principal::new("acme", "test", Role::Admin)),
    });
    let router = router(
        engine.clone(),
        ServerConfig {
            max_body_bytes: 64 * 1024,
            wait_timeout: Duration::from_secs(30),
            auth,
            rate_limit: o.rate_limit,
            cors_origins: o.cors_origins,
            metrics_require_auth: false,
            body_timeout: Duration::from_secs(30),
            mcp_default_namespace: None,
        },
    );
    App {
        router,
        engine,
        embedder,
        token: None,
        _stop: Arc::new(stop),
        _dir: Arc::new(dir),
    }
}

async fn app() -> App {
    app_with(20_000).await
}

impl App {
    /// The same app, calling with this bearer token.
    fn as_(&self, token: &str) -> App {
        App {
            router: self.router.clone(),
            engine: self.engine.clone(),
            embedder: self.embedder.clone(),
            token: Some(token.to_string()),
            _stop: self._stop.clone(),
            _dir: self._dir.clone(),
        }
    }

    async fn raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        ctype: Option<&str>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.raw_full(method, uri, body, ctype).await;
        (s, v)
    }

    async fn raw_full(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        ctype: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(c) = ctype {
            b = b.header("content-type", c);
        }
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b
            .body(
                body.map(|s| Body::from(s.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body for {method} {uri}: {bytes:?}"))
        };
        (status, headers, v)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let s = body.map(|b| b.to_string());
        self.raw(method, uri, s.as_deref(), Some("application/json"))
            .await
    }

    async fn add(&self, ns: &str, text: &str, extra: Value) -> String {
        let mut body = json!({"namespace": ns, "text": text});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let (s, v) = self
            .call("POST", "/v1/memories?wait=true", Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn search(&self, body: Value) -> Vec<Value> {
        let (s, v) = self.call("POST", "/v1/search", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["hits"].as_array().unwrap().clone()
    }
}

fn assert_error(s: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(s, want, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_roundtrip_and_soft_delete() {
    let app = app().await;
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "agent:coder", "text": "The build uses cargo nextest", "metadata": {"lang": "rust", "prio": 2}, "tags": ["build"], "kind": "fact"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "created");
    let id = v["id"].as_str().unwrap().to_string();

    let (s, m) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["text"], "The build uses cargo nextest");
    assert_eq!(m["metadata"]["lang"], "rust");
    assert_eq!(m["tags"], json!(["build"]));
    assert_eq!(m["namespace"], "agent:coder");
    // Internal fields stay inside: the tenant, the checksum, the store-wide seq.
    for internal in ["tenant", "checksum", "seq", "key"] {
        assert!(m.get(internal).is_none(), "{internal} in {m}");
    }

    // Same text again: the existing id comes back.
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "agent:coder", "text": "  The build uses   cargo nextest "})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["status"], "duplicate");
    assert_eq!(v["id"], id.as_str());

    // Update metadata and text; with wait it is searchable under the new text.
    let (s, m) = app
        .call(
            "PATCH",
            &format!("/v1/memories/{id}?wait=true"),
            Some(json!({"text": "The build uses plain cargo test", "metadata": {"lang": "rust", "prio": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["state"], "ready");
    assert_eq!(m["metadata"]["prio"], 5);
    let hits = app
        .search(json!({"query": "plain cargo test", "mode": "keyword", "k": 5}))
        .await;
    assert_eq!(hits[0]["id"], id.as_str());
    assert_eq!(hits[0]["text"], "The build uses plain cargo test");

    let (s, _) = app
        .call("DELETE", &format!("/v1/memories/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "memory_not_found");
    let (s, v) = app
        .call("DELETE", &format!("/v1/memories/{id}"), None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "memory_not_found");
    // Gone from search at once, in every mode.
    for mode in ["keyword", "vector", "hybrid"] {
        let hits = app
            .search(json!({"query": "plain cargo test", "mode": mode}))
            .await;
        assert!(
            hits.iter().all(|h| h["id"] != id.as_str()),
            "{mode}: {hits:?}"
        );
    }
    let (_, page) = app
        .call("GET", "/v1/memories?namespace=agent:coder", None)
        .await;
    assert_eq!(page["memories"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_ranks_by_meaning_and_words_with_breakdown() {
    let app = app().await;
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories?wait=true",
            Some(json!({"namespace": "kb", "memories": [
                {"text": "Alice prefers tea over coffee in the morning", "metadata": {"person": "alice"}},
                {"text": "The deploy pipeline runs on GitHub Actions", "metadata": {"person": "bob"}},
                {"text": "Bob's favourite hot drink is espresso", "metadata": {"person": "bob"}},
                {"text": "Quarterly revenue grew by twelve percent", "metadata": {"person": "carol"}}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["memories"].as_array().unwrap().len(), 4);
    assert!(v["memories"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["state"] == "ready"));

    // Vector: meaning without shared words.
    let hits = app
        .search(json!({"query": "which beverage does Bob like?", "mode": "vector", "k": 2}))
        .await;
    assert_eq!(hits[0]["text"], "Bob's favourite hot drink is espresso");
    assert!(hits[0]["scores"]["vector"].as_f64().unwrap() > 0.3);
    assert!(hits[0]["scores"]["keyword"].is_null());

    // Keyword: exact words, stemmed.
    let hits = app
        .search(json!({"query": "pipelines", "mode": "keyword"}))
        .await;
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0]["text"],
        "The deploy pipeline runs on GitHub Actions"
    );
    assert!(hits[0]["scores"]["keyword"].as_f64().unwrap() > 0.0);

    // Hybrid: per-signal breakdown; the memory that matches both ranks first.
    let hits = app
        .search(json!({"query": "Alice tea morning", "k": 3}))
        .await;
    assert_eq!(
        hits[0]["text"],
        "Alice prefers tea over coffee in the morning"
    );
    let s0 = &hits[0]["scores"];
    assert_eq!(s0["vector_rank"], 1);
    assert_eq!(s0["keyword_rank"], 1);
    assert!(
        s0["fused"].as_f64().unwrap() > hits[1]["scores"]["fused"].as_f64().unwrap(),
        "{hits:?}"
    );
    assert!(hits.len() <= 3);
    // Reciprocal-rank fusion on request: fused = w/(60 + rank) per signal
    // (default weights 0.3 and 0.7).
    let hits = app
        .search(json!({"query": "Alice tea morning", "k": 3, "fusion": "rrf"}))
        .await;
    let s0 = &hits[0]["scores"];
    let want = 0.3 / 61.0 + 0.7 / 61.0;
    assert!((s0["fused"].as_f64().unwrap() - want).abs() < 1e-5, "{s0}");

    // Filter inside the search: k hits come back when k match.
    let hits = app
        .search(json!({"query": "Alice tea morning", "k": 2, "filter": {"metadata.person": "bob"}}))
        .await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h["metadata"]["person"] == "bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_search_returns_k_through_the_hnsw_path() {
    // exact_threshold 0 forces the HNSW path even for a small index.
    let app = app_with(0).await;
    let memories: Vec<Value> = (0..120)
        .map(|i| json!({"text": format!("note number {i} about topic {}", i % 7), "metadata": {"bucket": i % 40, "n": i}, "tags": [format!("t{}", i % 3)]}))
        .collect();
    for chunk in memories.chunks(40) {
        let (s, v) = app
            .call(
                "POST",
                "/v1/memories?wait=true",
                Some(json!({"namespace": "notes", "memories": chunk})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    for mode in ["vector", "keyword", "hybrid"] {
        // Only 3 memories have bucket 5 (5, 45, 85).
        let hits = app
            .search(json!({"query": "note about topic", "mode": mode, "k": 3, "filter": {"metadata.bucket": 5}}))
            .await;
        let mut ns: Vec<i64> = hits
            .iter()
            .map(|h| h["metadata"]["n"].as_i64().unwrap())
            .collect();
        ns.sort();
        assert_eq!(ns, vec![5, 45, 85], "{mode}");
        let hits = app
            .search(json!({"query": "note", "mode": mode, "k": 10, "filter": {"$and": [{"metadata.n": {"$gte": 100}}, {"tags": "t1"}]}}))
            .await;
        // n in 100..120 with n % 3 == 1: 100,103,...,118 → 7 memories.
        assert_eq!(hits.len(), 7, "{mode}: {hits:?}");
        assert!(hits
            .iter()
            .all(|h| h["metadata"]["n"].as_i64().unwrap() >= 100 && h["tags"] == json!(["t1"])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_with_a_filter() {
    let app = app().await;
    let memories: Vec<Value> = (0..25)
        .map(|i| json!({"text": format!("item {i}"), "metadata": {"even": i % 2 == 0, "i": i}}))
        .collect();
    let (s, _) = app
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "items", "memories": memories})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"namespace": "items", "limit": 4, "filter": {"metadata.even": true}});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (s, page) = app.call("POST", "/v1/memories/list", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for m in page["memories"].as_array().unwrap() {
            seen.push(m["metadata"]["i"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).filter(|i| i % 2 == 0).collect::<Vec<i64>>());
    // GET form with a URL-encoded filter.
    let (s, page) = app
        .call("GET", "/v1/memories?namespace=items&limit=100&filter=%7B%22metadata.i%22%3A%7B%22%24lt%22%3A3%7D%7D", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["memories"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_makes_writes_idempotent() {
    let app = app().await;
    let body = json!({"namespace": "n", "text": "first version", "client_id": "req-1"});
    let (_, a) = app.call("POST", "/v1/memories", Some(body)).await;
    let body = json!({"namespace": "n", "text": "a retried request with other text", "client_id": "req-1"});
    let (s, b) = app.call("POST", "/v1/memories", Some(body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["status"], "duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_embeddings_retry_then_dead_letter_and_can_be_retried() {
    let app = app().await;
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "dlq", "text": "POISON pill memory"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = v["id"].as_str().unwrap().to_string();
    // A healthy memory in the same batch window is not held back.
    app.add("dlq", "a healthy neighbour", json!({})).await;

    let mut dead = Value::Null;
    for _ in 0..100 {
        let (_, jobs) = app.call("GET", "/v1/jobs?state=dead", None).await;
        if let Some(j) = jobs["jobs"].as_array().and_then(|a| a.first()) {
            dead = j.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead["memory_id"], id.as_str(), "job never dead-lettered");
    assert_eq!(dead["attempts"], 2);
    assert!(dead["last_error"]
        .as_str()
        .unwrap()
        .contains("injected failure"));
    let (_, m) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_eq!(m["state"], "failed");

    // Retrying a job that is not dead is a conflict; an unknown one is 404.
    let (s, v) = app.call("POST", "/v1/jobs/999999/retry", None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "job_not_found");

    app.embedder.poisoned.store(false, Ordering::SeqCst);
    let job_id = dead["id"].as_u64().unwrap();
    let (s, j) = app
        .call("POST", &format!("/v1/jobs/{job_id}/retry"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["attempts"], 0);
    let mut ready = false;
    for _ in 0..100 {
        let (_, m) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
        if m["state"] == "ready" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "retried job did not complete");
    let (_, jobs) = app.call("GET", "/v1/jobs?state=dead", None).await;
    assert_eq!(jobs["jobs"], json!([]));
    let (s, v) = app
        .call("POST", &format!("/v1/jobs/{job_id}/retry"), None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "job_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_json_errors() {
    let app = app().await;
    app.add("known", "something to search", json!({})).await;
    let big_text = "x".repeat(5000);
    let huge_body = format!(
        "{{\"namespace\":\"n\",\"text\":\"{}\"}}",
        "y".repeat(70 * 1024)
    );
    // (method, uri, body, content type, expected status, expected code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<String>,
        Option<&'a str>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/memories", Some("{not json".into()), Some("application/json"), StatusCode::BAD_REQUEST, "malformed_json"),
        ("POST", "/v1/memories", Some("{\"namespace\":\"n\",\"text\":\"a\"}".into()), None, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("POST", "/v1/memories", Some("[1,2]".into()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories", Some(json!({"text": "no namespace"}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "colour": "red"}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": 5}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "metadata": [1]}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "   "}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_text"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "nul \u{0} inside"}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_text"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "metadata": {"k": ["a\u{0}"]}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_metadata"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "metadata": {"a.b": 1}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_metadata"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "tags": [""]}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_tag"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "client_id": "c".repeat(300)}).to_string()), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "provenance": {"agent": "a".repeat(2000)}}).to_string()), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
        ("POST", "/v1/memories", Some(json!({"namespace": "bad namespace!", "text": "a"}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_namespace"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": big_text}).to_string()), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
        ("POST", "/v1/memories", Some(huge_body), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "memories": []}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_request"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "memories": (0..51).map(|i| json!({"text": format!("t{i}")})).collect::<Vec<_>>()}).to_string()), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "ttl_seconds": 0}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "ttl_seconds": u64::MAX}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "ttl_seconds": 9_223_372_036_854_775_807u64}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "expires_at": "+10000-01-01T00:00:00Z"}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "expires_at": "2001-01-01T00:00:00Z"}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/memories", Some(json!({"namespace": "n", "text": "a", "kind": "poem"}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories?wait=maybe", Some(json!({"namespace": "n", "text": "a"}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_query"),
        ("POST", "/v1/search", Some(json!({"query": "x", "filter": {"colour": "red"}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_filter"),
        ("POST", "/v1/search", Some(json!({"query": "x", "filter": {"metadata.a": {"$gt": "soon"}}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_filter"),
        ("POST", "/v1/search", Some(json!({"query": ""}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "invalid_text"),
        ("POST", "/v1/search", Some(json!({"query": "x", "k": 0}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/search", Some(json!({"query": "x", "k": 1001}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/search", Some(json!({"query": "x", "weights": {"vector": 1e39, "keyword": 1}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("POST", "/v1/search", Some(json!({"query": "x", "namespaces": (0..101).map(|i| format!("n{i}")).collect::<Vec<_>>()}).to_string()), Some("application/json"), StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
        ("POST", "/v1/search", Some(json!({"query": "x", "k": -1}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/search", Some(json!({"query": "x", "mode": "psychic"}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/search", Some(json!({"query": "x", "namespaces": ["nope"]}).to_string()), Some("application/json"), StatusCode::NOT_FOUND, "namespace_not_found"),
        ("POST", "/v1/search", Some(json!({"query": "x", "weights": {"vector": 0, "keyword": 0}}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("PUT", "/v1/namespaces/known", Some(json!({"default_ttl_seconds": 9_223_372_036_854_775_807u64}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("PUT", "/v1/namespaces/known", Some(json!({"default_ttl_seconds": 0}).to_string()), Some("application/json"), StatusCode::BAD_REQUEST, "out_of_range"),
        ("PUT", "/v1/namespaces/known", Some(json!({"default_ttl_seconds": -1}).to_string()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("GET", "/v1/jobs?limit=0", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/jobs?limit=18446744073709551616", None, None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/audit?limit=100000", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/audit?after=9223372036854775808", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/jobs?after=9223372036854775808", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/quarantine?limit=0", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/quarantine?limit=x", None, None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("POST", "/v1/search", Some("[\"x\"]".into()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("POST", "/v1/memories/list", Some("[null, null]".into()), Some("application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("GET", "/v1/memories?namespace=nope", None, None, StatusCode::NOT_FOUND, "namespace_not_found"),
        ("GET", "/v1/memories?filter=%7Bbad", None, None, StatusCode::BAD_REQUEST, "invalid_filter"),
        ("GET", "/v1/memories?limit=0", None, None, StatusCode::BAD_REQUEST, "out_of_range"),
        ("GET", "/v1/memories?cursor=abc", None, None, StatusCode::BAD_REQUEST, "invalid_cursor"),
        ("GET", "/v1/memories?bogus=1", None, None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/memories/not-a-uuid", None, None, StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/v1/memories/01900000-0000-7000-8000-000000000000", None, None, StatusCode::NOT_FOUND, "memory_not_found"),
        ("PATCH", "/v1/memories/01900000-0000-7000-8000-000000000000", Some("{}".into()), Some("application/json"), StatusCode::NOT_FOUND, "memory_not_found"),
        ("GET", "/v1/jobs?state=sleeping", None, None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/jobs/abc", None, None, StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/v1/nothing-here", None, None, StatusCode::NOT_FOUND, "route_not_found"),
        ("PUT", "/v1/search", None, None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, uri, body, ctype, want, code) in cases {
        let (s, v) = app.raw(method, uri, body.as_deref(), ctype).await;
        assert_eq!(
            s,
            want,
            "{method} {uri} {:?}: {v}",
            body.as_deref().map(|b| &b[..b.len().min(120)])
        );
        assert_eq!(v["error"]["code"], code, "{method} {uri}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    // The namespace refused its TTL and keeps working: a write in it
    // becomes searchable and lists.
    app.add("known", "written after the refused TTL", json!({}))
        .await;
    let hits = app
        .search(json!({"query": "written after the refused TTL", "namespaces": ["known"]}))
        .await;
    assert_eq!(hits[0]["text"], "written after the refused TTL");
    let (s, v) = app.call("GET", "/v1/memories?namespace=known", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["memories"].as_array().unwrap().len(), 2);
    // Nothing above was stored: the namespace list holds only "known".
    let (_, ns) = app.call("GET", "/v1/namespaces", None).await;
    let names: Vec<&str> = ns["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["known"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_memories_are_not_returned() {
    let app = app().await;
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories?wait=true",
            Some(json!({"namespace": "ttl", "text": "short lived secret", "ttl_seconds": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.search(json!({"query": "short lived secret", "mode": "keyword"}))
            .await
            .len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(app
        .search(json!({"query": "short lived secret", "mode": "keyword"}))
        .await
        .is_empty());
    let (s, _) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_openai_compatible_embeddings_from_the_local_model() {
    let app = app().await;
    let (s, v) = app
        .call("POST", "/v1/embeddings", Some(json!({"input": ["a cat sits on the mat", "a cat is sitting on a mat", "quarterly revenue grew"], "model": "all-MiniLM-L6-v2"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    assert_eq!(vecs[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!((dot(&vecs[0], &vecs[0]) - 1.0).abs() < 1e-3);
    assert!(dot(&vecs[0], &vecs[1]) > dot(&vecs[0], &vecs[2]) + 0.3);
    // The same vector the memory gets when stored: a single string works too.
    let (_, one) = app
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"input": "a cat sits on the mat"})),
        )
        .await;
    assert_eq!(one["data"][0]["embedding"], v["data"][0]["embedding"]);
    let (s, e) = app
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"input": "x", "model": "gpt-4"})),
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, e) = app
        .call("POST", "/v1/embeddings", Some(json!({"input": []})))
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, e) = app
        .call("POST", "/v1/embeddings", Some(json!({"input": 5})))
        .await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    // OpenAI's clients ask for base64 (little-endian f32) by default.
    let (s, b) = app
        .call(
            "POST",
            "/v1/embeddings",
            Some(
                json!({"input": "a cat sits on the mat", "encoding_format": "base64",
                        "dimensions": 384, "user": "agent-7"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().expect("a base64 string"))
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // The same f32s the float encoding prints (shortest round-trip text).
    let floats: Vec<f32> = vecs[0].iter().map(|x| *x as f32).collect();
    assert_eq!(decoded, floats);
    // engram does not shorten vectors; other formats are not OpenAI's.
    let (s, e) = app
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"input": "x", "dimensions": 256})),
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("384"),
        "{e}"
    );
    let (s, e) = app
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"input": "x", "encoding_format": "int8"})),
        )
        .await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let (s, m) = app.call("GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "all-MiniLM-L6-v2");
    assert_eq!(m["data"][0]["object"], "model");
    assert_eq!(m["data"][0]["dimensions"], 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_routes_search_embedding_and_queue_state() {
    let app = app().await;
    app.add("ns", "metrics are scraped by prometheus", json!({}))
        .await;
    app.search(json!({"query": "prometheus scrape", "mode": "hybrid"}))
        .await;
    let (s, _) = app.call("GET", "/v1/memories/not-a-uuid", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for want in [
        r#"engram_http_requests_total{method="POST",route="/v1/search",status="200"}"#,
        r#"engram_http_requests_total{method="GET",route="/v1/memories/{id}",status="400"}"#,
        r#"engram_http_request_duration_seconds_bucket{method="POST",route="/v1/memories""#,
        r#"engram_search_duration_seconds_bucket{mode="hybrid""#,
        "engram_query_embed_duration_seconds_count",
        "engram_embed_batch_duration_seconds_count",
        "engram_embedded_total",
        "engram_jobs_queued ",
        "engram_jobs_dead ",
        "engram_jobs_oldest_age_seconds ",
        "engram_index_vectors ",
        "engram_index_lag_changes ",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    // Ids never become label values.
    assert!(!text.contains("not-a-uuid"));
}

#[path = "api/ask.rs"]
mod ask;
#[path = "api/cache.rs"]
mod cache;
#[path = "api/decoding.rs"]
mod decoding;
#[path = "api/governance.rs"]
mod governance;
#[path = "api/leases.rs"]
mod leases;
#[path = "api/probe.rs"]
mod probe;
#[path = "api/quarantine.rs"]
mod quarantine;
#[path = "api/reembed.rs"]
mod reembed;
#[path = "api/sessions.rs"]
mod sessions;
