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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// When what the memory records happened (default: now). Filter on it
    /// (`occurred_at` ranges), sort lists by it, prefer recent events in search.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    /// Seconds from now until the memory expires (at most 100 years); or give `expires_at`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3153600000_u64))]
    pub ttl_seconds: Option<u64>,
    /// PII flags (`email`, `phone`, `card`, `name` or a custom lowercase
    /// word); detected kinds are added to these.
    #[serde(default)]
    pub pii: Option<Vec<String>>,
}

/// A change to a memory; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Replace the PII flags (detected kinds are kept).
    #[serde(default)]
    pub pii: Option<Vec<String>>,
    /// Place (`true`) or release (`false`) a legal hold; admins only.
    #[serde(default)]
    pub legal_hold: Option<bool>,
}

/// Settings of a namespace (`PUT /v1/namespaces/{name}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceSettings {
    /// Default time-to-live of memories created in it from now on; `null` for none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3153600000_u64))]
    pub default_ttl_seconds: Option<u64>,
}

/// What a retention sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub expired: usize,
    pub purged: usize,
}

/// `engram audit export`: a tenant's chain with its head and the current
/// records' checksums, enough for a third party to re-verify.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditBundle {
    /// Kept: every event's hash covers its tenant, so verifying needs it.
    pub tenant: String,
    pub exported_at: DateTime<Utc>,
    pub head: Option<AuditHead>,
    pub verify: crate::audit::VerifyReport,
    pub events: Vec<crate::audit::AuditEvent>,
    pub records: Vec<RecordChecksum>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditHead {
    pub n: u64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordChecksum {
    pub id: Uuid,
    pub namespace: String,
    /// SHA-256 of the namespace and the normalised text: a third party can
    /// check a record's content against the proof without the text.
    pub checksum: String,
}

fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Outcome of creating one memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Created {
    pub id: Uuid,
    /// `created`, or `duplicate` when an existing memory was returned.
    pub status: &'static str,
    pub state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Keyword,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Weights {
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub vector: f32,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub keyword: f32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchRequest {
    pub query: String,
    /// Empty or absent: every namespace of the tenant.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    /// How many hits (default 10).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: SearchMode,
    /// Relative weights of the two signals in hybrid mode (default: vector
    /// 0.3, keyword 0.7).
    #[serde(default)]
    pub weights: Option<Weights>,
    /// How hybrid mode combines them: `convex` (default: z-scored scores,
    /// weighted) or `rrf` (reciprocal-rank fusion).
    #[serde(default)]
    pub fusion: Option<crate::fusion::Method>,
    /// In hybrid mode, prefer conversation messages said by the one speaker
    /// the query names (default: true).
    #[serde(default)]
    pub prefer_speaker: Option<bool>,
    /// Prefer recent events (by `occurred_at`); off by default.
    #[serde(default)]
    pub recency: Option<RecencyRequest>,
    /// Bring each conversation-message hit's neighbouring turns along (in
    /// `neighbors`); off by default.
    #[serde(default)]
    pub expand: Option<Expand>,
    /// Exact vector search instead of the ANN index (slower; for evaluation).
    #[serde(default)]
    pub exact: bool,
}

/// A recency preference: each candidate's score is standardised over the
/// candidates, then gains `weight * 0.5^(age / half_life)`, where `age` is
/// how far its event (`occurred_at`) is from `origin` (default: now; an
/// origin in the past prefers events around then).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecencyRequest {
    /// Days after which the preference halves (more than 0, at most 36,500).
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 36500))]
    pub half_life_days: f64,
    /// How strong the preference is at age 0, in standard deviations of the
    /// score (default 1; 0 to 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10))]
    pub weight: Option<f32>,
    /// The time ages are measured from (default: now).
    #[serde(default)]
    pub origin: Option<DateTime<Utc>>,
}

/// Neighbour expansion of conversation-message hits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Expand {
    /// Live messages of the same session to return on each side of a
    /// message hit (1 to 10).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub neighbors: usize,
}

/// A message next to a hit in its session.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Neighbor {
    pub id: Uuid,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub occurred_at: DateTime<Utc>,
    pub session: crate::types::SessionRef,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    pub id: Uuid,
    pub namespace: String,
    pub text: String,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<crate::types::SessionRef>,
    pub created_at: DateTime<Utc>,
    pub scores: Fused,
    /// With `expand`: the message's neighbours in its session, in position
    /// order (the hit itself left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbors: Option<Vec<Neighbor>>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub mode: SearchMode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListRequest {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$"))]
    pub namespace: Option<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    /// Page size (default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// Order of the list: `inserted` (default), `occurred_at` (oldest
    /// event first) or `occurred_at_desc` (newest first).
    #[serde(default)]
    pub sort: ListSort,
}

/// The orders a list can come in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ListSort {
    #[default]
    Inserted,
    OccurredAt,
    OccurredAtDesc,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub memories: Vec<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
