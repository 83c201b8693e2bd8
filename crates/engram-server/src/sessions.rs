//! Conversation sessions: append messages, read a session in order, delete it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engram_core::sessions::{AppendMessages, Appended, SessionDeleted};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{Caller, Json, Path, Query};
use crate::views::MemoryView;
use crate::AppState;

type ApiResult<T = Response> = Result<T, ApiError>;

/// A session's id: 1 to 256 bytes without control characters.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct SessionParam {
    session: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppendParams {
    /// Answer once the messages are searchable (or the wait timeout passed).
    #[serde(default)]
    wait: bool,
}

/// The messages appended, in the order sent.
#[derive(Serialize, ToSchema)]
pub(crate) struct AppendedList {
    messages: Vec<Appended>,
}

/// Append messages to a conversation session (the first append creates it).
/// Each message is stored as a memory of kind `message` with the session,
/// its position and speaker, and indexed with its neighbouring turns and
/// date as context. Positions default to after the session's last message;
/// give them (or client ids) to make a retried append idempotent: the same
/// message at the same position comes back as `duplicate`, another message
/// at a taken position is a 409 `position_conflict`. 202 once durable; with
/// `?wait=true`, 201 once searchable.
#[utoipa::path(post, path = "/v1/sessions/{session}/messages", tag = "sessions",
    params(SessionParam, AppendParams),
    request_body = AppendMessages,
    responses(
        (status = 201, description = "Searchable", body = AppendedList),
        (status = 202, description = "Durable, not yet searchable", body = AppendedList),
    ))]
pub(crate) async fn append(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(session): Path<String>,
    Query(q): Query<AppendParams>,
    Json(body): Json<AppendMessages>,
) -> ApiResult {
    let mut messages = s.engine.append_messages(&p, &session, body).await?;
    let mut status = StatusCode::ACCEPTED;
    if q.wait {
        let ids: Vec<_> = messages.iter().map(|m| m.id).collect();
        if s.engine
            .wait_searchable(&ids, &p, s.cfg.wait_timeout)
            .await?
        {
            status = StatusCode::CREATED;
        }
        for m in &mut messages {
            if let Ok(now) = s.engine.state(&p, m.id).await {
                m.state = now;
            }
        }
    }
    Ok((status, Json(AppendedList { messages })).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadParams {
    #[param(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    namespace: String,
    /// Messages after this position (`next_after` of the previous page).
    #[param(maximum = 9223372036854775807_u64)]
    after: Option<u64>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A page of a session's messages in order.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionPageView {
    messages: Vec<MemoryView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// Read a session's live messages in position order, page by page.
#[utoipa::path(get, path = "/v1/sessions/{session}/messages", tag = "sessions",
    params(SessionParam, ReadParams),
    responses((status = 200, description = "A page of messages", body = SessionPageView)))]
pub(crate) async fn read(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(session): Path<String>,
    Query(q): Query<ReadParams>,
) -> ApiResult {
    let page = s
        .engine
        .session_messages(&p, &q.namespace, &session, q.after, q.limit)
        .await?;
    Ok(Json(SessionPageView {
        messages: page.messages.into_iter().map(MemoryView::from).collect(),
        next_after: page.next_after,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NamespaceParam {
    #[param(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    namespace: String,
}

/// Delete a session: every live message is soft-deleted (restorable until
/// purged, as `DELETE /v1/memories/{id}`); messages under legal hold stay.
#[utoipa::path(delete, path = "/v1/sessions/{session}", tag = "sessions",
    params(SessionParam, NamespaceParam),
    responses((status = 200, description = "What was deleted", body = SessionDeleted)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(session): Path<String>,
    Query(q): Query<NamespaceParam>,
) -> ApiResult {
    let out = s.engine.delete_session(&p, &q.namespace, &session).await?;
    Ok(Json(out).into_response())
}
