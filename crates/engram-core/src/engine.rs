//! The engine: validates and authorizes every call, writes through the store,
//! embeds in background workers, keeps derived indexes in step with the
//! store's change feed, and answers searches.
//!
//! This file holds the engine's state and how it opens; its calls are split
//! by concern, each an `impl Engine` block of its own module: `write`
//! (create, get, update, delete), `search`, `read` (list, embeddings, ask,
//! namespaces), `sessions`, `governance` (keys, audit, retention), `admin`
//! (jobs, stats, readiness, quarantine), `indexer` (the change feed into the
//! indexes, rebuild) and `validate` (input checks shared by the writes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use crate::cache::Cache;
use crate::codes::Code;
use crate::error::{Error, Result};
use crate::fusion::FusionParams;
use crate::probe::IndexerHealth;
use crate::quarantine;
use crate::rag::{Llm, RagConfig};
use crate::reembed::{Active, Embedders, NextModel, OpenIndex, ReembedStatus, Shadow};
use crate::scope::AttrTable;
use crate::traits::*;
use crate::types::*;

/// Most deleted messages remembered for their neighbours' re-indexing
/// (beyond it, the oldest are forgotten and those neighbours keep the
/// deleted turn in their context until they change).
pub(crate) const MAX_DEPARTED: usize = 100_000;

/// Tunables of the engine. Limits are enforced on every call.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_text_bytes: usize,
    pub max_batch: usize,
    pub max_metadata_bytes: usize,
    pub max_tags: usize,
    pub max_k: usize,
    pub default_k: usize,
    pub max_list_limit: usize,
    /// Each signal fetches `max(k * candidate_factor, min_candidates)` before fusion.
    pub candidate_factor: usize,
    pub min_candidates: usize,
    pub fusion: FusionParams,
    pub worker_batch: usize,
    pub job_lease: Duration,
    pub retry: RetryPolicy,
    /// How often the vector index is saved while it has unsaved changes.
    pub persist_interval: Duration,
    /// Capacity of the in-process [`MemoryCache`](crate::MemoryCache) the
    /// embedded mode builds (query embeddings and search rankings).
    pub query_cache_entries: u64,
    /// How long a query embedding stays cached.
    pub embedding_cache_ttl: Duration,
    /// How long a search ranking stays cached; zero disables result caching.
    /// Writes invalidate rankings (see [`crate::cache`]); the TTL bounds how
    /// stale one can get if an invalidation is lost.
    pub result_cache_ttl: Duration,
    /// Flag emails, phone and card numbers found in texts as PII on write.
    pub pii_detect: bool,
    /// Append an audit event for every read (get, list, search), not only writes.
    pub audit_reads: bool,
    /// How long soft-deleted memories are kept before the sweeper purges them.
    pub purge_after: Duration,
    /// Most memories one sweep expires or purges per transaction.
    pub sweep_batch: usize,
    /// `/v1/ask`: prompt budget and generation defaults.
    pub rag: RagConfig,
    /// How often the indexer reads the store's model state (to switch a
    /// finished re-embedding, or follow a switch made by another node).
    pub model_check_interval: Duration,
    /// Readiness fails when the indexer has made no progress for this long
    /// while changes wait.
    pub index_stall_after: Duration,
    /// Readiness fails when more rows than this are quarantined.
    pub max_quarantined: usize,
    /// How conversation messages are indexed with their context.
    pub context: crate::context::Recipe,
    /// The memory proxy's namespace when a request names none.
    pub proxy_namespace: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_text_bytes: 32 * 1024,
            max_batch: 256,
            max_metadata_bytes: 64 * 1024,
            max_tags: 64,
            max_k: 1000,
            default_k: 10,
            max_list_limit: 1000,
            candidate_factor: 4,
            min_candidates: 100,
            fusion: FusionParams::default(),
            worker_batch: 32,
            job_lease: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            persist_interval: Duration::from_secs(30),
            query_cache_entries: 10_000,
            embedding_cache_ttl: Duration::from_secs(24 * 3600),
            result_cache_ttl: Duration::from_secs(30),
            pii_detect: true,
            audit_reads: false,
            purge_after: Duration::from_secs(30 * 24 * 3600),
            sweep_batch: 500,
            rag: RagConfig::default(),
            model_check_interval: Duration::from_secs(1),
            index_stall_after: Duration::from_secs(60),
            max_quarantined: 0,
            context: crate::context::Recipe::default(),
            proxy_namespace: None,
        }
    }
}

/// The back-ends an engine runs on.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub vectors: Arc<dyn VectorIndex>,
    pub keywords: Arc<dyn KeywordIndex>,
    /// The embedder of the store's active model (see [`crate::reembed::pick`]), and
    /// `vectors` is its index.
    pub embedder: Arc<dyn Embedder>,
    /// While re-embedding to another model: its embedder and how to open its
    /// (shadow) vector index. See [`crate::reembed`].
    pub next: Option<NextModel>,
    pub queue: Arc<dyn JobQueue>,
    /// Query embeddings and search rankings: a [`MemoryCache`](crate::MemoryCache)
    /// in the embedded mode, shared (Redis) in the scale-out mode.
    pub cache: Arc<dyn Cache>,
    /// The chat server of `/v1/ask`; `None` when no LLM is configured.
    pub llm: Option<Arc<dyn Llm>>,
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    /// The query embedder and the vector index of the active model, swapped
    /// together when a re-embedding switches models.
    pub(crate) active: std::sync::RwLock<Arc<Active>>,
    pub(crate) keywords: Arc<dyn KeywordIndex>,
    pub(crate) embedders: Embedders,
    pub(crate) next_index: Option<OpenIndex>,
    /// The vector index of the re-embedding target, following the feed.
    pub(crate) shadow: tokio::sync::Mutex<Option<Shadow>>,
    /// Set when the store's active model is one this node has no embedder
    /// for (another node switched): vector searches fail rather than compare
    /// vectors of two models.
    pub(crate) model_missing: std::sync::Mutex<Option<String>>,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) attrs: Arc<AttrTable>,
    pub(crate) cfg: EngineConfig,
    /// Highest change seq applied to every derived index.
    pub(crate) indexed: watch::Sender<u64>,
    pub(crate) indexer_wake: Notify,
    /// Keys in the store's quarantine (see [`crate::quarantine`]): the
    /// indexer releases one as soon as its row decodes again. Refreshed
    /// from the store by the indexer, since other nodes quarantine too.
    pub(crate) quarantined: std::sync::Mutex<HashSet<Key>>,
    /// When the indexer last made progress, for readiness.
    pub(crate) indexer_health: std::sync::Mutex<IndexerHealth>,
    /// Attributes of messages this node deleted, until the indexer sees
    /// their removal (see `crate::sessions`).
    pub(crate) departed: std::sync::Mutex<HashMap<Key, Arc<DocAttrs>>>,
    pub(crate) cache: Arc<dyn Cache>,
    pub(crate) llm: Option<Arc<dyn Llm>>,
}

impl Engine {
    /// Build an engine and load the derived in-memory state (filter attributes).
    /// Call [`Engine::catch_up`] before serving so indexes reflect the store.
    pub async fn open(b: Backends, cfg: EngineConfig) -> Result<Arc<Engine>> {
        let attrs = Arc::new(AttrTable::new());
        let mut embedders_next = None;
        let mut after = None;
        loop {
            let page = b.store.live_attrs(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(match last {
                Ok((key, _)) => *key,
                Err(c) => c.key,
            });
            let (ok, corrupt) = quarantine::split(page, QuarantineSource::Attrs);
            for (key, a) in ok {
                attrs.insert(key, Arc::new(a));
            }
            quarantine::record(&*b.store, corrupt).await?;
        }
        let quarantined = quarantine::keys(&*b.store).await?;
        let start = b.vectors.persisted_seq().min(b.keywords.persisted_seq());
        let (indexed, _) = watch::channel(start);
        let state = b.store.init_model(b.embedder.model()).await?;
        crate::reembed::check_active(&state, b.embedder.model())?;
        let mut shadow = None;
        let mut next_index = None;
        if let Some(next) = b.next {
            b.store.begin_reembed(next.embedder.model()).await?;
            let index = (next.open_index)().await?;
            shadow = Some(Shadow {
                pos: index.persisted_seq(),
                index,
            });
            next_index = Some(next.open_index);
            tracing::info!(
                from = %b.embedder.model().version,
                to = %next.embedder.model().version,
                "re-embedding to the next model"
            );
            embedders_next = Some(next.embedder);
        }
        Ok(Arc::new(Engine {
            store: b.store,
            active: std::sync::RwLock::new(Arc::new(Active {
                embedder: b.embedder.clone(),
                vectors: b.vectors,
            })),
            keywords: b.keywords,
            embedders: Embedders {
                primary: b.embedder,
                next: embedders_next,
            },
            next_index,
            shadow: tokio::sync::Mutex::new(shadow),
            model_missing: std::sync::Mutex::new(None),
            queue: b.queue,
            attrs,
            cache: b.cache,
            llm: b.llm,
            cfg,
            indexed,
            indexer_wake: Notify::new(),
            quarantined: std::sync::Mutex::new(quarantined),
            indexer_health: std::sync::Mutex::new(IndexerHealth::new()),
            departed: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The active model: what queries are embedded with.
    pub fn model(&self) -> ModelInfo {
        self.active().embedder.model().clone()
    }

    /// The active model's embedder and vector index, taken together.
    pub(crate) fn active(&self) -> Arc<Active> {
        self.active.read().expect("active model lock").clone()
    }

    pub(crate) fn set_active(&self, a: Active) {
        *self.active.write().expect("active model lock") = Arc::new(a);
    }
}

/// Tenant-wide views (jobs, stats, audit, keys) are for callers not limited
/// to some namespaces.
pub(crate) fn require_unscoped(p: &Principal, what: &str) -> Result<()> {
    if p.unscoped() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{what} span every namespace of the tenant; this caller is limited to some"
        )))
    }
}

/// What a caller without `pii:read` sees of a memory flagged as holding PII.
pub(crate) fn redact_memory(p: &Principal, mut m: Memory) -> Memory {
    if !m.pii.is_empty() && !p.reads_pii() {
        let kinds: Vec<crate::pii::PiiKind> = m
            .pii
            .iter()
            .map(|f| crate::pii::PiiKind::parse(f).unwrap_or(crate::pii::PiiKind::Custom))
            .collect();
        m.text = crate::pii::redact(&m.text, &kinds);
    }
    m
}

pub(crate) fn prefix_item(e: Error, i: usize) -> Error {
    match e {
        Error::Invalid { code, message } => Error::Invalid {
            code,
            message: format!("memories[{i}]: {message}"),
        },
        Error::TooLarge(m) => Error::TooLarge(format!("memories[{i}]: {m}")),
        other => other,
    }
}

/// Namespaces: 1 to 128 bytes of letters, digits and `_-:./@`.
pub fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 128
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:./@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad(
            Code::InvalidNamespace,
            format!(
                "namespace {ns:?} is invalid: 1 to 128 characters of letters, digits and _-:./@"
            ),
        ))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStats {
    pub store: StoreStats,
    /// Rows that cannot be decoded (see [`crate::quarantine`]).
    pub quarantined: u64,
    /// The indexes have applied every change of `store` (for a tenant's
    /// stats: every change of that tenant).
    pub caught_up: bool,
    pub indexed_seq: u64,
    pub vectors: usize,
    pub keywords: usize,
    pub model: ModelInfo,
    /// A re-embedding in progress, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reembed: Option<ReembedStatus>,
}
