//! engram-server: the HTTP/JSON API over the engine.
//!
//! Handlers stay thin: parse, identify the caller, call one engine function,
//! map the result. Every error leaves as `{"error":{"code","message"}}` with a
//! status chosen in one exhaustive match ([`error`]).

pub mod error;
mod extract;
mod routes;

use axum::Router;
use engram_core::{Engine, Principal};
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest a `?wait=true` write waits for its memories to become searchable.
    pub wait_timeout: Duration,
    /// The principal every request acts as until authentication lands: a
    /// single configured tenant.
    pub principal: Principal,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub cfg: Arc<ServerConfig>,
}

/// The complete router, with body limits, request ids, tracing and panic
/// catching.
pub fn router(engine: Arc<Engine>, cfg: ServerConfig) -> Router {
    routes::router(AppState {
        engine,
        cfg: Arc::new(cfg),
    })
}
