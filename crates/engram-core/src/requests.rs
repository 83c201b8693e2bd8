//! Request and response shapes of the engine's public operations. They are
//! serde types so the API layer can deserialize straight into them, with
//! unknown fields rejected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::fusion::Fused;
use crate::types::{Kind, Memory, Provenance, State};

/// One memory to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryInput {
    pub text: String,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// Caller-chosen idempotency key, unique per namespace.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A change to a memory; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpdate {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `null` clears the expiry.
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Outcome of creating one memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Created {
    pub id: Uuid,
    /// `created`, or `duplicate` when an existing memory was returned.
    pub status: &'static str,
    pub state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Keyword,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub vector: f32,
    pub keyword: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    /// Empty or absent: every namespace of the tenant.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: SearchMode,
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Exact vector search instead of the ANN index (slower; for evaluation).
    #[serde(default)]
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub id: Uuid,
    pub namespace: String,
    pub text: String,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub scores: Fused,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub mode: SearchMode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub memories: Vec<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
