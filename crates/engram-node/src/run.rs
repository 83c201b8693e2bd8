//! The node's lifecycle: `serve` (API, indexer, embedding workers,
//! retention sweeper), `worker` (embedding only, with health and metrics),
//! `rebuild` and `migrate`. Each runs until SIGTERM or Ctrl-C, then stops
//! taking work and gives running tasks [`SHUTDOWN_GRACE`] to finish.

use engram_core::{EmbedWorker, Engine, Principal, Role};
use engram_server::{AuthSettings, RateLimit, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Context, Result};
use crate::open::{open_embedders, open_engine, open_queue, open_store};

/// How long running work may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `engram migrate`: bring the configured store's schema up to date.
pub async fn migrate(cfg: Config) -> Result<()> {
    // Opening either store applies its pending migrations.
    open_store(&cfg).await?;
    Ok(())
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

pub async fn serve(cfg: Config) -> Result<()> {
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
        addr = %listener.local_addr().context("reading the bound address")?,
        data_dir = %cfg.data_dir.display(),
        tls = cfg.tls.is_some(),
        auth = cfg.auth.enabled,
        "engram listening"
    );
    let tls = cfg
        .tls
        .as_ref()
        .map(engram_server::server_config)
        .transpose()
        .context("tls")?;
    engram_server::serve(
        listener,
        app,
        tls,
        Duration::from_secs(cfg.request_timeout_secs),
        shutdown_signal(),
        SHUTDOWN_GRACE,
    )
    .await
    .context("serving HTTP")?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, t).await;
    }
    Ok(())
}

pub async fn worker(cfg: Config) -> Result<()> {
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
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, t).await;
    }
    Ok(())
}

/// What `rebuild` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    /// Changes replayed from the store's feed.
    pub changes: u64,
    pub seconds: f64,
    pub vectors: usize,
    pub keywords: usize,
}

/// `engram rebuild`: drop the derived indexes and replay the store's feed
/// into them, reporting progress on stderr.
pub async fn rebuild(cfg: Config) -> Result<Rebuilt> {
    let engine = open_engine(&cfg).await?;
    let started = std::time::Instant::now();
    let total = engine.totals().await?.store.max_seq;
    let report = crate::progress::start("rebuild", "changes", total, engine.indexed_position());
    let n = engine.rebuild().await;
    drop(report);
    let changes = n?;
    let stats = engine
        .stats(&Principal::new(cfg.tenant.clone(), "local", Role::Admin))
        .await?;
    Ok(Rebuilt {
        changes,
        seconds: started.elapsed().as_secs_f64(),
        vectors: stats.vectors,
        keywords: stats.keywords,
    })
}

fn server_config(cfg: &Config) -> Result<ServerConfig> {
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
        mcp_default_namespace: cfg.mcp.default_namespace.clone(),
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
