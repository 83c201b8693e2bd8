//! Routes and their (thin) handlers.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use engram_core::requests::{
    ListRequest, MemoryInput, MemoryUpdate, NamespaceSettings, SearchRequest,
};
use engram_core::{AskRequest, AuditQuery, Code, Error, JobState, NewApiKey};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, Json, Path, Query};
use crate::AppState;

type ApiResult<T = Response> = Result<T, ApiError>;

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let body_timeout = state.cfg.body_timeout;
    let cors = cors(&state.cfg.cors_origins);
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/v1/memories", post(create).get(list_get))
        .route("/v1/memories/list", post(list_post))
        .route(
            "/v1/memories/{id}",
            get(get_memory).patch(update).delete(delete),
        )
        .route("/v1/memories/{id}/restore", post(restore))
        .route("/v1/search", post(search))
        .route("/v1/ask", post(ask))
        .route("/v1/namespaces", get(namespaces))
        .route("/v1/namespaces/{name}", put(set_namespace))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/retry", post(retry_job))
        .route("/v1/stats", get(stats))
        .route("/v1/quarantine", get(quarantine))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(Code::Internal, "the server hit a bug handling this request")
                .into_response()
        }))
        // Every log line of a request carries its id (set by the outer layer
        // below, or the client's `x-request-id`), also in JSON logs. When
        // traces are exported, the span is named by route (layers run after
        // routing, so the matched path is known), continues the caller's W3C
        // `traceparent`, and `metrics::track` records the outcome.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str());
                let name = match route {
                    Some(r) => format!("{} {r}", req.method()),
                    None => req.method().to_string(),
                };
                let span = tracing::info_span!(
                    "request",
                    method = %req.method(),
                    // The path only: a query string may carry filter values.
                    path = %req.uri().path(),
                    request_id = %header("x-request-id").unwrap_or(""),
                    otel.name = name,
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    http.route = route,
                    http.response.status_code = tracing::field::Empty,
                );
                if let Some(tp) = header("traceparent") {
                    engram_core::telemetry::set_parent(&span, tp);
                }
                span
            }),
        )
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn(crate::limits::head_limits))
        .layer(axum::middleware::from_fn(crate::limits::json_errors))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state);
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

/// CORS only for explicitly configured origins; none by default.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
            ]),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(Code::RouteNotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Per-check timeout of `/readyz?verbose=true`: the checks run at once, so
/// the whole probe answers within about this long.
const PROBE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Deserialize)]
struct ReadyParams {
    #[serde(default)]
    verbose: bool,
}

/// `/readyz`: cheap (store up, indexes caught up). `?verbose=true`: every
/// back-end checked with its latency; 200 when ok or degraded (only the LLM
/// down), 503 when failing.
async fn readyz(State(s): State<AppState>, Query(q): Query<ReadyParams>) -> ApiResult {
    if q.verbose {
        let report = s.engine.probe(PROBE_CHECK_TIMEOUT).await;
        let status = if report.status.serving() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok((status, Json(report)).into_response());
    }
    s.engine.ready().await?;
    Ok(Json(json!({"status": "ready"})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParam {
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    memories: Vec<MemoryInput>,
}

/// `POST /v1/memories`: `{"namespace", ...one memory}` or
/// `{"namespace", "memories": [...]}`. 202 once durable; with `?wait=true`,
/// 201 once searchable (202 if that took longer than the wait timeout).
async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<WaitParam>,
    Json(body): Json<Value>,
) -> ApiResult {
    let shape = |m: &str| ApiError::new(Code::InvalidBody, m);
    let Value::Object(mut obj) = body else {
        return Err(shape("body must be a JSON object"));
    };
    let namespace = match obj.remove("namespace") {
        Some(Value::String(ns)) => ns,
        Some(_) => return Err(shape("namespace must be a string")),
        None => return Err(shape("missing field `namespace`")),
    };
    let batch = obj.contains_key("memories");
    let items = if batch {
        serde_json::from_value::<Batch>(Value::Object(obj))
            .map_err(body_error)?
            .memories
    } else {
        vec![serde_json::from_value::<MemoryInput>(Value::Object(obj)).map_err(body_error)?]
    };
    let created = s.engine.create(&p, &namespace, items).await?;
    let mut status = StatusCode::ACCEPTED;
    if q.wait {
        let ids: Vec<Uuid> = created.iter().map(|(c, _)| c.id).collect();
        if s.engine
            .wait_searchable(&ids, &p, s.cfg.wait_timeout)
            .await?
        {
            status = StatusCode::CREATED;
        }
    }
    let mut out: Vec<Value> = Vec::with_capacity(created.len());
    for (c, _) in &created {
        let mut v = serde_json::to_value(c).map_err(Error::internal)?;
        if q.wait {
            // Report the state after waiting, not the one at insert time.
            if let Ok(state) = s.engine.state(&p, c.id).await {
                v["state"] = json!(state);
            }
        }
        out.push(v);
    }
    let body = if batch {
        json!({ "memories": out })
    } else {
        out.pop().unwrap_or(Value::Null)
    };
    Ok((status, Json(body)).into_response())
}

fn body_error(e: serde_json::Error) -> ApiError {
    ApiError::new(Code::InvalidBody, e.to_string())
}

async fn get_memory(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<Uuid>,
) -> ApiResult {
    Ok(Json(s.engine.get(&p, id).await?).into_response())
}

async fn update(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<WaitParam>,
    Json(u): Json<MemoryUpdate>,
) -> ApiResult {
    let mut m = s.engine.update(&p, id, u).await?;
    if q.wait
        && s.engine
            .wait_searchable(&[id], &p, s.cfg.wait_timeout)
            .await?
    {
        m = s.engine.get(&p, id).await?;
    }
    Ok(Json(m).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    /// Erase the content now (admins only) instead of a restorable soft delete.
    #[serde(default)]
    hard: bool,
}

async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<DeleteParams>,
) -> ApiResult {
    s.engine.delete(&p, id, q.hard).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restore(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<Uuid>) -> ApiResult {
    Ok(Json(s.engine.restore(&p, id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    namespace: Option<String>,
    /// A filter as URL-encoded JSON.
    filter: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<ListParams>,
) -> ApiResult {
    let filter = match q.filter {
        Some(f) => Some(
            serde_json::from_str(&f)
                .map_err(|e| Error::InvalidFilter(format!("filter is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let req = ListRequest {
        namespace: q.namespace,
        filter,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.engine.list(&p, req).await?).into_response())
}

async fn list_post(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<ListRequest>,
) -> ApiResult {
    Ok(Json(s.engine.list(&p, req).await?).into_response())
}

async fn search(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<SearchRequest>,
) -> ApiResult {
    Ok(Json(s.engine.search(&p, req).await?).into_response())
}

async fn ask(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<AskRequest>,
) -> ApiResult {
    let streaming = req.stream;
    let asking = s.engine.ask(&p, req).await?;
    if streaming {
        crate::ask::stream(asking).await
    } else {
        Ok(Json(asking.collect().await?).into_response())
    }
}

async fn namespaces(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    let ns = s.engine.namespaces(&p).await?;
    Ok(Json(json!({ "namespaces": ns })).into_response())
}

async fn set_namespace(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Json(settings): Json<NamespaceSettings>,
) -> ApiResult {
    Ok(Json(s.engine.set_namespace(&p, &name, settings).await?).into_response())
}

async fn create_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<NewApiKey>,
) -> ApiResult {
    let created = s.engine.admin().create_api_key(&p, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_keys(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(json!({ "keys": s.engine.admin().api_keys(&p).await? })).into_response())
}

async fn revoke_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(Json(s.engine.admin().revoke_api_key(&p, &id).await?).into_response())
}

async fn audit(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let events = s.engine.admin().audit_events(&p, q).await?;
    let next = events.last().map(|e| e.n);
    Ok(Json(json!({ "events": events, "next_after": next })).into_response())
}

async fn audit_verify(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(s.engine.admin().verify_audit(&p).await?).into_response())
}

async fn audit_export(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(s.engine.admin().audit_bundle(&p).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    state: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn jobs(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<JobParams>,
) -> ApiResult {
    let state = match q.state.as_deref() {
        None => None,
        Some(st) => Some(JobState::parse(st).ok_or_else(|| {
            ApiError::new(
                Code::InvalidQuery,
                format!("unknown job state {st:?}: use queued, running or dead"),
            )
        })?),
    };
    let jobs = s
        .engine
        .jobs(&p, state, q.after, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

async fn job(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<u64>) -> ApiResult {
    Ok(Json(s.engine.job(&p, id).await?).into_response())
}

async fn retry_job(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<u64>) -> ApiResult {
    Ok(Json(s.engine.retry_job(&p, id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineParams {
    limit: Option<usize>,
}

/// `GET /v1/quarantine`: the tenant's rows that cannot be decoded (admins).
async fn quarantine(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<QuarantineParams>,
) -> ApiResult {
    let entries = s
        .engine
        .quarantined(&p, None, q.limit.unwrap_or(100))
        .await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "memory_id": e.memory_id,
                "source": e.source,
                "error": e.error,
                "first_seen": e.first_seen,
                "last_seen": e.last_seen,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn stats(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(s.engine.stats(&p).await?).into_response())
}

/// OpenAI-style `input`: one string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: EmbeddingInput,
    /// Accepted for OpenAI compatibility; must name the served model if given.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// `POST /v1/embeddings`, OpenAI-compatible, served by the local model.
async fn embeddings(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<EmbeddingsRequest>,
) -> ApiResult {
    let served = s.engine.model().clone();
    if let Some(m) = &req.model {
        if *m != served.name {
            return Err(Error::invalid(format!(
                "model {m:?} is not served here; this server embeds with {:?}",
                served.name
            ))
            .into());
        }
    }
    if req.encoding_format.as_deref().is_some_and(|f| f != "float") {
        return Err(Error::invalid("only encoding_format \"float\" is supported").into());
    }
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(ts) => ts,
    };
    let vectors = s.engine.embed(&p, texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": served.name,
        "model_version": served.version,
    }))
    .into_response())
}
