//! engram-server: the HTTP/JSON API over the engine.
//!
//! Handlers stay thin: parse, identify the caller, call one engine function,
//! map the result. Every error leaves as `{"error":{"code","message"}}` with a
//! status chosen in one exhaustive match ([`error`]).

mod ask;
mod auth;
mod docs;
pub mod error;
mod extract;
pub mod limits;
mod mcp;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod serve;
mod sessions;
pub mod views;

use axum::Router;
use engram_core::Engine;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthSettings, RateLimit};
pub use error::ApiError;
pub use serve::{serve, server_config, ServeError, TlsConfig};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest a `?wait=true` write waits for its memories to become searchable.
    pub wait_timeout: Duration,
    pub auth: AuthSettings,
    /// Per-caller request rate; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Origins allowed to call the API from a browser; empty (the default)
    /// sends no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// `/metrics` needs an admin credential (by default it is open, like
    /// `/healthz`, for a Prometheus on the private network).
    pub metrics_require_auth: bool,
    /// Longest wait for the next piece of a request body (then 408
    /// `request_timeout`): a client that stops sending mid-body does not hold
    /// a connection and a task forever.
    pub body_timeout: Duration,
    /// The namespace MCP tools use when neither the call nor the `/mcp`
    /// URL (`?namespace=`) names one.
    pub mcp_default_namespace: Option<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub cfg: Arc<ServerConfig>,
    limiter: Option<Arc<auth::Limiter>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The OpenAPI document, rendered once.
    openapi: Arc<String>,
}

/// The ops endpoints of an `engram worker` node, which serves no API:
/// `/healthz`, `/readyz` (the job queue answers) and `/metrics` (the embed
/// batch latency and counts this node records).
pub fn worker_router(queue: Arc<dyn engram_core::JobQueue>) -> Router {
    use axum::routing::get;
    let metrics = metrics::handle();
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let queue = queue.clone();
                async move {
                    queue.ping().await.map_err(ApiError::from)?;
                    Ok::<_, ApiError>(axum::Json(serde_json::json!({"status": "ready"})))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { metrics::text_response(m.render()) }
            }),
        )
}

/// The complete router, with body limits, request ids, tracing and panic
/// catching.
pub fn router(engine: Arc<Engine>, cfg: ServerConfig) -> Router {
    routes::router(AppState {
        engine,
        limiter: cfg.rate_limit.map(|r| Arc::new(auth::Limiter::new(r))),
        metrics: metrics::handle(),
        cfg: Arc::new(cfg),
        openapi: Arc::new(String::new()),
    })
}
