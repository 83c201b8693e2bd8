//! What the API answers: dedicated response types, not the stored rows.
//!
//! The engine's records carry internal fields a client has no use for and
//! some it must not see: the tenant (the caller's own, from its credential),
//! a memory's checksum and the store-wide change sequence `seq` (which, like
//! the store's internal keys, would reveal how much every other tenant
//! writes). These views leave them out. Where such a field stays, the reason
//! is written next to it. Every view is a schema of the OpenAPI document.

use chrono::{DateTime, Utc};
use engram_core::requests::Page;
use engram_core::{
    ApiKey, CreatedApiKey, EngineStats, Job, JobState, Kind, Memory, ModelInfo, Permission,
    Provenance, QuarantineEntry, QuarantineSource, Role, SessionRef, State,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// A memory.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    pub id: Uuid,
    pub namespace: String,
    pub text: String,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `pending` until embedded (and then searchable), `failed` when its
    /// embedding job is dead-lettered.
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_version: Option<String>,
    /// When what the memory records happened (its event time; defaults to
    /// `created_at`).
    pub occurred_at: DateTime<Utc>,
    /// A message's session, position and speaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub legal_hold: bool,
    /// Kinds of personal data flagged in the text (`email`, `phone`, `card`,
    /// or the caller's own); redacted for callers without `pii:read`.
    pub pii: Vec<String>,
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        MemoryView {
            id: m.id,
            namespace: m.namespace,
            text: m.text,
            kind: m.kind,
            metadata: m.metadata,
            tags: m.tags,
            provenance: m.provenance,
            client_id: m.client_id,
            state: m.state,
            embedding_model: m.embedding_model,
            embedding_version: m.embedding_version,
            occurred_at: m.occurred_at,
            session: m.session,
            created_at: m.created_at,
            updated_at: m.updated_at,
            expires_at: m.expires_at,
            legal_hold: m.legal_hold,
            pii: m.pii,
        }
    }
}

/// A page of memories.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView {
    pub memories: Vec<MemoryView>,
    /// Pass as `cursor` for the next page; absent on the last one. Opaque.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<Page> for PageView {
    fn from(p: Page) -> Self {
        PageView {
            memories: p.memories.into_iter().map(MemoryView::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

/// The outcome of creating one memory.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedView {
    pub id: Uuid,
    /// `created`, or `duplicate` when a live memory with the same text (or
    /// `client_id`) in the namespace was returned instead.
    pub status: String,
    pub state: State,
}

/// The outcome of a batch create.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBatch {
    pub memories: Vec<CreatedView>,
}

/// An API key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Namespace patterns the key is limited to (`*` ends a prefix); absent:
    /// every namespace of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    pub permissions: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            namespaces: k.namespaces,
            permissions: k.permissions,
            created_at: k.created_at,
            created_by: k.created_by,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new API key, with its token: the only time the token is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub key: KeyView,
    /// Send as `Authorization: Bearer <token>`; it is not stored and cannot
    /// be shown again.
    pub token: String,
}

impl From<CreatedApiKey> for CreatedKeyView {
    fn from(c: CreatedApiKey) -> Self {
        CreatedKeyView {
            key: c.key.into(),
            token: c.token,
        }
    }
}

/// An embedding job. Its id is the store's job number: the job's address
/// under `/v1/jobs/{id}` and the `after` cursor of the listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: u64,
    pub kind: String,
    pub memory_id: Uuid,
    pub state: JobState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub next_run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        JobView {
            id: j.id,
            kind: j.kind,
            memory_id: j.memory_id,
            state: j.state,
            attempts: j.attempts,
            last_error: j.last_error,
            next_run_at: j.next_run_at,
            created_at: j.created_at,
        }
    }
}

/// A running re-embedding to another model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReembedView {
    pub target: ModelInfo,
    /// Share of the memories that have their new vector (0 to 1; store-wide
    /// counts are the operator's, in `engram_reembed_remaining`).
    pub progress: f64,
    /// Whether this node has the target's embedder (and so can switch).
    pub node_has_target: bool,
}

/// The caller's tenant in numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// Live memories.
    pub memories: u64,
    /// Waiting for their embedding.
    pub pending: u64,
    /// Their embedding job is dead-lettered.
    pub failed: u64,
    /// Soft-deleted, not yet purged.
    pub deleted: u64,
    /// Embedding jobs queued or running.
    pub jobs_queued: u64,
    /// Dead-lettered jobs (`/v1/jobs?state=dead`).
    pub jobs_dead: u64,
    /// When the oldest queued or running job was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_job_at: Option<DateTime<Utc>>,
    /// Rows that cannot be decoded (`/v1/quarantine`).
    pub quarantined: u64,
    /// This node's indexes have applied every change in the store: what is
    /// ready is searchable here.
    pub caught_up: bool,
    /// The model queries and vectors use.
    pub model: ModelInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reembed: Option<ReembedView>,
}

impl From<EngineStats> for StatsView {
    fn from(s: EngineStats) -> Self {
        StatsView {
            memories: s.store.memories,
            pending: s.store.pending,
            failed: s.store.failed,
            deleted: s.store.deleted,
            jobs_queued: s.store.jobs_queued,
            jobs_dead: s.store.jobs_dead,
            oldest_job_at: s.store.oldest_job_at,
            quarantined: s.quarantined,
            caught_up: s.caught_up,
            model: s.model,
            reembed: s.reembed.map(|r| ReembedView {
                target: r.target,
                progress: if r.total == 0 {
                    1.0
                } else {
                    (r.done as f64 / r.total as f64).clamp(0.0, 1.0)
                },
                node_has_target: r.node_has_target,
            }),
        }
    }
}

/// A stored row that cannot be decoded. Its error names the column and the
/// problem, never the content.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<Uuid>,
    /// Where it was met.
    pub source: QuarantineSource,
    pub error: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl From<QuarantineEntry> for QuarantineView {
    fn from(e: QuarantineEntry) -> Self {
        QuarantineView {
            memory_id: e.memory_id,
            source: e.source,
            error: e.error,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        }
    }
}

/// `{"status": "ok"}` and the like.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub status: String,
}

/// The error every failure answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: see the table of codes (`docs/errors.md`).
    #[schema(schema_with = crate::openapi::code_schema)]
    pub code: String,
    /// For people; may change.
    pub message: String,
}
