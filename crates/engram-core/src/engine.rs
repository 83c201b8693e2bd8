//! The engine: validates and authorizes every call, writes through the store,
//! embeds in background workers, keeps derived indexes in step with the
//! store's change feed, and answers searches.

use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditCtx, AuditEntry};
use crate::cache::{self, Cache};
use crate::codes::Code;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fusion::FusionParams;
use crate::lifecycle::Lifecycle;
use crate::limits;
use crate::probe::IndexerHealth;
use crate::quarantine;
use crate::rag::{self, AskRequest, Asking, ChatRequest, Llm, RagConfig};
use crate::reembed::{Active, Backfill, Embedders, NextModel, OpenIndex, ReembedStatus, Shadow};
use crate::requests::*;
use crate::scope::AttrTable;
use crate::text;
use crate::traits::*;
use crate::types::*;
use crate::worker::EmbedWorker;

/// Most deleted messages remembered for their neighbours' re-indexing
/// (beyond it, the oldest are forgotten and those neighbours keep the
/// deleted turn in their context until they change).
const MAX_DEPARTED: usize = 100_000;

/// Tunables of the engine. Limits are enforced on every call.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_text_bytes: usize,
    pub max_batch: usize,
    pub max_metadata_bytes: usize,
    pub max_tags: usize,
    pub max_k: usize,
    pub default_k: usize,
    pub max_list_limit: usize,
    /// Each signal fetches `max(k * candidate_factor, min_candidates)` before fusion.
    pub candidate_factor: usize,
    pub min_candidates: usize,
    pub fusion: FusionParams,
    pub worker_batch: usize,
    pub job_lease: Duration,
    pub retry: RetryPolicy,
    /// How often the vector index is saved while it has unsaved changes.
    pub persist_interval: Duration,
    /// Capacity of the in-process [`MemoryCache`](crate::MemoryCache) the
    /// embedded mode builds (query embeddings and search rankings).
    pub query_cache_entries: u64,
    /// How long a query embedding stays cached.
    pub embedding_cache_ttl: Duration,
    /// How long a search ranking stays cached; zero disables result caching.
    /// Writes invalidate rankings (see [`crate::cache`]); the TTL bounds how
    /// stale one can get if an invalidation is lost.
    pub result_cache_ttl: Duration,
    /// Flag emails, phone and card numbers found in texts as PII on write.
    pub pii_detect: bool,
    /// Append an audit event for every read (get, list, search), not only writes.
    pub audit_reads: bool,
    /// How long soft-deleted memories are kept before the sweeper purges them.
    pub purge_after: Duration,
    /// Most memories one sweep expires or purges per transaction.
    pub sweep_batch: usize,
    /// `/v1/ask`: prompt budget and generation defaults.
    pub rag: RagConfig,
    /// How often the indexer reads the store's model state (to switch a
    /// finished re-embedding, or follow a switch made by another node).
    pub model_check_interval: Duration,
    /// Readiness fails when the indexer has made no progress for this long
    /// while changes wait.
    pub index_stall_after: Duration,
    /// Readiness fails when more rows than this are quarantined.
    pub max_quarantined: usize,
    /// How conversation messages are indexed with their context.
    pub context: crate::context::Recipe,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_text_bytes: 32 * 1024,
            max_batch: 256,
            max_metadata_bytes: 64 * 1024,
            max_tags: 64,
            max_k: 1000,
            default_k: 10,
            max_list_limit: 1000,
            candidate_factor: 4,
            min_candidates: 100,
            fusion: FusionParams::default(),
            worker_batch: 32,
            job_lease: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            persist_interval: Duration::from_secs(30),
            query_cache_entries: 10_000,
            embedding_cache_ttl: Duration::from_secs(24 * 3600),
            result_cache_ttl: Duration::from_secs(30),
            pii_detect: true,
            audit_reads: false,
            purge_after: Duration::from_secs(30 * 24 * 3600),
            sweep_batch: 500,
            rag: RagConfig::default(),
            model_check_interval: Duration::from_secs(1),
            index_stall_after: Duration::from_secs(60),
            max_quarantined: 0,
            context: crate::context::Recipe::default(),
        }
    }
}

/// The back-ends an engine runs on.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub vectors: Arc<dyn VectorIndex>,
    pub keywords: Arc<dyn KeywordIndex>,
    /// The embedder of the store's active model (see [`crate::reembed::pick`]), and
    /// `vectors` is its index.
    pub embedder: Arc<dyn Embedder>,
    /// While re-embedding to another model: its embedder and how to open its
    /// (shadow) vector index. See [`crate::reembed`].
    pub next: Option<NextModel>,
    pub queue: Arc<dyn JobQueue>,
    /// Query embeddings and search rankings: a [`MemoryCache`](crate::MemoryCache)
    /// in the embedded mode, shared (Redis) in the scale-out mode.
    pub cache: Arc<dyn Cache>,
    /// The chat server of `/v1/ask`; `None` when no LLM is configured.
    pub llm: Option<Arc<dyn Llm>>,
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    /// The query embedder and the vector index of the active model, swapped
    /// together when a re-embedding switches models.
    pub(crate) active: std::sync::RwLock<Arc<Active>>,
    pub(crate) keywords: Arc<dyn KeywordIndex>,
    pub(crate) embedders: Embedders,
    pub(crate) next_index: Option<OpenIndex>,
    /// The vector index of the re-embedding target, following the feed.
    pub(crate) shadow: tokio::sync::Mutex<Option<Shadow>>,
    /// Set when the store's active model is one this node has no embedder
    /// for (another node switched): vector searches fail rather than compare
    /// vectors of two models.
    pub(crate) model_missing: std::sync::Mutex<Option<String>>,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) attrs: Arc<AttrTable>,
    pub(crate) cfg: EngineConfig,
    /// Highest change seq applied to every derived index.
    pub(crate) indexed: watch::Sender<u64>,
    pub(crate) indexer_wake: Notify,
    /// Keys in the store's quarantine (see [`crate::quarantine`]): the
    /// indexer releases one as soon as its row decodes again. Refreshed
    /// from the store by the indexer, since other nodes quarantine too.
    pub(crate) quarantined: std::sync::Mutex<HashSet<Key>>,
    /// When the indexer last made progress, for readiness.
    pub(crate) indexer_health: std::sync::Mutex<IndexerHealth>,
    /// Attributes of messages this node deleted, until the indexer sees
    /// their removal (see `crate::sessions`).
    pub(crate) departed: std::sync::Mutex<HashMap<Key, Arc<DocAttrs>>>,
    pub(crate) cache: Arc<dyn Cache>,
    llm: Option<Arc<dyn Llm>>,
}

impl Engine {
    /// Build an engine and load the derived in-memory state (filter attributes).
    /// Call [`Engine::catch_up`] before serving so indexes reflect the store.
    pub async fn open(b: Backends, cfg: EngineConfig) -> Result<Arc<Engine>> {
        let attrs = Arc::new(AttrTable::new());
        let mut embedders_next = None;
        let mut after = None;
        loop {
            let page = b.store.live_attrs(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(match last {
                Ok((key, _)) => *key,
                Err(c) => c.key,
            });
            let (ok, corrupt) = quarantine::split(page, QuarantineSource::Attrs);
            for (key, a) in ok {
                attrs.insert(key, Arc::new(a));
            }
            quarantine::record(&*b.store, corrupt).await?;
        }
        let quarantined = quarantine::keys(&*b.store).await?;
        let start = b.vectors.persisted_seq().min(b.keywords.persisted_seq());
        let (indexed, _) = watch::channel(start);
        let state = b.store.init_model(b.embedder.model()).await?;
        crate::reembed::check_active(&state, b.embedder.model())?;
        let mut shadow = None;
        let mut next_index = None;
        if let Some(next) = b.next {
            b.store.begin_reembed(next.embedder.model()).await?;
            let index = (next.open_index)().await?;
            shadow = Some(Shadow {
                pos: index.persisted_seq(),
                index,
            });
            next_index = Some(next.open_index);
            tracing::info!(
                from = %b.embedder.model().version,
                to = %next.embedder.model().version,
                "re-embedding to the next model"
            );
            embedders_next = Some(next.embedder);
        }
        Ok(Arc::new(Engine {
            store: b.store,
            active: std::sync::RwLock::new(Arc::new(Active {
                embedder: b.embedder.clone(),
                vectors: b.vectors,
            })),
            keywords: b.keywords,
            embedders: Embedders {
                primary: b.embedder,
                next: embedders_next,
            },
            next_index,
            shadow: tokio::sync::Mutex::new(shadow),
            model_missing: std::sync::Mutex::new(None),
            queue: b.queue,
            attrs,
            cache: b.cache,
            llm: b.llm,
            cfg,
            indexed,
            indexer_wake: Notify::new(),
            quarantined: std::sync::Mutex::new(quarantined),
            indexer_health: std::sync::Mutex::new(IndexerHealth::new()),
            departed: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The active model: what queries are embedded with.
    pub fn model(&self) -> ModelInfo {
        self.active().embedder.model().clone()
    }

    /// The active model's embedder and vector index, taken together.
    pub(crate) fn active(&self) -> Arc<Active> {
        self.active.read().expect("active model lock").clone()
    }

    pub(crate) fn set_active(&self, a: Active) {
        *self.active.write().expect("active model lock") = Arc::new(a);
    }

    // ---- writes -------------------------------------------------------------

    /// Store memories in a namespace and queue their embedding. Returns once
    /// they are durable (not yet searchable: see [`Engine::wait_searchable`]).
    #[tracing::instrument(name = "engine.create", skip_all, fields(tenant = %p.tenant, %namespace, items = items.len()))]
    pub async fn create(
        &self,
        p: &Principal,
        namespace: &str,
        items: Vec<MemoryInput>,
    ) -> Result<Vec<(Created, Inserted)>> {
        validate_namespace(namespace)?;
        p.authorize_in(Action::Write, namespace)?;
        if items.is_empty() {
            return Err(Error::invalid("no memories given"));
        }
        if items.len() > self.cfg.max_batch {
            return Err(Error::TooLarge(format!(
                "{} memories in one batch; the limit is {}",
                items.len(),
                self.cfg.max_batch
            )));
        }
        let now = Utc::now();
        let mut news = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let n = self
                .new_memory(p, namespace, item, now)
                .map_err(|e| prefix_item(e, i))?;
            news.push(n);
        }
        let inserted = self
            .store
            .insert(news, &AuditCtx::of(p))
            .instrument(info_span!("store.insert"))
            .await?;
        if inserted.iter().any(|i| i.created) {
            self.queue
                .enqueued()
                .instrument(info_span!("queue.notify"))
                .await?;
        }
        Ok(inserted
            .into_iter()
            .map(|ins| {
                let c = Created {
                    id: ins.id,
                    status: if ins.created { "created" } else { "duplicate" },
                    state: ins.state,
                };
                (c, ins)
            })
            .collect())
    }

    pub(crate) fn new_memory(
        &self,
        p: &Principal,
        namespace: &str,
        m: MemoryInput,
        now: DateTime<Utc>,
    ) -> Result<NewMemory> {
        let text = self.validate_text(&m.text)?;
        let metadata = m.metadata.unwrap_or_default();
        self.validate_metadata(&metadata)?;
        let tags = self.validate_tags(m.tags)?;
        let pii = self.pii_flags(&text, m.pii.unwrap_or_default(), &[])?;
        if let Some(c) = &m.client_id {
            if c.is_empty() {
                return Err(Error::invalid("client_id must not be empty"));
            }
            limits::check_string("client_id", c, limits::MAX_CLIENT_ID_BYTES)?;
        }
        if let Some(pv) = &m.provenance {
            for (field, v) in [
                ("provenance.agent", &pv.agent),
                ("provenance.session", &pv.session),
                ("provenance.parent", &pv.parent),
                ("provenance.reference", &pv.reference),
            ] {
                if let Some(v) = v {
                    limits::check_string(field, v, limits::MAX_PROVENANCE_BYTES)?;
                }
            }
        }
        let occurred_at = m.occurred_at.unwrap_or(now);
        limits::check_time("occurred_at", occurred_at)?;
        let expires_at = match (m.expires_at, m.ttl_seconds) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("give expires_at or ttl_seconds, not both"))
            }
            (Some(t), None) => {
                limits::check_expiry(now, t)?;
                Some(t)
            }
            (None, Some(s)) => Some(limits::expiry_after(now, "ttl_seconds", s)?),
            (None, None) => None,
        };
        Ok(NewMemory {
            id: Uuid::now_v7(),
            tenant: p.tenant.clone(),
            namespace: namespace.to_string(),
            checksum: text::checksum(namespace, &text),
            text,
            kind: m.kind.unwrap_or_default(),
            metadata,
            tags,
            provenance: m.provenance,
            client_id: m.client_id,
            created_at: now,
            occurred_at,
            session: None,
            expires_at,
            pii,
        })
    }

    /// Wait until these memories are searchable (embedded and indexed) or
    /// failed, at most `timeout`. Returns whether all got there.
    pub async fn wait_searchable(
        &self,
        ids: &[Uuid],
        p: &Principal,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.indexed.subscribe();
        let mut pending: Vec<Uuid> = ids.to_vec();
        loop {
            let indexed = *rx.borrow_and_update();
            let mut still = Vec::new();
            for id in pending {
                match self.store.get(&p.tenant, id).await? {
                    Some(m) if m.deleted_at.is_none() => match m.state {
                        State::Ready if m.seq <= indexed => {}
                        State::Failed => {}
                        _ => still.push(id),
                    },
                    _ => {}
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            // Woken by index progress; the short cap covers embeddings that
            // complete without a new indexer round (duplicates).
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    /// A memory as the caller may see it (PII redacted without `pii:read`).
    pub async fn get(&self, p: &Principal, id: Uuid) -> Result<Memory> {
        p.authorize(Action::Read)?;
        let m = self.visible(p, id).await?;
        self.audit_read(p, "get", vec![m.id]).await?;
        Ok(redact_memory(p, m))
    }

    /// The embedding state of a memory the caller may see (no content is
    /// returned, so this is not an audited read).
    pub async fn state(&self, p: &Principal, id: Uuid) -> Result<State> {
        p.authorize(Action::Read)?;
        Ok(self.visible(p, id).await?.state)
    }

    /// The live, unexpired memory `id` if it is in a namespace the caller
    /// sees; otherwise not found (other tenants' and namespaces' ids are not
    /// revealed). Not redacted: for internal use.
    pub(crate) async fn visible(&self, p: &Principal, id: Uuid) -> Result<Memory> {
        match self.store.get(&p.tenant, id).await? {
            Some(m)
                if m.deleted_at.is_none()
                    && !m.is_expired(Utc::now())
                    && p.sees_namespace(&m.namespace) =>
            {
                Ok(m)
            }
            _ => Err(Error::MemoryNotFound(id.to_string())),
        }
    }

    #[tracing::instrument(name = "engine.update", skip_all, fields(tenant = %p.tenant, %id))]
    pub async fn update(&self, p: &Principal, id: Uuid, u: MemoryUpdate) -> Result<Memory> {
        p.authorize(Action::Write)?;
        if u.legal_hold.is_some() {
            // Holds are a legal decision, not an editing right.
            p.authorize(Action::Admin)?;
        }
        let current = self.visible(p, id).await?;
        let audit = AuditCtx::of(p);
        let now = Utc::now();
        // Everything is checked before the one store call that applies the
        // whole patch (hold included) in one transaction.
        let mut patch = MemoryPatch {
            legal_hold: u.legal_hold,
            ..MemoryPatch::default()
        };
        if let Some(t) = u.text {
            let t = self.validate_text(&t)?;
            // A message keeps its place in its session: its checksum covers
            // session, position and speaker too (see `crate::sessions`).
            let sum = match &current.session {
                Some(s) => crate::sessions::message_checksum(&current.namespace, s, &t),
                None => text::checksum(&current.namespace, &t),
            };
            if sum != current.checksum {
                let kept = u.pii.clone().unwrap_or_else(|| current.pii.clone());
                patch.pii = Some(self.pii_flags(&t, kept, &current.pii)?);
                patch.text = Some((t, sum));
            }
        }
        if patch.pii.is_none() {
            if let Some(flags) = u.pii {
                patch.pii = Some(self.pii_flags(&current.text, flags, &[])?);
            }
        }
        if let Some(m) = u.metadata {
            self.validate_metadata(&m)?;
            patch.metadata = Some(m);
        }
        if let Some(t) = u.tags {
            patch.tags = Some(self.validate_tags(t)?);
        }
        patch.kind = u.kind;
        if let Some(e) = u.expires_at {
            if let Some(t) = e {
                limits::check_expiry(now, t)?;
            }
            patch.expires_at = Some(e);
        }
        let reembed = patch.text.is_some();
        let changes = patch.changes_content();
        if !changes && u.legal_hold.is_none_or(|h| h == current.legal_hold) {
            return Ok(redact_memory(p, current));
        }
        let m = self
            .store
            .update(&p.tenant, id, patch, now, &audit)
            .await?
            .ok_or_else(|| Error::MemoryNotFound(id.to_string()))?;
        if changes {
            // Make the new state visible to searches now rather than when the
            // indexer gets there: new filter attributes, or hidden until
            // re-embedded.
            let visible = (m.state == State::Ready).then(|| Arc::new(m.attrs()));
            self.attrs.apply_versioned(m.key, m.seq, visible);
            self.bump_generation(&p.tenant).await;
            if reembed {
                self.queue.enqueued().await?;
            }
            self.indexer_wake.notify_one();
        }
        Ok(redact_memory(p, m))
    }

    /// Delete a memory: soft by default (restorable until the retention
    /// sweeper purges it), or `hard` (admins only: content erased at once).
    /// Either way it disappears from get, list, search and export at once.
    #[tracing::instrument(name = "engine.delete", skip_all, fields(tenant = %p.tenant, %id, hard))]
    pub async fn delete(&self, p: &Principal, id: Uuid, hard: bool) -> Result<()> {
        p.authorize(Action::Write)?;
        let audit = AuditCtx::of(p);
        let now = Utc::now();
        let m = if hard {
            p.authorize(Action::Admin)?;
            // A soft-deleted memory may still be purged.
            match self.store.get(&p.tenant, id).await? {
                Some(m) if p.sees_namespace(&m.namespace) => {}
                _ => return Err(Error::MemoryNotFound(id.to_string())),
            }
            self.store.purge(&p.tenant, id, now, &audit).await?
        } else {
            let m = self.visible(p, id).await?;
            p.authorize_in(Action::Write, &m.namespace)?;
            self.store.soft_delete(&p.tenant, id, now, &audit).await?
        }
        .ok_or_else(|| Error::MemoryNotFound(id.to_string()))?;
        self.forget(&p.tenant, std::slice::from_ref(&m)).await;
        Ok(())
    }

    /// After memories were deleted: gone from searches at once (rather than
    /// when the indexer gets there), cached rankings obsolete.
    pub(crate) async fn forget(&self, tenant: &str, gone: &[Memory]) {
        for m in gone {
            if m.session.is_some() {
                // The indexer re-indexes a deleted message's neighbours; it
                // finds its session here, the attributes being gone already.
                let mut d = self.departed.lock().expect("departed lock");
                if d.len() >= MAX_DEPARTED {
                    d.clear();
                }
                d.insert(m.key, Arc::new(m.attrs()));
            }
            self.attrs.apply_versioned(m.key, m.seq, None);
        }
        if !gone.is_empty() {
            self.bump_generation(tenant).await;
            self.indexer_wake.notify_one();
        }
    }

    // ---- reads --------------------------------------------------------------

    pub async fn list(&self, p: &Principal, req: ListRequest) -> Result<Page> {
        p.authorize(Action::Read)?;
        let requested = req.namespace.iter().cloned().collect::<Vec<_>>();
        let Some(namespaces) = self.namespaces_in_scope(p, &requested).await? else {
            return Ok(Page {
                memories: Vec::new(),
                next_cursor: None,
            });
        };
        let filter = req.filter.as_ref().map(Filter::parse).transpose()?;
        let limit = req.limit.unwrap_or(100);
        limits::check_count("limit", limit, self.cfg.max_list_limit)?;
        // The cursor is the id of the last memory of the previous page (an
        // opaque token to clients): its store key would reveal how many
        // memories every tenant writes.
        // In event-time order the position is (event time, key).
        let mut after: Option<(DateTime<Utc>, Key)> = match &req.cursor {
            Some(c) => {
                let invalid = || Error::bad(Code::InvalidCursor, format!("invalid cursor {c:?}"));
                let id = Uuid::parse_str(c).map_err(|_| invalid())?;
                let m = self.store.get(&p.tenant, id).await?.ok_or_else(invalid)?;
                Some((m.occurred_at, m.key))
            }
            None => None,
        };
        let now = Utc::now();
        let mut out = Vec::with_capacity(limit);
        // The filter runs here, over pages of the scan, so that a page is full
        // whenever enough matches exist.
        let page_size = (limit * 2).clamp(100, 2000);
        loop {
            let page = match req.sort {
                ListSort::Inserted => {
                    self.store
                        .scan(&p.tenant, &namespaces, after.map(|a| a.1), page_size)
                        .await?
                }
                ListSort::OccurredAt | ListSort::OccurredAtDesc => {
                    let descending = req.sort == ListSort::OccurredAtDesc;
                    self.store
                        .scan_by_time(&p.tenant, &namespaces, after, descending, page_size)
                        .await?
                }
            };
            let exhausted = page.len() < page_size;
            for m in page {
                let m = match m {
                    Ok(m) => m,
                    Err(c) => {
                        self.quarantine(vec![quarantine::entry(&c, QuarantineSource::Read, None)])
                            .await?;
                        // Left out; the list goes on past it. Both stores
                        // refuse event times they cannot read back, so a
                        // corrupt row's still decodes; if not, its place in
                        // event-time order is unknown and the list stops.
                        match c.occurred_at {
                            Some(t) => after = Some((t, c.key)),
                            None if req.sort == ListSort::Inserted => {
                                after = Some((DateTime::<Utc>::MIN_UTC, c.key))
                            }
                            None => return Err(Error::Corrupt(c.error)),
                        }
                        continue;
                    }
                };
                after = Some((m.occurred_at, m.key));
                if m.is_expired(now) || filter.as_ref().is_some_and(|f| !f.matches(&m.attrs())) {
                    continue;
                }
                out.push(redact_memory(p, m));
                if out.len() == limit {
                    self.audit_read(p, "list", out.iter().map(|m| m.id).collect())
                        .await?;
                    return Ok(Page {
                        // The memory just added is the last one scanned.
                        next_cursor: out.last().map(|m| m.id.to_string()),
                        memories: out,
                    });
                }
            }
            if exhausted {
                self.audit_read(p, "list", out.iter().map(|m| m.id).collect())
                    .await?;
                return Ok(Page {
                    memories: out,
                    next_cursor: None,
                });
            }
        }
    }

    /// Invalidate the tenant's cached rankings after a committed change to
    /// what its searches see. A failure is logged: rankings may then be stale
    /// for up to the result TTL, contents never (see [`crate::cache`]).
    async fn bump_generation(&self, tenant: &str) {
        if let Err(e) = self.cache.bump(tenant).await {
            cache::record_error("bump", &e);
        }
    }

    /// Embed texts with the engine's model (`/v1/embeddings`), for clients
    /// that want the same vectors engram indexes with.
    pub async fn embed(&self, p: &Principal, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        p.authorize(Action::Read)?;
        if texts.is_empty() {
            return Err(Error::invalid("input must not be empty"));
        }
        if texts.len() > self.cfg.max_batch {
            return Err(Error::TooLarge(format!(
                "{} inputs; the limit is {}",
                texts.len(),
                self.cfg.max_batch
            )));
        }
        for (i, t) in texts.iter().enumerate() {
            if t.len() > self.cfg.max_text_bytes {
                return Err(Error::TooLarge(format!(
                    "input[{i}] is {} bytes; the limit is {}",
                    t.len(),
                    self.cfg.max_text_bytes
                )));
            }
        }
        self.active().embedder.embed(&texts).await
    }

    /// Retrieval-augmented answer (`/v1/ask`): search with the caller's
    /// rights (so the model sees only what the caller may read, PII redacted
    /// as for the caller), build the cited prompt, start the completion.
    /// Retrieval errors come back before the LLM is called.
    #[tracing::instrument(name = "engine.ask", skip_all, fields(tenant = %p.tenant))]
    pub async fn ask(&self, p: &Principal, req: AskRequest) -> Result<Asking> {
        p.authorize(Action::Read)?;
        let llm = self.llm.as_ref().ok_or(Error::LlmNotConfigured)?;
        let rc = &self.cfg.rag;
        let max_tokens = req.max_tokens.unwrap_or(rc.default_max_tokens);
        limits::check_count(
            "max_tokens",
            max_tokens as usize,
            rc.max_tokens_limit as usize,
        )?;
        let temperature = req.temperature.unwrap_or(rc.default_temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(Error::out_of_range("temperature must be between 0 and 2"));
        }
        let started = Instant::now();
        let question = req.question;
        let found = self
            .search(
                p,
                SearchRequest {
                    query: question.clone(),
                    namespaces: req.namespaces,
                    filter: req.filter,
                    k: Some(req.k.unwrap_or(rc.default_k)),
                    mode: req.mode,
                    weights: req.weights,
                    ..Default::default()
                },
            )
            .await?;
        let retrieval = started.elapsed();
        let (messages, sources) = rag::build_prompt(rc, &question, found.hits);
        let tokens = llm
            .chat(ChatRequest {
                messages,
                max_tokens,
                temperature,
            })
            .instrument(info_span!("llm.chat", model = llm.model(), max_tokens))
            .await
            .inspect_err(rag::record_llm_error)?;
        Ok(Asking::new(
            sources,
            llm.model().to_string(),
            tokens,
            started,
            retrieval,
        ))
    }

    /// The configured LLM, for health probes and model checks.
    pub fn llm(&self) -> Option<&Arc<dyn Llm>> {
        self.llm.as_ref()
    }

    pub async fn namespaces(&self, p: &Principal) -> Result<Vec<NamespaceInfo>> {
        p.authorize(Action::Read)?;
        let mut all = self.store.namespaces(&p.tenant).await?;
        all.retain(|n| p.sees_namespace(&n.name));
        Ok(all)
    }

    /// The namespaces a read covers: the requested ones (each must exist and
    /// be visible to the caller), or, when none are requested, all of the
    /// tenant's for an unscoped caller (an empty list) and the visible ones
    /// for a scoped caller. `None`: a scoped caller who sees no namespace at all.
    pub(crate) async fn namespaces_in_scope(
        &self,
        p: &Principal,
        requested: &[String],
    ) -> Result<Option<Vec<String>>> {
        for ns in requested {
            validate_namespace(ns)?;
            p.authorize_in(Action::Read, ns)?;
            if !self.store.namespace_exists(&p.tenant, ns).await? {
                return Err(Error::NamespaceNotFound(ns.to_string()));
            }
        }
        if !requested.is_empty() || p.unscoped() {
            return Ok(Some(requested.to_vec()));
        }
        let visible: Vec<String> = self
            .store
            .namespaces(&p.tenant)
            .await?
            .into_iter()
            .filter(|n| p.sees_namespace(&n.name))
            .map(|n| n.name)
            .collect();
        Ok((!visible.is_empty()).then_some(visible))
    }

    /// One `read` audit event when reads are audited.
    pub(crate) async fn audit_read(&self, p: &Principal, what: &str, ids: Vec<Uuid>) -> Result<()> {
        if !self.cfg.audit_reads {
            return Ok(());
        }
        let entry = AuditEntry {
            tenant: p.tenant.clone(),
            action: AuditAction::Read,
            target: what.to_string(),
            details: serde_json::json!({ "ids": ids }),
        };
        self.store.append_audit(vec![entry], &AuditCtx::of(p)).await
    }

    // ---- jobs ---------------------------------------------------------------

    pub async fn jobs(
        &self,
        p: &Principal,
        state: Option<JobState>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        p.authorize(Action::Read)?;
        require_unscoped(p, "jobs")?;
        limits::check_count("limit", limit, self.cfg.max_list_limit)?;
        limits::check_cursor("after", after)?;
        self.store.list_jobs(&p.tenant, state, after, limit).await
    }

    pub async fn job(&self, p: &Principal, id: u64) -> Result<Job> {
        p.authorize(Action::Read)?;
        require_unscoped(p, "jobs")?;
        self.store
            .get_job(&p.tenant, id)
            .await?
            .ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// Put a dead-lettered job back in the queue.
    pub async fn retry_job(&self, p: &Principal, id: u64) -> Result<Job> {
        p.authorize(Action::Write)?;
        require_unscoped(p, "jobs")?;
        match self
            .store
            .retry_job(&p.tenant, id, Utc::now(), &AuditCtx::of(p))
            .await?
        {
            Some(j) => {
                self.queue.enqueued().await?;
                Ok(j)
            }
            None => match self.store.get_job(&p.tenant, id).await? {
                Some(j) => Err(Error::Conflict(format!(
                    "job {id} is {}, only dead jobs can be retried",
                    j.state.as_str()
                ))),
                None => Err(Error::JobNotFound(id.to_string())),
            },
        }
    }

    pub async fn stats(&self, p: &Principal) -> Result<EngineStats> {
        p.authorize(Action::Read)?;
        require_unscoped(p, "stats")?;
        let model = self.model();
        let reembed = self.reembed_status(&model).await?;
        let store = self.store.stats(Some(&p.tenant)).await?;
        let indexed_seq = *self.indexed.borrow();
        Ok(EngineStats {
            caught_up: indexed_seq >= store.max_seq,
            store,
            quarantined: quarantine::count(&*self.store, Some(&p.tenant)).await?,
            indexed_seq,
            vectors: self.active().vectors.len(),
            keywords: self.keywords.len(),
            model,
            reembed,
        })
    }

    /// Store-wide counts for the operator's metrics (no tenant's data, only
    /// totals, so it takes no principal; the server decides who may scrape).
    pub async fn totals(&self) -> Result<EngineStats> {
        let model = self.model();
        let reembed = self.reembed_status(&model).await?;
        let store = self.store.stats(None).await?;
        let indexed_seq = *self.indexed.borrow();
        Ok(EngineStats {
            caught_up: indexed_seq >= store.max_seq,
            store,
            quarantined: quarantine::count(&*self.store, None).await?,
            indexed_seq,
            vectors: self.active().vectors.len(),
            keywords: self.keywords.len(),
            model,
            reembed,
        })
    }

    /// Readiness: the store answers, the indexes follow it (caught up and
    /// not stalled) and no more rows are quarantined than allowed.
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await?;
        self.index_health().await?;
        self.quarantine_health().await?;
        Ok(())
    }

    /// Record quarantined rows (see [`crate::quarantine`]).
    pub(crate) async fn quarantine(&self, entries: Vec<QuarantineEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<Key> = entries.iter().map(|e| e.key).collect();
        quarantine::record(&*self.store, entries).await?;
        self.quarantined
            .lock()
            .expect("quarantine lock")
            .extend(keys);
        Ok(())
    }

    /// The caller's tenant's quarantined rows, in key order after `after`
    /// (admins of the whole tenant).
    pub async fn quarantined(
        &self,
        p: &Principal,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "the quarantine")?;
        limits::check_count("limit", limit, self.cfg.max_list_limit)?;
        self.store.quarantined(Some(&p.tenant), after, limit).await
    }

    /// Reload the quarantined keys: other nodes (and workers) quarantine too.
    async fn refresh_quarantine(&self) -> Result<()> {
        let keys = quarantine::keys(&*self.store).await?;
        *self.quarantined.lock().expect("quarantine lock") = keys;
        Ok(())
    }

    // ---- background work ------------------------------------------------------

    /// An embedding worker wired to this engine's queue, embedder and indexer.
    pub fn worker(self: &Arc<Self>) -> EmbedWorker {
        let me = Arc::downgrade(self);
        EmbedWorker {
            queue: self.queue.clone(),
            store: self.store.clone(),
            embedders: self.embedders.clone(),
            batch: self.cfg.worker_batch,
            models: tokio::sync::Mutex::new(None),
            backfill: tokio::sync::Mutex::new(Backfill::default()),
            on_progress: Arc::new(move || {
                if let Some(e) = me.upgrade() {
                    e.indexer_wake.notify_one();
                }
            }),
        }
    }

    /// Apply the next page of the change feed to every derived index.
    /// Returns the number of changes applied.
    pub async fn index_once(&self) -> Result<usize> {
        let from = *self.indexed.borrow();
        let changes = self.store.changes_since(from, 1024).await?;
        let Some(last) = changes.last().map(|c| c.seq) else {
            return Ok(0);
        };
        let span = info_span!("index.apply", changes = changes.len(), from, to = last);
        self.apply_changes(changes, last).instrument(span).await
    }

    async fn apply_changes(&self, mut changes: Vec<Change>, last: u64) -> Result<usize> {
        // Rows that cannot be decoded are quarantined and removed from the
        // indexes (their state is unknown); the feed goes on past them.
        // Quarantined keys whose rows decode again are released.
        let mut corrupt = Vec::new();
        let mut healed = Vec::new();
        {
            let quarantined = self.quarantined.lock().expect("quarantine lock");
            for c in &mut changes {
                if let ChangeOp::Corrupt(bad) = &c.op {
                    corrupt.push(quarantine::entry(bad, QuarantineSource::Feed, Some(c.seq)));
                    c.op = ChangeOp::Remove;
                } else if quarantined.contains(&c.key) {
                    healed.push(c.key);
                }
            }
        }
        // The attributes the batch's messages had before it (a removed
        // message's neighbours are re-indexed without it).
        let old: HashMap<Key, Arc<DocAttrs>> = {
            let mut departed = self.departed.lock().expect("departed lock");
            changes
                .iter()
                .filter_map(|c| {
                    let gone = departed.remove(&c.key);
                    self.attrs.get(c.key).or(gone).map(|a| (c.key, a))
                })
                .filter(|(_, a)| a.session.is_some())
                .collect()
        };
        // Tenants whose searchable state this batch changes: an upsert's, and
        // a removal's as long as its attributes are still known (a removed
        // message's neighbours are re-indexed).
        let mut tenants: BTreeSet<String> = old.values().map(|a| a.tenant.clone()).collect();
        for c in &changes {
            let attrs = match &c.op {
                ChangeOp::Upsert(d) => {
                    tenants.insert(d.attrs.tenant.clone());
                    Some(d.attrs.clone())
                }
                ChangeOp::Remove | ChangeOp::Corrupt(_) => {
                    if let Some(a) = self.attrs.get(c.key) {
                        tenants.insert(a.tenant.clone());
                    }
                    None
                }
            };
            self.attrs.apply_versioned(c.key, c.seq, attrs);
        }
        let vectors = self.active().vectors.clone();
        let vec_from = vectors.persisted_seq();
        let kw_from = self.keywords.persisted_seq();
        let for_vec: Vec<Change> = changes
            .iter()
            .filter(|c| c.seq > vec_from)
            .cloned()
            .collect();
        let for_kw: Vec<Change> = changes
            .iter()
            .filter(|c| c.seq > kw_from)
            .cloned()
            .collect();
        let for_kw = self.keyword_changes(for_kw, &old).await?;
        tokio::try_join!(vectors.apply(&for_vec), self.keywords.apply(&for_kw))?;
        // Recorded before the position moves past them, so a failure here
        // retries the batch (applying is idempotent).
        self.quarantine(corrupt).await?;
        if !healed.is_empty() {
            self.store.release_quarantine(&healed).await?;
            let mut q = self.quarantined.lock().expect("quarantine lock");
            for k in &healed {
                q.remove(k);
            }
            tracing::info!(keys = ?healed, "quarantined rows decode again: released");
        }
        // Invalidate cached rankings once the indexes have the changes and
        // before anyone waiting for this position is released.
        futures::future::join_all(tenants.iter().map(|t| self.bump_generation(t))).await;
        self.indexed.send_replace(last);
        Ok(changes.len())
    }

    /// Replay the change feed until the indexes have everything the store has.
    pub async fn catch_up(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.index_once().await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok(total)
    }

    /// Save every derived index at the current position.
    pub async fn persist_indexes(&self) -> Result<()> {
        let seq = *self.indexed.borrow();
        self.active().vectors.persist(seq).await?;
        self.keywords.persist(seq).await?;
        if let Some(sh) = self.shadow.lock().await.as_ref() {
            sh.index.persist(sh.pos).await?;
        }
        Ok(())
    }

    /// The change-feed position the indexes have reached (for progress reports).
    pub fn indexed_position(&self) -> watch::Receiver<u64> {
        self.indexed.subscribe()
    }

    /// Throw the derived indexes away and re-derive them from the store.
    pub async fn rebuild(&self) -> Result<u64> {
        self.active().vectors.clear().await?;
        self.keywords.clear().await?;
        if let Some(sh) = self.shadow.lock().await.as_mut() {
            sh.index.clear().await?;
            sh.pos = 0;
        }
        self.attrs.clear();
        self.indexed.send_replace(0);
        let n = self.catch_up().await?;
        self.persist_indexes().await?;
        Ok(n)
    }

    /// Run the indexer until `shutdown` fires, persisting periodically and on exit.
    pub async fn run_indexer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_persist = Instant::now();
        let mut persisted_at = *self.indexed.borrow();
        let mut last_model_check = Instant::now();
        let mut last_quarantine_refresh = Instant::now();
        loop {
            // Periodic work (persisting, model checks) also runs while
            // changes keep coming, not only when the feed is idle.
            let mut busy = match self.index_once().await {
                Ok(n) => {
                    // Progress, or nothing waiting: either way not stalled.
                    let mut h = self.indexer_health.lock().expect("indexer health lock");
                    h.last_progress = Instant::now();
                    h.last_error = None;
                    n > 0
                }
                Err(e) => {
                    tracing::error!(error = %e, "indexer round failed");
                    self.indexer_health
                        .lock()
                        .expect("indexer health lock")
                        .last_error = Some(e.to_string());
                    false
                }
            };
            if last_quarantine_refresh.elapsed() >= Duration::from_secs(10) {
                last_quarantine_refresh = Instant::now();
                if let Err(e) = self.refresh_quarantine().await {
                    tracing::warn!(error = %e, "reading the quarantine failed");
                }
            }
            match self.shadow_once().await {
                Ok(n) => busy |= n > 0,
                Err(e) => tracing::error!(error = %e, "shadow index round failed"),
            }
            if last_model_check.elapsed() >= self.cfg.model_check_interval {
                last_model_check = Instant::now();
                if let Err(e) = self.follow_models().await {
                    tracing::error!(error = %e, "checking the embedding models failed");
                }
            }
            let at = *self.indexed.borrow();
            if at != persisted_at && last_persist.elapsed() >= self.cfg.persist_interval {
                match self.persist_indexes().await {
                    Ok(()) => persisted_at = at,
                    Err(e) => tracing::error!(error = %e, "persisting indexes failed"),
                }
                last_persist = Instant::now();
            }
            if *shutdown.borrow() {
                break;
            }
            if busy {
                continue;
            }
            tokio::select! {
                _ = self.indexer_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = self.index_once().await;
        if let Err(e) = self.persist_indexes().await {
            tracing::error!(error = %e, "persisting indexes on shutdown failed");
        }
    }

    fn validate_text(&self, t: &str) -> Result<String> {
        if t.len() > self.cfg.max_text_bytes {
            return Err(Error::TooLarge(format!(
                "text is {} bytes; the limit is {}",
                t.len(),
                self.cfg.max_text_bytes
            )));
        }
        limits::check_string("text", t, self.cfg.max_text_bytes)?;
        let n = text::normalize(t);
        if n.is_empty() {
            return Err(Error::bad(Code::InvalidText, "text must not be empty"));
        }
        Ok(t.trim().to_string())
    }

    fn validate_metadata(&self, m: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.cfg.max_metadata_bytes {
            return Err(Error::TooLarge(format!(
                "metadata is {size} bytes; the limit is {}",
                self.cfg.max_metadata_bytes
            )));
        }
        if let Some(k) = m.keys().find(|k| k.is_empty() || k.contains('.')) {
            return Err(Error::bad(
                Code::InvalidMetadata,
                format!("metadata key {k:?} is invalid: keys must be non-empty and contain no '.'"),
            ));
        }
        m.iter().try_for_each(|(k, v)| {
            limits::check_string("metadata key", k, self.cfg.max_metadata_bytes)?;
            limits::check_json("metadata", v, 1)
        })
    }

    fn validate_tags(&self, tags: Vec<String>) -> Result<Vec<String>> {
        if tags.len() > self.cfg.max_tags {
            return Err(Error::TooLarge(format!(
                "{} tags; the limit is {}",
                tags.len(),
                self.cfg.max_tags
            )));
        }
        let mut out: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                return Err(Error::bad(
                    Code::InvalidTag,
                    format!("tag {t:?} is invalid: 1 to 128 bytes, no control characters"),
                ));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }
}

/// Tenant-wide views (jobs, stats, audit, keys) are for callers not limited
/// to some namespaces.
pub(crate) fn require_unscoped(p: &Principal, what: &str) -> Result<()> {
    if p.unscoped() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{what} span every namespace of the tenant; this caller is limited to some"
        )))
    }
}

/// What a caller without `pii:read` sees of a memory flagged as holding PII.
pub(crate) fn redact_memory(p: &Principal, mut m: Memory) -> Memory {
    if !m.pii.is_empty() && !p.reads_pii() {
        let kinds: Vec<crate::pii::PiiKind> = m
            .pii
            .iter()
            .map(|f| crate::pii::PiiKind::parse(f).unwrap_or(crate::pii::PiiKind::Custom))
            .collect();
        m.text = crate::pii::redact(&m.text, &kinds);
    }
    m
}

pub(crate) fn prefix_item(e: Error, i: usize) -> Error {
    match e {
        Error::Invalid { code, message } => Error::Invalid {
            code,
            message: format!("memories[{i}]: {message}"),
        },
        Error::TooLarge(m) => Error::TooLarge(format!("memories[{i}]: {m}")),
        other => other,
    }
}

/// Namespaces: 1 to 128 bytes of letters, digits and `_-:./@`.
pub fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 128
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:./@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad(
            Code::InvalidNamespace,
            format!(
                "namespace {ns:?} is invalid: 1 to 128 characters of letters, digits and _-:./@"
            ),
        ))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStats {
    pub store: StoreStats,
    /// Rows that cannot be decoded (see [`crate::quarantine`]).
    pub quarantined: u64,
    /// The indexes have applied every change of `store` (for a tenant's
    /// stats: every change of that tenant).
    pub caught_up: bool,
    pub indexed_seq: u64,
    pub vectors: usize,
    pub keywords: usize,
    pub model: ModelInfo,
    /// A re-embedding in progress, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reembed: Option<ReembedStatus>,
}
