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

#[derive(Debug, Clone, Deserialize)]
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
    /// Exact vector search instead of the ANN index (slower; for evaluation).
    #[serde(default)]
    pub exact: bool,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub memories: Vec<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
