//! Writes: create, update, delete, and reading a memory back.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::audit::AuditCtx;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::lifecycle::Lifecycle;
use crate::limits;
use crate::requests::*;
use crate::text;
use crate::types::*;

impl Engine {
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
}
