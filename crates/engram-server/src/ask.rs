//! `POST /v1/ask`: the answer as one JSON document, or streamed as
//! server-sent events.
//!
//! Streaming waits for the model's first token before it sends the response
//! head, so an LLM that is down or too slow still gets a real 503/504 with
//! its error code. After that the status is committed; a later failure ends
//! the stream with an `error` event carrying the same `{"error":{..}}` body.
//!
//! Events, in order: `sources` (`{"model","sources"}`), `token`
//! (`{"text"}`, one per delta), then `done` (`{"answer","citations",
//! "timings","model"}`) or `error`.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engram_core::{Asking, Error};
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::convert::Infallible;

use crate::error::ApiError;
use crate::openapi::{AskEvent, DoneEvent, SourcesEvent, TokenEvent};

/// The SSE response for an answer whose first token is `first`.
pub async fn stream(mut asking: Asking) -> Result<Response, ApiError> {
    let first = match asking.next_token().await {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let head = json_event(
        "sources",
        &AskEvent::Sources(SourcesEvent {
            model: asking.model.clone(),
            sources: asking.sources.clone(),
        }),
    );
    let first = first.map(|t| json_event("token", &AskEvent::Token(TokenEvent { text: t })));
    let rest = stream::unfold(Some(asking), |state| async move {
        let mut asking = state?;
        match asking.next_token().await {
            Some(Ok(t)) => Some((
                json_event("token", &AskEvent::Token(TokenEvent { text: t })),
                Some(asking),
            )),
            Some(Err(e)) => Some((error_event(e), None)),
            None => {
                let a = asking.finish();
                let done = AskEvent::Done(DoneEvent {
                    answer: a.answer,
                    citations: a.citations,
                    timings: a.timings,
                    model: a.model,
                });
                Some((json_event("done", &done), None))
            }
        }
    });
    let events = stream::once(async { head })
        .chain(stream::iter(first))
        .chain(rest)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One event; its data is one of the documented `AskEvent`s.
fn json_event(name: &str, data: &AskEvent) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        json!({"error": {"code": "internal", "message": e.to_string()}}).to_string()
    });
    Event::default().event(name).data(data)
}

fn error_event(e: Error) -> Event {
    Event::default()
        .event("error")
        .data(ApiError::from(e).body().to_string())
}
