//! Back-end wiring: the only place that picks concrete implementations.
//! Embedded (`store = "sqlite"`): SQLite, usearch + tantivy under the data
//! directory, the store's job table as the queue, an in-process cache.
//! Scale-out (`store = "postgres"`, `queue = "nats"`, `cache = "redis"`):
//! PostgreSQL + pgvector + full-text search, NATS JetStream and Redis, with
//! nothing on local disk. Every node migrates the schema at start (under an
//! advisory lock) and fails fast with a clear message when a back-end is
//! unreachable.

use crate::error::{Context, Result};
use engram_core::reembed::NextModel;
use engram_core::{
    Backends, Cache, Embedder, Embedders, Engine, EngineConfig, JobQueue, KeywordIndex, Llm,
    MemoryCache, ModelInfo, RagConfig, RetryPolicy, Store, StoreQueue, VectorIndex,
};
use engram_embed::LocalEmbedder;
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use engram_llm::{OpenAiChat, OpenAiChatOptions, OpenAiEmbedder, OpenAiEmbedderOptions};
use engram_nats::{NatsOptions, NatsQueue};
use engram_postgres::{
    PgKeywordIndex, PgKeywordOptions, PgOptions, PgStore, PgVectorIndex, PgVectorOptions,
};
use engram_redis::RedisCache;
use engram_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    redact_url, CacheKind, Config, EmbedderConfig, EmbedderKind, QueueKind, StoreKind,
};

fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        max_text_bytes: cfg.max_text_bytes,
        max_batch: cfg.max_batch,
        worker_batch: cfg.worker_batch,
        job_lease: Duration::from_secs(cfg.job_lease_secs),
        retry: retry_policy(cfg),
        persist_interval: Duration::from_secs(cfg.persist_interval_secs),
        pii_detect: cfg.pii.detect,
        audit_reads: cfg.audit.reads,
        purge_after: Duration::from_secs(cfg.retention.purge_after_secs),
        result_cache_ttl: Duration::from_secs(cfg.search.result_cache_ttl_secs),
        index_stall_after: Duration::from_secs(cfg.readiness.index_stall_secs),
        max_quarantined: cfg.readiness.max_quarantined,
        context: recipe(cfg),
        rag: RagConfig {
            default_k: cfg.llm.default_k,
            max_context_bytes: cfg.llm.max_context_bytes,
            default_max_tokens: cfg.llm.max_tokens,
            max_tokens_limit: cfg.llm.max_tokens_limit,
            default_temperature: cfg.llm.temperature,
            system_prompt: cfg
                .llm
                .system_prompt
                .clone()
                .unwrap_or_else(|| RagConfig::default().system_prompt),
        },
        proxy_namespace: cfg.proxy.namespace.clone(),
        ..EngineConfig::default()
    }
}

fn recipe(cfg: &Config) -> engram_core::context::Recipe {
    engram_core::context::Recipe {
        window: cfg.search.context_window,
    }
}

fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        max_attempts: cfg.retry_max_attempts,
        base_delay: Duration::from_millis(cfg.retry_base_delay_ms),
        ..RetryPolicy::default()
    }
}

/// The store of either mode; `Some(pg)` too in the scale-out mode, for the
/// indexes that share its pool.
pub(crate) async fn open_store(cfg: &Config) -> Result<(Arc<dyn Store>, Option<PgStore>)> {
    match cfg.store {
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
            let path = cfg.data_dir.join("engram.db");
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening store {}", path.display()))?;
            Ok((Arc::new(store), None))
        }
        StoreKind::Postgres => {
            let pg = open_postgres(cfg).await?;
            Ok((Arc::new(pg.clone()), Some(pg)))
        }
    }
}

async fn open_postgres(cfg: &Config) -> Result<PgStore> {
    let p = &cfg.postgres;
    let url = p.url.as_deref().context("postgres.url is not set")?;
    let opts = PgOptions {
        max_connections: p.max_connections,
        acquire_timeout: Duration::from_secs(p.acquire_timeout_secs),
        ..PgOptions::default()
    };
    let store = PgStore::connect(url, opts)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {}", redact_url(url)))?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating the schema at {}", redact_url(url)))?;
    Ok(store)
}

/// The configured embedder and, while re-embedding, the next one, as the
/// store's model state makes them active or next (see `engram_core::reembed`).
pub(crate) async fn open_embedders(cfg: &Config, store: &Arc<dyn Store>) -> Result<Embedders> {
    let primary = open_embedder(cfg, &cfg.embedder)?;
    let next = match &cfg.embedder.next {
        Some(n) => Some(open_embedder(cfg, n).context("embedder.next")?),
        None => None,
    };
    let state = store.init_model(primary.model()).await?;
    Ok(engram_core::reembed::pick(&state, primary, next)?)
}

/// The embedder `e` configures, making its vectors with `e.recipe`.
fn open_embedder(cfg: &Config, e: &EmbedderConfig) -> Result<Arc<dyn Embedder>> {
    Ok(engram_core::context::with_recipe(
        open_model(cfg, e)?,
        e.recipe,
    ))
}

fn open_model(cfg: &Config, e: &EmbedderConfig) -> Result<Arc<dyn Embedder>> {
    if e.kind == EmbedderKind::Openai {
        let opts = OpenAiEmbedderOptions {
            base_url: e.base_url.clone().context("embedder.base_url is not set")?,
            model: e.model.clone().context("embedder.model is not set")?,
            version: e.version.clone(),
            dims: e.dims,
            api_key: e.api_key.clone(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(e.timeout_secs),
        };
        return Ok(Arc::new(OpenAiEmbedder::new(opts).context("embedder")?));
    }
    let dir = e.model_dir.as_ref().unwrap_or(&cfg.model_dir);
    let e = LocalEmbedder::load(dir).with_context(|| {
        format!(
            "loading the embedding model from {} (run scripts/fetch-model.sh)",
            dir.display()
        )
    })?;
    Ok(Arc::new(e))
}

/// The chat server of `/v1/ask`, if one is configured. Not contacted here:
/// an LLM that is down makes `/v1/ask` answer 503, not the node fail to start.
fn open_llm(cfg: &Config) -> Result<Option<Arc<dyn Llm>>> {
    let l = &cfg.llm;
    let (Some(base_url), Some(model)) = (&l.base_url, &l.model) else {
        return Ok(None);
    };
    let opts = OpenAiChatOptions {
        base_url: base_url.clone(),
        model: model.clone(),
        api_key: l.api_key.clone(),
        connect_timeout: Duration::from_millis(l.connect_timeout_ms),
        first_token_timeout: Duration::from_secs(l.first_token_timeout_secs),
        timeout: Duration::from_secs(l.timeout_secs),
    };
    Ok(Some(Arc::new(OpenAiChat::new(opts).context("llm")?)))
}

pub(crate) async fn open_queue(cfg: &Config, store: Arc<dyn Store>) -> Result<Arc<dyn JobQueue>> {
    let lease = Duration::from_secs(cfg.job_lease_secs);
    match cfg.queue {
        QueueKind::Local => Ok(Arc::new(StoreQueue::new(store, lease, retry_policy(cfg)))),
        QueueKind::Nats => {
            let n = &cfg.nats;
            let url = n.url.as_deref().context("nats.url is not set")?;
            let opts = NatsOptions {
                prefix: n.prefix.clone(),
                lease,
                max_deliver: n.max_deliver,
                republish_after: Duration::from_secs(n.republish_after_secs).max(lease),
                retry: retry_policy(cfg),
                ..NatsOptions::default()
            };
            let q = NatsQueue::connect(url, store, opts)
                .await
                .with_context(|| format!("cannot use NATS JetStream at {}", redact_url(url)))?;
            Ok(Arc::new(q))
        }
    }
}

async fn open_cache(cfg: &Config) -> Result<Arc<dyn Cache>> {
    match cfg.cache {
        CacheKind::Memory => Ok(Arc::new(MemoryCache::new(
            engine_config(cfg).query_cache_entries,
        ))),
        CacheKind::Redis => {
            let url = cfg.redis.url.as_deref().context("redis.url is not set")?;
            let c = RedisCache::connect(url, &cfg.redis.prefix)
                .await
                .with_context(|| format!("cannot reach Redis at {}", redact_url(url)))?;
            Ok(Arc::new(c))
        }
    }
}

/// The vector index of one model: in PostgreSQL, pgvector's HNSW for its
/// dimension; embedded, a usearch index in a directory of its own (by model
/// version), so an index can never be loaded for another model's queries.
async fn open_vectors(
    cfg: &Config,
    pg: Option<&PgStore>,
    model: &ModelInfo,
) -> engram_core::Result<Arc<dyn VectorIndex>> {
    if let Some(pg) = pg {
        let p = &cfg.postgres;
        let opts = PgVectorOptions {
            m: p.hnsw_m,
            ef_construction: p.hnsw_ef_construction,
            ef_search: p.hnsw_ef_search,
            model_version: Some(model.version.clone()),
            ..PgVectorOptions::default()
        };
        return Ok(Arc::new(
            PgVectorIndex::open(pg.pool().clone(), model.dims, opts).await?,
        ));
    }
    let v = &cfg.vector;
    let index = UsearchIndex::open(
        &vector_dir(&cfg.data_dir, model),
        model.dims,
        VectorOptions {
            connectivity: v.connectivity,
            expansion_add: v.expansion_add,
            expansion_search: v.expansion_search,
            exact_threshold: v.exact_threshold,
        },
    )
    .map_err(|e| engram_core::Error::internal(format!("opening the vector index: {e}")))?;
    Ok(Arc::new(index))
}

/// `<data_dir>/index/vectors-<first 12 hex digits of sha256(model version)>`.
fn vector_dir(data_dir: &std::path::Path, model: &ModelInfo) -> std::path::PathBuf {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(model.version.as_bytes()));
    data_dir.join("index").join(format!("vectors-{}", &h[..12]))
}

/// Remove vector indexes of models that are neither active nor next (left by
/// a finished re-embedding, or the unversioned `vectors` of older releases).
fn remove_stale_vector_dirs(data_dir: &std::path::Path, keep: &[&ModelInfo]) {
    let keep: Vec<std::path::PathBuf> = keep.iter().map(|m| vector_dir(data_dir, m)).collect();
    let Ok(entries) = std::fs::read_dir(data_dir.join("index")) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name == "vectors" || name.starts_with("vectors-")) && !keep.contains(&path) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an old model's vector index")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an old vector index")
                }
            }
        }
    }
}

async fn open_indexes(
    cfg: &Config,
    pg: Option<&PgStore>,
    model: &ModelInfo,
) -> Result<(Arc<dyn VectorIndex>, Arc<dyn KeywordIndex>)> {
    let vectors = open_vectors(cfg, pg, model)
        .await
        .context("opening the vector index")?;
    if let Some(pg) = pg {
        let p = &cfg.postgres;
        let kw = PgKeywordOptions {
            match_budget: p.keyword_match_budget,
            common_cutoff: p.keyword_common_cutoff,
            ..PgKeywordOptions::default()
        };
        let keywords = PgKeywordIndex::open_with(pg.pool().clone(), kw)
            .await
            .context("opening the full-text index")?;
        return Ok((vectors, Arc::new(keywords)));
    }
    let keywords = TantivyIndex::open(
        &cfg.data_dir.join("index").join("keywords"),
        &recipe(cfg).id(),
    )
    .context("opening the keyword index")?;
    Ok((vectors, Arc::new(keywords)))
}

pub async fn open_engine(cfg: &Config) -> Result<Arc<Engine>> {
    let (store, pg) = open_store(cfg).await?;
    let Embedders {
        primary: embedder,
        next,
    } = open_embedders(cfg, &store).await?;
    if pg.is_none() {
        let mut keep = vec![embedder.model()];
        keep.extend(next.as_ref().map(|n| n.model()));
        remove_stale_vector_dirs(&cfg.data_dir, &keep);
    }
    let (vectors, keywords) = open_indexes(cfg, pg.as_ref(), embedder.model()).await?;
    let next = next.map(|e| {
        let (cfg, pg, model) = (cfg.clone(), pg.clone(), e.model().clone());
        let open_index: engram_core::reembed::OpenIndex = Arc::new(move || {
            let (cfg, pg, model) = (cfg.clone(), pg.clone(), model.clone());
            Box::pin(async move { open_vectors(&cfg, pg.as_ref(), &model).await })
        });
        NextModel {
            embedder: e,
            open_index,
        }
    });
    let backends = Backends {
        queue: open_queue(cfg, store.clone()).await?,
        cache: open_cache(cfg).await?,
        store,
        vectors,
        keywords,
        embedder,
        next,
        llm: open_llm(cfg)?,
    };
    Ok(Engine::open(backends, engine_config(cfg)).await?)
}
