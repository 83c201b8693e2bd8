//! Prometheus metrics: per-route request counts and latencies recorded by a
//! middleware, engine histograms (search, embedding) recorded where they
//! happen through the `metrics` facade, and store-wide gauges refreshed at
//! each scrape.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

use crate::error::ApiError;
use crate::AppState;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide recorder (installed on first use) and its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding apps): then
            // ours renders only what it is given, which is still well-formed.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Count and time every request by route template (not raw path, so ids do
/// not explode the label set) and status.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    // The request span (see `routes::router`) gets the outcome for traces.
    let span = tracing::Span::current();
    let started = Instant::now();
    let res = next.run(req).await;
    span.record("http.response.status_code", res.status().as_u16());
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let status = res.status().as_u16().to_string();
    metrics::counter!("engram_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("engram_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// Prometheus metrics in the text format (open unless the server requires
/// an admin credential for it).
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub(crate) async fn render(
    State(s): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    if s.cfg.metrics_require_auth {
        let p = crate::auth::authenticate(&parts, &s).await?;
        p.authorize(engram_core::Action::Admin)?;
    }
    let t = s.engine.totals().await?;
    let g = |name: &'static str, v: u64| metrics::gauge!(name).set(v as f64);
    g("engram_memories", t.store.memories);
    g("engram_memories_pending", t.store.pending);
    g("engram_memories_failed", t.store.failed);
    g("engram_memories_deleted", t.store.deleted);
    g("engram_jobs_queued", t.store.jobs_queued);
    g("engram_jobs_dead", t.store.jobs_dead);
    g("engram_quarantined_rows", t.quarantined);
    // Queue age: how long the oldest unfinished job has waited (0 when none).
    let age = t
        .store
        .oldest_job_at
        .map(|at| (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("engram_jobs_oldest_age_seconds").set(age);
    g("engram_index_vectors", t.vectors as u64);
    g("engram_index_keywords", t.keywords as u64);
    g(
        "engram_index_lag_changes",
        t.store.max_seq.saturating_sub(t.indexed_seq),
    );
    // Memories a running re-embedding still has to move (0 when none runs).
    g(
        "engram_reembed_remaining",
        t.reembed.map_or(0, |r| r.total.saturating_sub(r.done)),
    );
    Ok(text_response(s.metrics.render()))
}

/// A rendered scrape with the Prometheus text content type.
pub(crate) fn text_response(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
