//! Routes and their (thin) handlers.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use engram_core::requests::{AuditBundle, SearchResponse};
use engram_core::requests::{
    ListRequest, ListSort, MemoryInput, MemoryUpdate, NamespaceSettings, SearchRequest,
};
use engram_core::{
    Answer, AskRequest, AuditQuery, Code, Error, JobState, NamespaceInfo, NewApiKey, VerifyReport,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, Json, Path, Query};
use crate::openapi::{
    AskStreamEvent, AuditPage, ChatCompletionBody, CreateBody, CreateResult, Embedding,
    EmbeddingVector, EmbeddingsResponse, JobList, KeyList, ModelCard, ModelList, NamespaceList,
    QuarantineList, ReadyBody,
};
use crate::views::*;
use crate::AppState;

type ApiResult<T = Response> = Result<T, ApiError>;

/// A memory's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct IdParam {
    id: Uuid,
}

/// A namespace: 1 to 128 letters, digits and `_-:./@`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct NameParam {
    #[param(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    name: String,
}

/// An API key's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct KeyIdParam {
    id: String,
}

/// A job's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct JobIdParam {
    id: u64,
}

/// The API's routes, each with its OpenAPI operation: the router and the
/// document come from the same declarations, so they cannot drift apart.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(crate::metrics::render))
        .routes(routes!(create, list_get))
        .routes(routes!(list_post))
        .routes(routes!(get_memory, update, delete))
        .routes(routes!(restore))
        .routes(routes!(search))
        .routes(routes!(ask))
        .routes(routes!(namespaces))
        .routes(routes!(set_namespace))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(audit))
        .routes(routes!(audit_verify))
        .routes(routes!(audit_export))
        .routes(routes!(embeddings))
        .routes(routes!(models))
        .routes(routes!(chat_completions))
        .routes(routes!(jobs))
        .routes(routes!(job))
        .routes(routes!(retry_job))
        .routes(routes!(stats))
        .routes(routes!(quarantine))
        .routes(routes!(crate::sessions::append, crate::sessions::read))
        .routes(routes!(crate::sessions::delete))
}

pub fn router(mut state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let body_timeout = state.cfg.body_timeout;
    let cors = cors(&state.cfg.cors_origins);
    let (api, doc) = api().split_for_parts();
    state.openapi = std::sync::Arc::new(crate::openapi::finish(doc));
    let app = api
        .route(
            "/openapi.json",
            axum::routing::get(crate::openapi::serve_json),
        )
        .merge(crate::docs::routes())
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
        .with_state(state.clone());
    // MCP tools call the finished API (all its layers) in-process.
    let app = crate::mcp::routes(app.clone(), state).merge(app);
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

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Per-check timeout of `/readyz?verbose=true`: the checks run at once, so
/// the whole probe answers within about this long.
const PROBE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadyParams {
    /// Check every back-end and report each.
    #[serde(default)]
    verbose: bool,
}

/// Readiness: the store answers, the indexes follow it (caught up, not
/// stalled) and no rows are quarantined. `?verbose=true`: every back-end
/// checked, each with its latency and error (200 when ok or degraded, i.e.
/// only the LLM down; 503 when failing).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), params(ReadyParams),
    responses(
        (status = 200, description = "Ready (or the verbose report)", body = ReadyBody),
        (status = 503, description = "Not ready: the error, or the verbose report", body = ReadyBody),
    ))]
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
    Ok(Json(Status {
        status: "ready".into(),
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitParam {
    /// Answer once the memory is searchable (or the wait timeout passed).
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    memories: Vec<MemoryInput>,
}

/// Store one memory (`{"namespace", "text", ...}`) or a batch
/// (`{"namespace", "memories": [...]}`). 202 once durable; with
/// `?wait=true`, 201 once searchable (202 if that took longer than the
/// server's wait timeout). The same normalised text (or `client_id`) in a
/// namespace returns the existing memory with `"status": "duplicate"`.
#[utoipa::path(post, path = "/v1/memories", tag = "memories", params(WaitParam),
    request_body(content = CreateBody, description = "One memory, or a batch"),
    responses(
        (status = 201, description = "Searchable", body = CreateResult),
        (status = 202, description = "Durable, not yet searchable", body = CreateResult),
    ))]
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
    let mut out = Vec::with_capacity(created.len());
    for (c, _) in created {
        let mut state = c.state;
        if q.wait {
            // Report the state after waiting, not the one at insert time.
            if let Ok(now) = s.engine.state(&p, c.id).await {
                state = now;
            }
        }
        out.push(CreatedView {
            id: c.id,
            status: c.status.to_string(),
            state,
        });
    }
    let body = match (batch, out.pop()) {
        (false, Some(one)) => CreateResult::One(one),
        (_, last) => {
            out.extend(last);
            CreateResult::Batch(CreatedBatch { memories: out })
        }
    };
    Ok((status, Json(body)).into_response())
}

fn body_error(e: serde_json::Error) -> ApiError {
    ApiError::new(Code::InvalidBody, e.to_string())
}

/// One memory.
#[utoipa::path(get, path = "/v1/memories/{id}", tag = "memories", params(IdParam),
    responses((status = 200, description = "The memory", body = MemoryView)))]
async fn get_memory(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<Uuid>,
) -> ApiResult {
    Ok(Json(MemoryView::from(s.engine.get(&p, id).await?)).into_response())
}

/// Change a memory: a new `text` re-embeds it; `legal_hold` (admins)
/// places or releases a hold; `expires_at: null` clears the expiry.
#[utoipa::path(patch, path = "/v1/memories/{id}", tag = "memories", params(IdParam, WaitParam),
    request_body = MemoryUpdate,
    responses((status = 200, description = "The memory after the change", body = MemoryView)))]
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
    Ok(Json(MemoryView::from(m)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteParams {
    /// Erase the content now (admins only) instead of a restorable soft delete.
    #[serde(default)]
    hard: bool,
}

/// Delete a memory: soft (restorable until purged), or `hard=true`
/// (admins: the content is erased now).
#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "memories", params(IdParam, DeleteParams),
    responses((status = 204, description = "Deleted")))]
async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<DeleteParams>,
) -> ApiResult {
    s.engine.delete(&p, id, q.hard).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Undo a soft delete.
#[utoipa::path(post, path = "/v1/memories/{id}/restore", tag = "memories", params(IdParam),
    responses((status = 200, description = "The restored memory", body = MemoryView)))]
async fn restore(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<Uuid>) -> ApiResult {
    Ok(Json(MemoryView::from(s.engine.restore(&p, id).await?)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// One namespace; absent: every namespace the caller sees.
    #[param(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    namespace: Option<String>,
    /// A filter as URL-encoded JSON (see the filter language).
    filter: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `inserted` (default), `occurred_at` or `occurred_at_desc`.
    sort: Option<ListSort>,
}

/// List memories in insertion or event-time order, with a filter and cursor pagination.
#[utoipa::path(get, path = "/v1/memories", tag = "memories", params(ListParams),
    responses((status = 200, description = "A page", body = PageView)))]
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
        sort: q.sort.unwrap_or_default(),
    };
    Ok(Json(PageView::from(s.engine.list(&p, req).await?)).into_response())
}

/// List memories, the filter as JSON in the body.
#[utoipa::path(post, path = "/v1/memories/list", tag = "memories", request_body = ListRequest,
    responses((status = 200, description = "A page", body = PageView)))]
async fn list_post(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<ListRequest>,
) -> ApiResult {
    Ok(Json(PageView::from(s.engine.list(&p, req).await?)).into_response())
}

/// Hybrid (vector + BM25), vector or keyword search, with a filter; hits
/// carry each signal's score and rank.
#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, description = "The hits, best first", body = SearchResponse)))]
async fn search(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<SearchRequest>,
) -> ApiResult {
    Ok(Json(s.engine.search(&p, req).await?).into_response())
}

/// Answer a question from the memories through the configured LLM, with
/// numbered citations; `"stream": true` answers with server-sent events
/// `sources`, `token`..., then `done` or `error`.
#[utoipa::path(post, path = "/v1/ask", tag = "search", request_body = AskRequest,
    responses((status = 200, description = "The answer", content(
        (Answer = "application/json"),
        (AskStreamEvent = "text/event-stream"),
    ))))]
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

/// The caller's namespaces with their memory counts.
#[utoipa::path(get, path = "/v1/namespaces", tag = "namespaces",
    responses((status = 200, description = "Namespaces", body = NamespaceList)))]
async fn namespaces(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    let namespaces = s.engine.namespaces(&p).await?;
    Ok(Json(NamespaceList { namespaces }).into_response())
}

/// Set a namespace's default TTL for memories created from now on (admins).
#[utoipa::path(put, path = "/v1/namespaces/{name}", tag = "namespaces", params(NameParam),
    request_body = NamespaceSettings,
    responses((status = 200, description = "The namespace", body = NamespaceInfo)))]
async fn set_namespace(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Json(settings): Json<NamespaceSettings>,
) -> ApiResult {
    Ok(Json(s.engine.set_namespace(&p, &name, settings).await?).into_response())
}

/// Create an API key (admins). The token is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewApiKey,
    responses((status = 201, description = "The key and its token", body = CreatedKeyView)))]
async fn create_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Json(req): Json<NewApiKey>,
) -> ApiResult {
    let created = s
        .engine
        .admin()
        .create_api_key(&p, req, engram_auth::apikey::mint())
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedKeyView::from(created))).into_response())
}

/// The tenant's API keys (admins).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "Keys", body = KeyList)))]
async fn list_keys(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    let keys = s.engine.admin().api_keys(&p).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    })
    .into_response())
}

/// Revoke an API key (admins); revoking twice is harmless.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(KeyIdParam),
    responses((status = 200, description = "The revoked key", body = KeyView)))]
async fn revoke_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(Json(KeyView::from(
        s.engine.admin().revoke_api_key(&p, &id).await?,
    ))
    .into_response())
}

/// The tenant's hash-chained audit log, filtered, in chain order (admins).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Events", body = AuditPage)))]
async fn audit(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let events = s.engine.admin().audit_events(&p, q).await?;
    let next_after = events.last().map(|e| e.n);
    Ok(Json(AuditPage { events, next_after }).into_response())
}

/// Walk the tenant's chain and compare it with the recorded head (admins).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The verdict", body = VerifyReport)))]
async fn audit_verify(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(s.engine.admin().verify_audit(&p).await?).into_response())
}

/// A proof bundle: every event, the head, the verdict and the records'
/// checksums (admins).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    responses((status = 200, description = "The bundle", body = AuditBundle)))]
async fn audit_export(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(s.engine.admin().audit_bundle(&p).await?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobParams {
    /// `queued`, `running` or `dead`.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Jobs with a greater id (the last id of the previous page).
    after: Option<u64>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Embedding jobs, e.g. the dead letters (`state=dead`).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobParams),
    responses((status = 200, description = "Jobs", body = JobList)))]
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
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(JobView::from).collect(),
    })
    .into_response())
}

/// One embedding job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(JobIdParam),
    responses((status = 200, description = "The job", body = JobView)))]
async fn job(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<u64>) -> ApiResult {
    Ok(Json(JobView::from(s.engine.job(&p, id).await?)).into_response())
}

/// Put a dead-lettered job back in the queue.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(JobIdParam),
    responses((status = 200, description = "The job, queued", body = JobView)))]
async fn retry_job(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<u64>) -> ApiResult {
    Ok(Json(JobView::from(s.engine.retry_job(&p, id).await?)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct QuarantineParams {
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Stored rows of the tenant that cannot be decoded (admins).
#[utoipa::path(get, path = "/v1/quarantine", tag = "operations", params(QuarantineParams),
    responses((status = 200, description = "Quarantined rows", body = QuarantineList)))]
async fn quarantine(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<QuarantineParams>,
) -> ApiResult {
    let entries = s
        .engine
        .quarantined(&p, None, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(QuarantineList {
        entries: entries.into_iter().map(QuarantineView::from).collect(),
    })
    .into_response())
}

/// The tenant in numbers, and the model in use.
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses((status = 200, description = "Counts", body = StatsView)))]
async fn stats(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(Json(StatsView::from(s.engine.stats(&p).await?)).into_response())
}

/// The models this server serves, in OpenAI's format: the embedding model
/// of `/v1/embeddings` (any authenticated caller may list them).
#[utoipa::path(get, path = "/v1/models", tag = "search",
    responses((status = 200, description = "The served models", body = ModelList)))]
async fn models(State(s): State<AppState>, Caller(_p): Caller) -> ApiResult {
    let m = s.engine.model().clone();
    let mut data = vec![ModelCard {
        id: m.name,
        object: "model".into(),
        created: 0,
        owned_by: "engram".into(),
        purpose: "embedding".into(),
        dimensions: Some(m.dims),
        version: Some(m.version),
    }];
    // The chat models of the memory proxy: the LLM server's list, or at
    // least the configured model when the server cannot be asked now.
    if let Some(llm) = s.engine.llm() {
        let ids = match llm.models().await {
            Ok(ids) if !ids.is_empty() => ids,
            _ => vec![llm.model().to_string()],
        };
        data.extend(ids.into_iter().map(|id| ModelCard {
            id,
            object: "model".into(),
            created: 0,
            owned_by: "engram".into(),
            purpose: "chat".into(),
            dimensions: None,
            version: None,
        }));
    }
    Ok(Json(ModelList {
        object: "list".into(),
        data,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct ChatHeaders {
    /// The namespace whose memories are added (else the body's `user`,
    /// else `[proxy] namespace`).
    #[serde(rename = "x-engram-namespace")]
    #[param(
        rename = "X-Engram-Namespace",
        pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$"
    )]
    namespace: Option<String>,
    /// Append the user message and the answer to this conversation session
    /// (needs a writer).
    #[serde(rename = "x-engram-session")]
    #[param(rename = "X-Engram-Session")]
    session: Option<String>,
}

/// The OpenAI-compatible memory proxy: the memories relevant to the latest
/// user message (with the caller's rights) join the system prompt, numbered
/// with their ids; the request goes to the configured LLM server and its
/// answer comes back as the server sent it (JSON, or server-sent events with
/// `"stream": true`). `X-Engram-Memories` lists the ids of the memories
/// added. With `X-Engram-Session`, the exchange is appended to that session.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "search", params(ChatHeaders),
    request_body = ChatCompletionBody,
    responses((status = 200, description = "The LLM server's answer", content(
        (Value = "application/json"),
        (String = "text/event-stream"),
    ))))]
async fn chat_completions(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult {
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|v| Some(v.to_string()))
                .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{name} must be text"))),
        }
    };
    let target = engram_core::proxy::ChatTarget {
        namespace: header("x-engram-namespace")?,
        session: header("x-engram-session")?,
    };
    let proxied = s.engine.chat_completion(&p, target, body).await?;
    let ids: Vec<String> = proxied.memories.iter().map(Uuid::to_string).collect();
    let answer = proxied.answer;
    let stream = answer
        .body
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    Response::builder()
        .status(answer.status)
        .header(axum::http::header::CONTENT_TYPE, answer.content_type)
        .header("x-engram-memories", ids.join(","))
        .header("x-engram-namespace", proxied.namespace)
        .body(axum::body::Body::from_stream(stream))
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))
}

/// OpenAI-style `input`: one string or a list of strings.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmbeddingsRequest {
    input: EmbeddingInput,
    /// Accepted for OpenAI compatibility; must name the served model if given.
    #[serde(default)]
    model: Option<String>,
    /// `float` (default) or `base64` (little-endian `f32`, what OpenAI's
    /// clients ask for by default).
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    /// Must equal the model's dimensions if given: engram does not shorten
    /// vectors.
    #[serde(default)]
    dimensions: Option<u64>,
    /// OpenAI's end-user id; accepted and ignored (the caller is the key).
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EncodingFormat {
    Float,
    Base64,
}

impl EncodingFormat {
    fn encode(self, v: Vec<f32>) -> EmbeddingVector {
        match self {
            EncodingFormat::Float => EmbeddingVector::Float(v),
            EncodingFormat::Base64 => {
                use base64::Engine as _;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// OpenAI-compatible embeddings from the engine's model.
#[utoipa::path(post, path = "/v1/embeddings", tag = "search", request_body = EmbeddingsRequest,
    responses((status = 200, description = "The vectors", body = EmbeddingsResponse)))]
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
    if let Some(d) = req.dimensions {
        if d != served.dims as u64 {
            return Err(Error::invalid(format!(
                "dimensions = {d} is not supported: {:?} embeds in {} dimensions and engram does not shorten vectors",
                served.name, served.dims
            ))
            .into());
        }
    }
    let format = req.encoding_format.unwrap_or(EncodingFormat::Float);
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(ts) => ts,
    };
    let vectors = s.engine.embed(&p, texts).await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| Embedding {
            object: "embedding".into(),
            index,
            embedding: format.encode(embedding),
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: served.name,
        model_version: served.version,
    })
    .into_response())
}
