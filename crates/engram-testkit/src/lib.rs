//! Test helpers shared by engram's tests, in one place instead of copied
//! per test file. A dev-dependency only: nothing here ships.
//!
//! - [`HashEmbedder`]: a deterministic, model-free [`Embedder`] (a test
//!   double; see its docs for what it is and is not), so engine logic is
//!   tested in milliseconds without MiniLM;
//! - [`TestEngine`]: an [`Engine`] on the embedded back-ends (SQLite, usearch,
//!   tantivy) in a temporary directory, with its indexer and embed worker
//!   running: the engine tested alone, without HTTP;
//! - [`model_dir`] and [`free_port`]: the real model folder and a free port,
//!   for the tests that need the real model or spawn real nodes;
//! - [`llm_url`] and [`llm_model`]: the test suite's real LLM server;
//! - [`NodeBuilder`] / [`Node`]: a real `engram serve` (or `worker`) as a
//!   child process on a free port, ready-waited, with an `engram-client`
//!   of it, killed when dropped.
//!
//! The store is the real SQLite store on a temporary file rather than a
//! third, in-memory implementation of [`engram_core::Store`]: the store's
//! rules live in the engine (see [`engram_core::lifecycle`]), and an
//! in-memory copy of its SQL semantics would be a third place for them to
//! drift. SQLite on a temp dir opens in a few milliseconds.

mod node;
pub use node::{create_key, Node, NodeBuilder};

use async_trait::async_trait;
use engram_core::{
    Backends, Embedder, Engine, EngineConfig, MemoryCache, ModelInfo, Principal, Role, StoreQueue,
};
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use engram_sqlite::SqliteStore;
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The all-MiniLM-L6-v2 folder the tests that need the real model use
/// (`ENGRAM_MODEL_DIR`, as `scripts/fetch-model.sh` prints it).
pub fn model_dir() -> PathBuf {
    std::env::var_os("ENGRAM_MODEL_DIR")
        .expect(
            "ENGRAM_MODEL_DIR must point at the all-MiniLM-L6-v2 folder (scripts/fetch-model.sh)",
        )
        .into()
}

/// The Python with the official client packages the interoperability tests
/// drive engram with (`openai`, `mcp`): `ENGRAM_TEST_PYTHON`, as
/// `scripts/services.sh start py` prints it.
pub fn python() -> PathBuf {
    std::env::var_os("ENGRAM_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/engram-services/py-venv/bin/python".into())
}

/// The API root of the test suite's OpenAI-compatible LLM server (a
/// llama.cpp server, `scripts/services.sh start llm`):
/// `ENGRAM_TEST_LLM_URL`, default `http://127.0.0.1:18080/v1`. Panics with
/// how to start it when nothing listens there, rather than letting a test
/// fail later on a connection error.
pub fn llm_url() -> String {
    let url =
        std::env::var("ENGRAM_TEST_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080/v1".into());
    let authority = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "no LLM server at {url}: start it with `scripts/services.sh start llm` \
         (or point ENGRAM_TEST_LLM_URL at an OpenAI-compatible server)"
    );
    url
}

/// The model the test LLM server serves: `ENGRAM_TEST_LLM_MODEL`, default
/// `gemma3-270m`.
pub fn llm_model() -> String {
    std::env::var("ENGRAM_TEST_LLM_MODEL").unwrap_or_else(|_| "gemma3-270m".into())
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A TCP port free on `ip` right now.
pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind(format!("{ip}:0"))
        .expect("binding an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

/// TEST DOUBLE: a deterministic embedder without a model. Each lower-cased
/// alphanumeric word is hashed (SHA-256) to one of `dims` buckets with a sign;
/// a text's vector is the L2-normalised sum. Texts sharing words are close,
/// texts sharing none are orthogonal (up to collisions), and the same text
/// always gives the same vector, on every machine. It knows no synonyms or
/// meaning: use it to test engine logic (writes, the pipeline, the feed,
/// fusion plumbing), never retrieval quality.
pub struct HashEmbedder {
    info: ModelInfo,
}

impl HashEmbedder {
    pub fn new(dims: usize) -> Self {
        HashEmbedder {
            info: ModelInfo {
                name: "test-hash".into(),
                version: format!("test-hash-{dims}"),
                dims,
            },
        }
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let dims = self.info.dims;
        let mut v = vec![0f32; dims];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let h = Sha256::digest(word.to_lowercase().as_bytes());
            let bucket = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) as usize % dims;
            v[bucket] += if h[8] & 1 == 0 { 1.0 } else { -1.0 };
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            // No words: a fixed unit vector, so every text has a valid one.
            v[0] = 1.0;
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> engram_core::Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// An [`Engine`] on the embedded back-ends in a temporary directory, its
/// indexer and embed worker running until it is dropped.
pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub store: Arc<SqliteStore>,
    /// An admin of tenant `acme`.
    pub admin: Principal,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// How a [`TestEngine`] is built.
pub struct Options {
    pub config: EngineConfig,
    /// Default: a 64-dimension [`HashEmbedder`].
    pub embedder: Arc<dyn Embedder>,
    /// Run the embed worker (default true); off, jobs stay queued until a
    /// test drives them.
    pub worker: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: EngineConfig::default(),
            embedder: Arc::new(HashEmbedder::new(64)),
            worker: true,
        }
    }
}

impl TestEngine {
    /// The default engine: [`HashEmbedder`], default configuration.
    pub async fn start() -> TestEngine {
        TestEngine::with(Options::default()).await
    }

    pub async fn with(o: Options) -> TestEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("engram.db"))
                .await
                .expect("opening the SQLite store"),
        );
        let cfg = o.config;
        let dims = o.embedder.model().dims;
        let backends = Backends {
            next: None,
            queue: Arc::new(StoreQueue::new(store.clone(), cfg.job_lease, cfg.retry)),
            store: store.clone(),
            vectors: Arc::new(
                UsearchIndex::open(&dir.path().join("vectors"), dims, VectorOptions::default())
                    .expect("opening the vector index"),
            ),
            keywords: Arc::new(
                TantivyIndex::open(&dir.path().join("keywords"), &cfg.context.id())
                    .expect("opening the keyword index"),
            ),
            embedder: o.embedder,
            cache: Arc::new(MemoryCache::new(cfg.query_cache_entries)),
            llm: None,
        };
        let engine = Engine::open(backends, cfg)
            .await
            .expect("opening the engine");
        engine.catch_up().await.expect("catching up");
        let (stop, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(engine.clone().run_indexer(rx.clone()))];
        if o.worker {
            tasks.push(tokio::spawn(engine.worker().run(rx)));
        }
        TestEngine {
            engine,
            store,
            admin: Principal::new("acme", "test-admin", Role::Admin),
            stop,
            tasks,
            _dir: dir,
        }
    }

    /// Stop the indexer and the worker and wait for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
