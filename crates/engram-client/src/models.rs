//! The API's request and response bodies, as the OpenAPI document
//! (`/openapi.json`) describes them. Responses ignore fields they do not
//! know, so a client keeps working against a newer server; the tests decode
//! real answers of a running engram.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A memory to store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewMemory {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `fact`, `message`, `summary`...; the server's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The caller's own id: storing the same `client_id` again returns the
    /// stored memory (idempotent retries and imports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Any other field of the API's memory input (`ttl_secs`, `provenance`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NewMemory {
    pub fn text(text: impl Into<String>) -> Self {
        NewMemory {
            text: text.into(),
            ..Default::default()
        }
    }

    /// A memory from a JSON object of the API's memory input (an
    /// `engram import` line, say).
    pub fn from_json(v: Value) -> Result<Self, String> {
        let (text, o) = text_and_rest(v, "memory")?;
        Ok(NewMemory {
            text,
            extra: o,
            ..Default::default()
        })
    }
}

/// An input line's `text` and its other fields.
fn text_and_rest(v: Value, what: &str) -> Result<(String, Map<String, Value>), String> {
    let Value::Object(mut o) = v else {
        return Err(format!("a {what} must be a JSON object"));
    };
    match o.remove("text") {
        Some(Value::String(s)) => Ok((s, o)),
        Some(_) => Err("text must be a string".into()),
        None => Err(format!("a {what} needs text")),
    }
}

/// What storing one memory did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub id: Uuid,
    /// `created`, or `duplicate` when the namespace already held it.
    pub status: String,
    pub state: String,
}

impl Created {
    pub fn is_new(&self) -> bool {
        self.status == "created"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreatedBatch {
    pub memories: Vec<Created>,
}

/// A conversation message's place.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRef {
    pub id: String,
    pub position: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// A stored memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub id: Uuid,
    pub namespace: String,
    pub text: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `pending` until embedded, `ready`, or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_version: Option<String>,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub legal_hold: bool,
    #[serde(default)]
    pub pii: Vec<String>,
    /// Every other field of the server's answer (`provenance`,
    /// `embedding_model`, and whatever a newer server adds), kept so an
    /// export written from these loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A search. `mode` is `hybrid` (the default), `vector` or `keyword`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchRequest {
    pub query: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Any other search option of the API (`expand`, `recency`, `exact`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SearchRequest {
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            ..Default::default()
        }
    }
}

/// One search result, with the score breakdown of the fusion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub id: Uuid,
    pub namespace: String,
    pub text: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    pub created_at: DateTime<Utc>,
    /// `score` (the fused one) and each signal's part.
    pub scores: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbors: Option<Vec<Value>>,
}

impl Hit {
    /// The fused score the hits are ordered by.
    pub fn score(&self) -> f64 {
        self.scores["score"].as_f64().unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub mode: String,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// `inserted` (the default), `occurred_at` or `occurred_at_desc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub memories: Vec<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A conversation message to append.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewMessage {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Unset: after the session's last message. Set, a retry of the same
    /// position returns the stored message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Any other field of the API's message input (`metadata`, `tags`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NewMessage {
    /// A message from a JSON object of the API's message input (a line of a
    /// transcript file).
    pub fn from_json(v: Value) -> Result<Self, String> {
        let (text, mut o) = text_and_rest(v, "message")?;
        let position = match o.remove("position") {
            None | Some(Value::Null) => None,
            Some(p) => Some(p.as_u64().ok_or("position must be a whole number")?),
        };
        Ok(NewMessage {
            text,
            position,
            extra: o,
            ..Default::default()
        })
    }
}

/// What appending one message did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appended {
    pub id: Uuid,
    pub position: u64,
    pub status: String,
    pub state: String,
}

impl Appended {
    pub fn is_new(&self) -> bool {
        self.status == "created"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AppendedBatch {
    pub messages: Vec<Appended>,
}

/// A page of a session, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPage {
    pub messages: Vec<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// The caller's tenant in numbers (`GET /v1/stats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub memories: u64,
    pub pending: u64,
    pub failed: u64,
    pub deleted: u64,
    pub jobs_queued: u64,
    pub jobs_dead: u64,
    #[serde(default)]
    pub quarantined: u64,
    /// This node's indexes have applied every change in the store.
    pub caught_up: bool,
    pub model: Value,
}

impl Stats {
    /// Nothing waits to be embedded or indexed: what is stored is searchable.
    pub fn idle(&self) -> bool {
        self.pending == 0 && self.jobs_queued == 0 && self.caught_up
    }
}

/// A question for `/v1/ask`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AskRequest {
    pub question: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Any other option of the API (`filter`, `mode`, `max_tokens`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AskEvent {
    /// The memories given to the model, numbered as it cites them.
    Sources(Vec<Value>),
    /// The next piece of the answer.
    Token(String),
    /// The end: the answer document (`answer`, `citations`...).
    Done(Value),
}
