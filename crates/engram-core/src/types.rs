//! Domain types shared by the engine, its back-ends and the API layer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Internal, store-assigned key of a memory: stable for the memory's life and
/// used as the key in every derived index (usearch needs a u64).
pub type Key = u64;

/// What kind of record a memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Kind {
    #[default]
    Fact,
    Message,
    DocumentChunk,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fact => "fact",
            Kind::Message => "message",
            Kind::DocumentChunk => "document_chunk",
            Kind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "fact" => Kind::Fact,
            "message" => Kind::Message,
            "document_chunk" => Kind::DocumentChunk,
            "summary" => Kind::Summary,
            _ => return None,
        })
    }
}

/// Embedding state of a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum State {
    /// Stored, waiting for its embedding.
    Pending,
    /// Embedded and (once the indexer catches up) searchable.
    Ready,
    /// Its embedding job is dead-lettered.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Ready => "ready",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "ready" => State::Ready,
            "failed" => State::Failed,
            _ => return None,
        })
    }
}

/// Where a memory came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Reference to a manifest or signature for the source content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Where a conversation message sits: its session and its position in it.
/// Sessions live in a namespace; positions order the session's messages
/// (strictly increasing, gaps allowed) and are unique among its live
/// messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionRef {
    /// The session's id, chosen by the client.
    pub id: String,
    pub position: u64,
    /// Who said it (a name, or a role such as `user` / `assistant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// Which live messages of a session to read: positions strictly between
/// `after` and `before`, in position order (or its reverse), at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRange {
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub limit: usize,
    pub descending: bool,
}

impl SessionRange {
    /// At most `limit` messages after `after` and before `before`, in order.
    pub fn forward(after: Option<u64>, before: Option<u64>, limit: usize) -> Self {
        SessionRange {
            after,
            before,
            limit,
            descending: false,
        }
    }

    /// The last `limit` messages before `before`, latest first.
    pub fn backward(before: Option<u64>, limit: usize) -> Self {
        SessionRange {
            after: None,
            before,
            limit,
            descending: true,
        }
    }
}

/// A stored memory, as the store returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub id: Uuid,
    #[serde(skip)]
    pub key: Key,
    pub tenant: String,
    pub namespace: String,
    pub text: String,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub checksum: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_version: Option<String>,
    /// When what the memory records happened (the event time); defaults to
    /// `created_at`.
    pub occurred_at: DateTime<Utc>,
    /// The conversation session and position of a `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub legal_hold: bool,
    pub pii: Vec<String>,
    /// Store-wide change sequence of the memory's last change.
    pub seq: u64,
}

impl Memory {
    /// The attributes a derived index needs to evaluate filters for this memory.
    pub fn attrs(&self) -> DocAttrs {
        DocAttrs {
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            kind: self.kind,
            tags: self.tags.clone(),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            occurred_at: self.occurred_at,
            session: self.session.clone(),
        }
    }

    /// Past its TTL. A legal hold suspends retention: a held memory never
    /// counts as expired, so it stays readable (and its hold releasable);
    /// once released, the sweeper expires it as usual.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        !self.legal_hold && self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A memory to insert, validated and normalised by the engine.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub id: Uuid,
    pub tenant: String,
    pub namespace: String,
    pub text: String,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub provenance: Option<Provenance>,
    pub client_id: Option<String>,
    pub checksum: String,
    pub created_at: DateTime<Utc>,
    /// The event time (`created_at` unless the caller gave one).
    pub occurred_at: DateTime<Utc>,
    pub session: Option<SessionRef>,
    pub expires_at: Option<DateTime<Utc>>,
    pub pii: Vec<String>,
}

/// Outcome of soft-deleting several memories in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoftDeleted {
    /// The memories deleted, as they are now.
    pub deleted: Vec<Memory>,
    /// Live memories left alone because a legal hold keeps them.
    pub held: Vec<Memory>,
}

/// Outcome of inserting one memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inserted {
    pub id: Uuid,
    #[serde(skip)]
    pub key: Key,
    /// False when an existing memory (same checksum or client id in the namespace) was returned.
    pub created: bool,
    pub state: State,
    #[serde(skip)]
    pub seq: u64,
}

/// A change to apply to a memory. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MemoryPatch {
    /// New text and its checksum; the memory goes back to `pending` and is re-embedded.
    pub text: Option<(String, String)>,
    pub kind: Option<Kind>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub pii: Option<Vec<String>>,
    /// Place (`true`) or release (`false`) the legal hold, in the same
    /// transaction: a release comes before the content change (which a hold
    /// would refuse), a placement after it.
    pub legal_hold: Option<bool>,
}

impl MemoryPatch {
    /// Whether the patch gives `m` another text (another checksum): the
    /// memory then goes back to `pending` and is re-embedded, and the store
    /// must check that no other live memory of the namespace has that text.
    pub fn changes_text(&self, m: &Memory) -> bool {
        self.text
            .as_ref()
            .is_some_and(|(_, sum)| *sum != m.checksum)
    }

    /// Apply the content fields to `m` (the hold is the store's to apply in
    /// its transaction); the names of the fields given, for the audit event.
    pub fn apply_to(self, m: &mut Memory) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if let Some((text, checksum)) = self.text {
            if checksum != m.checksum {
                m.checksum = checksum;
                m.state = State::Pending;
            }
            // Same checksum: only the un-normalised form changed; the
            // embedding stays valid.
            m.text = text;
            fields.push("text");
        }
        if let Some(kind) = self.kind {
            m.kind = kind;
            fields.push("kind");
        }
        if let Some(metadata) = self.metadata {
            m.metadata = metadata;
            fields.push("metadata");
        }
        if let Some(tags) = self.tags {
            m.tags = tags;
            fields.push("tags");
        }
        if let Some(expires_at) = self.expires_at {
            m.expires_at = expires_at;
            fields.push("expires_at");
        }
        if let Some(pii) = self.pii {
            m.pii = pii;
            fields.push("pii");
        }
        fields
    }

    /// Whether the patch changes what the memory holds (anything but the hold).
    pub fn changes_content(&self) -> bool {
        self.text.is_some()
            || self.kind.is_some()
            || self.metadata.is_some()
            || self.tags.is_some()
            || self.expires_at.is_some()
            || self.pii.is_some()
    }
}

/// The filterable attributes of an indexed memory.
#[derive(Debug, Clone, PartialEq)]
pub struct DocAttrs {
    pub tenant: String,
    pub namespace: String,
    pub kind: Kind,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
    pub session: Option<SessionRef>,
}

/// One entry of the store's change feed: the latest state of a memory whose
/// `seq` is greater than the reader's position.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u64,
    pub key: Key,
    pub op: ChangeOp,
}

#[derive(Debug, Clone)]
pub enum ChangeOp {
    /// The memory is ready and live: (re)index it.
    Upsert(Arc<IndexDoc>),
    /// The memory is deleted, pending re-embedding or failed: drop it from indexes.
    Remove,
    /// The row cannot be decoded. The engine quarantines it and removes the
    /// key from every index (derived indexes never see this variant); the
    /// feed goes on past it.
    Corrupt(Corrupt),
}

/// A stored row that cannot be decoded, and what is known of it. Stores
/// return these in place of the rows they cannot read (the change feed,
/// scans, claims, the re-embedding back-fill), so one bad row never fails a
/// whole page; the engine quarantines them (see `crate::quarantine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// The memory the row is (or whose job it is).
    pub key: Key,
    /// Read on their own, when they still decode.
    pub id: Option<Uuid>,
    pub tenant: Option<String>,
    /// The job, when the row was a claimed job.
    pub job_id: Option<u64>,
    /// The memory's event time, when it still decodes: a list in event-time
    /// order continues past the row from there.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Why it cannot be decoded (column and problem, never the content).
    pub error: String,
}

/// A row as a store read it: decoded, or what is known of it.
pub type Decoded<T> = std::result::Result<T, Corrupt>;

/// Where a quarantined row was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum QuarantineSource {
    /// The change feed, by the indexer.
    Feed,
    /// Loading the filter attributes at start.
    Attrs,
    /// A claimed embedding job, by a worker.
    Job,
    /// The re-embedding back-fill.
    Backfill,
    /// A read (list, search results).
    Read,
}

impl QuarantineSource {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineSource::Feed => "feed",
            QuarantineSource::Attrs => "attrs",
            QuarantineSource::Job => "job",
            QuarantineSource::Backfill => "backfill",
            QuarantineSource::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "feed" => QuarantineSource::Feed,
            "attrs" => QuarantineSource::Attrs,
            "job" => QuarantineSource::Job,
            "backfill" => QuarantineSource::Backfill,
            "read" => QuarantineSource::Read,
            _ => return None,
        })
    }
}

/// A quarantined row: one entry per memory key, kept in the store (so every
/// node and every restart knows it) until the row decodes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub key: Key,
    pub memory_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub source: QuarantineSource,
    /// The change seq it was met at, when met in the feed.
    pub seq: Option<u64>,
    pub error: String,
    /// When it was first met; a later meeting keeps it.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// What a derived index needs to index one memory.
#[derive(Debug, Clone)]
pub struct IndexDoc {
    pub key: Key,
    pub text: String,
    /// What the keyword index searches beside the text, with a lower weight:
    /// a message's neighbouring turns (see `crate::context`). Filled in by
    /// the engine; stores leave it empty.
    pub context: String,
    pub vector: Vec<f32>,
    /// While re-embedding: the memory's vector from the target model, if it
    /// has one for its current text (what the shadow index is built from).
    pub target_vector: Option<Vec<f32>>,
    pub attrs: Arc<DocAttrs>,
}

/// Model identity recorded with every vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub dims: usize,
}

/// Lifecycle of a background job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    Queued,
    Running,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "dead" => JobState::Dead,
            _ => return None,
        })
    }
}

/// A background job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: u64,
    pub tenant: String,
    pub kind: String,
    pub memory_id: Uuid,
    pub state: JobState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub next_run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A job handed to a worker, with what it needs to do the work.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: u64,
    pub key: Key,
    pub memory_id: Uuid,
    pub text: String,
    /// A message's speaker (part of what is embedded).
    pub speaker: Option<String>,
    pub checksum: String,
    pub attempts: u32,
    /// Checksum and model version of the vector already stored, if any,
    /// so a redelivered job can be completed without re-embedding.
    pub embedded_checksum: Option<String>,
    pub embedding_version: Option<String>,
    /// W3C `traceparent` of the request that enqueued the job, if traced.
    pub traceparent: Option<String>,
}

impl ClaimedJob {
    /// What an embedder with this recipe gets.
    pub fn embedding_text(&self, recipe: crate::context::VectorRecipe) -> String {
        recipe.text(&self.text, self.speaker.as_deref())
    }
}

/// A finished embedding to write back.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub job_id: u64,
    pub key: Key,
    /// The checksum the vector was computed from; if the memory's text changed
    /// meanwhile the result is stale and is discarded by the store.
    pub checksum: String,
    /// `None` when the stored vector is already current (idempotent redelivery).
    pub vector: Option<Vec<f32>>,
    pub model: ModelInfo,
    /// While re-embedding, the same text embedded by the other model (the
    /// re-embedding target, or the active model when `model` is the target).
    /// The store writes each vector to the slot its model version belongs to.
    pub also: Option<ModelVector>,
}

/// A vector and the model that made it.
#[derive(Debug, Clone)]
pub struct ModelVector {
    pub model: ModelInfo,
    pub vector: Vec<f32>,
}

/// Which model the store's vectors belong to (`active`: what queries must
/// be embedded with) and, while a re-embedding runs, the model they are
/// moving to (`target`). `active` is `None` only in a store no node has
/// opened yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelState {
    pub active: Option<ModelInfo>,
    pub target: Option<ModelInfo>,
}

/// A memory the re-embedding still has to embed with the target model.
#[derive(Debug, Clone)]
pub struct ReembedItem {
    pub key: Key,
    pub checksum: String,
    pub text: String,
    /// A message's speaker (part of what is embedded).
    pub speaker: Option<String>,
}

impl ReembedItem {
    /// What an embedder with this recipe gets.
    pub fn embedding_text(&self, recipe: crate::context::VectorRecipe) -> String {
        recipe.text(&self.text, self.speaker.as_deref())
    }
}

/// A target-model vector for a memory's text (by checksum).
#[derive(Debug, Clone)]
pub struct TargetVector {
    pub key: Key,
    pub checksum: String,
    pub vector: Vec<f32>,
}

/// How far a re-embedding is: memories holding a current vector of the
/// active model (`total`) and, of those, how many also hold one of the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReembedProgress {
    pub done: u64,
    pub total: u64,
}

impl ReembedProgress {
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.done)
    }
}

/// A failed job attempt.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub job_id: u64,
    pub error: String,
}

/// Per-tenant store statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    pub memories: u64,
    pub pending: u64,
    pub failed: u64,
    pub deleted: u64,
    pub jobs_queued: u64,
    pub jobs_dead: u64,
    /// When the oldest queued or running job was created: the queue's age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_job_at: Option<DateTime<Utc>>,
    pub max_seq: u64,
}

/// What the caller may do. Every engine call takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Admin,
    Writer,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "writer" => Role::Writer,
            "reader" => Role::Reader,
            _ => return None,
        })
    }
}

/// Extra rights granted on top of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permission {
    /// See PII in clear text; without it, texts flagged as PII are redacted on read.
    #[serde(rename = "pii:read")]
    PiiRead,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PiiRead => "pii:read",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "pii:read" => Some(Permission::PiiRead),
            _ => None,
        }
    }
}

/// The authenticated caller: who, in which tenant, with which role, limited to
/// which namespaces. Built by the API layer from a JWT or an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub subject: String,
    pub role: Role,
    /// Namespace patterns the caller is limited to (`*` matches any run of
    /// characters, e.g. `agent:*`); `None` means every namespace of the tenant.
    pub namespaces: Option<Vec<String>>,
    pub permissions: Vec<Permission>,
    /// The request this call serves, recorded in audit events.
    pub request_id: Option<String>,
}

/// Actions checked by [`Principal::authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Admin,
}

impl Principal {
    /// A principal with every namespace of its tenant and no extra permissions.
    pub fn new(tenant: impl Into<String>, subject: impl Into<String>, role: Role) -> Self {
        Principal {
            tenant: tenant.into(),
            subject: subject.into(),
            role,
            namespaces: None,
            permissions: Vec::new(),
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    pub fn with_namespaces(mut self, patterns: Vec<String>) -> Self {
        self.namespaces = Some(patterns);
        self
    }

    pub fn with_permissions(mut self, permissions: Vec<Permission>) -> Self {
        self.permissions = permissions;
        self
    }

    /// Enforced inside the engine so that no route can skip it.
    pub fn authorize(&self, action: Action) -> Result<()> {
        let ok = matches!(
            (self.role, action),
            (Role::Admin, _)
                | (Role::Writer, Action::Read | Action::Write)
                | (Role::Reader, Action::Read)
        );
        if ok {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "role {} may not {}",
                self.role.as_str(),
                match action {
                    Action::Read => "read",
                    Action::Write => "write",
                    Action::Admin => "administer",
                }
            )))
        }
    }

    /// Whether the caller's namespace patterns admit `namespace`.
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob_match(p, namespace)),
        }
    }

    /// [`authorize`](Self::authorize) plus the namespace check.
    pub fn authorize_in(&self, action: Action, namespace: &str) -> Result<()> {
        self.authorize(action)?;
        if self.sees_namespace(namespace) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "no access to namespace {namespace:?}"
            )))
        }
    }

    /// Whether the caller may act on every namespace of its tenant (tenant-wide
    /// views such as jobs, audit and stats need this).
    pub fn unscoped(&self) -> bool {
        self.namespaces.is_none()
    }

    /// Admins always see PII; others need the `pii:read` permission.
    pub fn reads_pii(&self) -> bool {
        self.role == Role::Admin || self.permissions.contains(&Permission::PiiRead)
    }
}

/// `*` matches any (possibly empty) run of characters; everything else is literal.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// A ready, live memory of tenant `t`, namespace `ns`, key 1, for unit tests.
#[cfg(test)]
pub(crate) fn sample_memory() -> Memory {
    let t = Utc::now();
    Memory {
        id: Uuid::new_v4(),
        key: 1,
        tenant: "t".into(),
        namespace: "ns".into(),
        text: "Old text".into(),
        kind: Kind::default(),
        metadata: Map::new(),
        tags: vec![],
        provenance: None,
        client_id: None,
        checksum: "sum-old".into(),
        state: State::Ready,
        embedding_model: None,
        embedding_version: None,
        occurred_at: t,
        session: None,
        created_at: t,
        updated_at: t,
        expires_at: None,
        deleted_at: None,
        legal_hold: false,
        pii: vec![],
        seq: 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Memory {
        sample_memory()
    }

    #[test]
    fn a_patch_applies_its_fields_and_resets_state_only_for_new_text() {
        // Same checksum (another un-normalised form): the text changes, the
        // embedding stays valid.
        let mut m = memory();
        let p = MemoryPatch {
            text: Some(("old  text".into(), "sum-old".into())),
            tags: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert!(!p.changes_text(&m));
        assert!(p.changes_content());
        assert_eq!(p.apply_to(&mut m), vec!["text", "tags"]);
        assert_eq!((m.text.as_str(), m.state), ("old  text", State::Ready));
        assert_eq!(m.tags, vec!["a".to_string()]);

        // Another checksum: pending, to be re-embedded.
        let p = MemoryPatch {
            text: Some(("New text".into(), "sum-new".into())),
            expires_at: Some(None),
            ..Default::default()
        };
        assert!(p.changes_text(&m));
        assert_eq!(p.apply_to(&mut m), vec!["text", "expires_at"]);
        assert_eq!((m.checksum.as_str(), m.state), ("sum-new", State::Pending));

        // A hold alone is not content.
        let p = MemoryPatch {
            legal_hold: Some(true),
            ..Default::default()
        };
        assert!(!p.changes_content() && !p.changes_text(&m));
        assert!(p.apply_to(&mut m).is_empty());
        assert!(!m.legal_hold, "the store applies holds, not apply_to");
    }
}
