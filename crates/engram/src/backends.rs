//! Back-end wiring: the only place that picks concrete implementations.
//! Embedded (`store = "sqlite"`): SQLite, usearch + tantivy under the data
//! directory, the store's job table as the queue, an in-process cache.
//! Scale-out (`store = "postgres"`, `queue = "nats"`, `cache = "redis"`):
//! PostgreSQL + pgvector + full-text search, NATS JetStream and Redis, with
//! nothing on local disk. Every node migrates the schema at start (under an
//! advisory lock) and fails fast with a clear message when a back-end is
//! unreachable.

use anyhow::Context;
use engram_core::reembed::NextModel;
use engram_core::{
    Backends, Cache, EmbedWorker, Embedder, Embedders, Engine, EngineConfig, JobQueue,
    KeywordIndex, Llm, MemoryCache, ModelInfo, NewApiKey, Permission, Principal, RagConfig,
    RetryPolicy, Role, Store, StoreAdmin, StoreQueue, VectorIndex,
};
use engram_embed::LocalEmbedder;
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use engram_llm::{OpenAiChat, OpenAiChatOptions, OpenAiEmbedder, OpenAiEmbedderOptions};
use engram_nats::{NatsOptions, NatsQueue};
use engram_postgres::{
    PgKeywordIndex, PgKeywordOptions, PgOptions, PgStore, PgVectorIndex, PgVectorOptions,
};
use engram_redis::RedisCache;
use engram_server::{AuthSettings, RateLimit, ServerConfig};
use engram_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
async fn open_store(cfg: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<PgStore>)> {
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

async fn open_postgres(cfg: &Config) -> anyhow::Result<PgStore> {
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

/// `engram migrate`: bring the configured store's schema up to date.
pub async fn migrate(cfg: Config) -> anyhow::Result<()> {
    // Opening either store applies its pending migrations.
    open_store(&cfg).await?;
    eprintln!("schema up to date ({:?} store)", cfg.store);
    Ok(())
}

/// The configured embedder and, while re-embedding, the next one, as the
/// store's model state makes them active or next (see `engram_core::reembed`).
async fn open_embedders(cfg: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Embedders> {
    let primary = open_embedder(cfg, &cfg.embedder)?;
    let next = match &cfg.embedder.next {
        Some(n) => Some(open_embedder(cfg, n).context("embedder.next")?),
        None => None,
    };
    let state = store.init_model(primary.model()).await?;
    Ok(engram_core::reembed::pick(&state, primary, next)?)
}

/// The embedder `e` configures, making its vectors with `e.recipe`.
fn open_embedder(cfg: &Config, e: &EmbedderConfig) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(engram_core::context::with_recipe(
        open_model(cfg, e)?,
        e.recipe,
    ))
}

fn open_model(cfg: &Config, e: &EmbedderConfig) -> anyhow::Result<Arc<dyn Embedder>> {
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
fn open_llm(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Llm>>> {
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

async fn open_queue(cfg: &Config, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn JobQueue>> {
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

async fn open_cache(cfg: &Config) -> anyhow::Result<Arc<dyn Cache>> {
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
) -> anyhow::Result<(Arc<dyn VectorIndex>, Arc<dyn KeywordIndex>)> {
    let vectors = open_vectors(cfg, pg, model)
        .await
        .context("opening the vector index")?;
    if let Some(pg) = pg {
        let p = &cfg.postgres;
        let kw = PgKeywordOptions {
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

pub async fn open_engine(cfg: &Config) -> anyhow::Result<Arc<Engine>> {
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let engine = open_engine(&cfg).await?;
    let replayed = engine.catch_up().await?;
    tracing::info!(replayed, model = %engine.model().version, "indexes caught up");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(engine.clone().run_indexer(stop_rx.clone()))];
    for _ in 0..cfg.workers {
        tasks.push(tokio::spawn(engine.worker().run(stop_rx.clone())));
    }
    tasks.push(tokio::spawn(sweeper(
        engine.clone(),
        Duration::from_secs(cfg.retention.sweep_interval_secs),
        stop_rx.clone(),
    )));
    let app = engram_server::router(engine.clone(), server_config(&cfg)?);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %cfg.data_dir.display(),
        tls = cfg.tls.is_some(),
        auth = cfg.auth.enabled,
        "engram listening"
    );
    let tls = cfg
        .tls
        .as_ref()
        .map(engram_server::server_config)
        .transpose()?;
    engram_server::serve(
        listener,
        app,
        tls,
        Duration::from_secs(cfg.request_timeout_secs),
        shutdown_signal(),
        crate::SHUTDOWN_GRACE,
    )
    .await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE, t).await;
    }
    Ok(())
}

pub async fn worker(cfg: Config) -> anyhow::Result<()> {
    let (store, _) = open_store(&cfg).await?;
    let embedders = open_embedders(&cfg, &store).await?;
    let q = open_queue(&cfg, store.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..cfg.workers.max(1) {
        let w = EmbedWorker::new(
            q.clone(),
            store.clone(),
            embedders.clone(),
            cfg.worker_batch,
        );
        tasks.push(tokio::spawn(w.run(stop_rx.clone())));
    }
    tracing::info!(workers = tasks.len(), "embedding workers running");
    // Health and metrics for probes and Prometheus (this node serves no API).
    if let Some(addr) = &cfg.worker_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("worker_listen {addr}"))?;
        let app = engram_server::worker_router(q.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        });
        tracing::info!(addr = %addr, "worker health and metrics listening");
    }
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE, t).await;
    }
    Ok(())
}

pub async fn rebuild(cfg: Config) -> anyhow::Result<()> {
    let engine = open_engine(&cfg).await?;
    let started = std::time::Instant::now();
    let total = engine.totals().await?.store.max_seq;
    let report = crate::progress::start("rebuild", "changes", total, engine.indexed_position());
    let n = engine.rebuild().await;
    drop(report);
    let n = n?;
    let stats = engine
        .stats(&Principal::new(cfg.tenant.clone(), "local", Role::Admin))
        .await?;
    eprintln!(
        "rebuilt from {n} changes in {:.1}s: {} vectors, {} keyword documents",
        started.elapsed().as_secs_f64(),
        stats.vectors,
        stats.keywords
    );
    Ok(())
}

fn server_config(cfg: &Config) -> anyhow::Result<ServerConfig> {
    let a = &cfg.auth;
    let jwt = match &a.jwt {
        Some(j) => Some(Arc::new(
            engram_auth::JwtVerifier::new(j).context("auth.jwt")?,
        )),
        None => None,
    };
    let anonymous = if a.enabled {
        None
    } else {
        tracing::warn!(
            tenant = %cfg.tenant,
            "auth.enabled = false: requests without credentials act as an admin of the tenant; never expose this server"
        );
        Some(Principal::new(cfg.tenant.clone(), "anonymous", Role::Admin))
    };
    let rate_limit = match (
        std::num::NonZeroU32::new(a.rate_limit_per_second),
        std::num::NonZeroU32::new(a.rate_limit_burst),
    ) {
        (Some(per_second), Some(burst)) => Some(RateLimit { per_second, burst }),
        _ => None,
    };
    Ok(ServerConfig {
        max_body_bytes: cfg.max_body_bytes,
        wait_timeout: Duration::from_secs(cfg.wait_timeout_secs),
        auth: AuthSettings { jwt, anonymous },
        rate_limit,
        cors_origins: a.cors_origins.clone(),
        metrics_require_auth: a.metrics_require_auth,
        body_timeout: Duration::from_secs(cfg.request_timeout_secs),
    })
}

/// Expire memories past their TTL and purge old deletions, periodically.
async fn sweeper(engine: Arc<Engine>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match engine.sweep().await {
            Ok(r) if r.expired + r.purged > 0 => {
                tracing::info!(expired = r.expired, purged = r.purged, "retention sweep")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
        }
    }
}

/// The operator at the console: an admin of the tenant, by virtue of holding
/// the data directory.
fn console(cfg: &Config, tenant: Option<String>) -> Principal {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Principal::new(
        tenant.unwrap_or_else(|| cfg.tenant.clone()),
        format!("cli:{user}"),
        Role::Admin,
    )
}

pub async fn keys(cfg: &Config, tenant: Option<String>, cmd: crate::KeysCmd) -> anyhow::Result<()> {
    let admin = StoreAdmin::new(open_store(cfg).await?.0);
    let p = console(cfg, tenant);
    let out = match cmd {
        crate::KeysCmd::Create {
            name,
            role,
            namespaces,
            permissions,
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("unknown role {role:?}: use admin, writer or reader"))?;
            let permissions = permissions
                .iter()
                .map(|s| Permission::parse(s).with_context(|| format!("unknown permission {s:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let req = NewApiKey {
                name,
                role,
                namespaces: (!namespaces.is_empty()).then_some(namespaces),
                permissions,
            };
            serde_json::to_value(
                admin
                    .create_api_key(&p, req, engram_auth::apikey::mint())
                    .await?,
            )?
        }
        crate::KeysCmd::List => serde_json::json!({ "keys": admin.api_keys(&p).await? }),
        crate::KeysCmd::Revoke { id } => {
            serde_json::to_value(admin.revoke_api_key(&p, &id).await?)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn audit(
    cfg: &Config,
    tenant: Option<String>,
    cmd: crate::AuditCmd,
) -> anyhow::Result<()> {
    let admin = StoreAdmin::new(open_store(cfg).await?.0);
    let p = console(cfg, tenant);
    let report = match cmd {
        crate::AuditCmd::Verify => admin.verify_audit(&p).await?,
        crate::AuditCmd::Export { out } => {
            let bundle = admin.audit_bundle(&p).await?;
            // Whole or not at all: a proof cut short by a crash is useless.
            engram_fs::write_atomic(&out, &serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} events and {} record checksums to {}",
                bundle.events.len(),
                bundle.records.len(),
                out.display()
            );
            bundle.verify
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        anyhow::bail!("the audit chain is broken at event {:?}", report.broken_at);
    }
    Ok(())
}
