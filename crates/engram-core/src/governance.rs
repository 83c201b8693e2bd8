//! The engine's governance operations: API keys, the audit log, legal hold,
//! restore, retention sweeps, namespace settings and PII flags.

use chrono::Utc;
use std::sync::Arc;
use uuid::Uuid;

use crate::apikey::{ApiKey, CreatedApiKey, MintedKey, NewApiKey};
use crate::audit::{AuditCtx, AuditEvent, AuditQuery, Verifier, VerifyReport};
use crate::engine::{redact_memory, require_unscoped, validate_namespace, Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::lifecycle::Lifecycle;
use crate::limits;
use crate::requests::{AuditBundle, AuditHead, NamespaceSettings, RecordChecksum, SweepReport};
use crate::traits::{NamespaceInfo, Store};
use crate::types::*;

/// Page size for walking a whole chain.
const AUDIT_PAGE: usize = 1000;

impl Engine {
    /// Keys and audit, authorized like every engine call.
    pub fn admin(&self) -> StoreAdmin {
        StoreAdmin {
            store: self.store.clone(),
            max_list_limit: self.cfg.max_list_limit,
        }
    }

    // ---- restore (legal holds are part of `Engine::update`) -------------------

    /// Undo a soft delete (until the memory is purged).
    pub async fn restore(&self, p: &Principal, id: Uuid) -> Result<Memory> {
        p.authorize(Action::Write)?;
        match self.store.get(&p.tenant, id).await? {
            Some(m) if p.sees_namespace(&m.namespace) => {}
            _ => return Err(Error::MemoryNotFound(id.to_string())),
        }
        let m = self
            .store
            .restore(&p.tenant, id, Utc::now(), &AuditCtx::of(p))
            .await?
            .ok_or_else(|| Error::Conflict(format!("memory {id} is not deleted, or was purged")))?;
        self.queue.enqueued().await?;
        self.indexer_wake.notify_one();
        Ok(redact_memory(p, m))
    }

    // ---- retention ------------------------------------------------------------

    /// Soft-delete expired memories and purge those deleted longer than
    /// `purge_after` ago (memories on hold are left alone), batch by batch.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let batch = self.cfg.sweep_batch.max(1);
        let ttl = AuditCtx::system("ttl");
        loop {
            let n = self.store.expire_due(Utc::now(), batch, &ttl).await?;
            report.expired += n;
            if n < batch {
                break;
            }
        }
        let before = Utc::now()
            - chrono::Duration::from_std(self.cfg.purge_after).unwrap_or(chrono::TimeDelta::MAX);
        let retention = AuditCtx::system("retention");
        loop {
            let n = self.store.purge_deleted(before, batch, &retention).await?;
            report.purged += n;
            if n < batch {
                break;
            }
        }
        if report.expired + report.purged > 0 {
            self.indexer_wake.notify_one();
        }
        Ok(report)
    }

    pub async fn set_namespace(
        &self,
        p: &Principal,
        namespace: &str,
        s: NamespaceSettings,
    ) -> Result<NamespaceInfo> {
        validate_namespace(namespace)?;
        p.authorize_in(Action::Admin, namespace)?;
        if let Some(ttl) = s.default_ttl_seconds {
            crate::limits::check_ttl("default_ttl_seconds", ttl)?;
        }
        if !self
            .store
            .set_namespace_ttl(
                &p.tenant,
                namespace,
                s.default_ttl_seconds,
                &AuditCtx::of(p),
            )
            .await?
        {
            return Err(Error::NamespaceNotFound(namespace.to_string()));
        }
        self.store
            .namespaces(&p.tenant)
            .await?
            .into_iter()
            .find(|n| n.name == namespace)
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_string()))
    }

    // ---- PII ------------------------------------------------------------------

    /// The PII flags of a text: the caller's (validated) plus, when detection
    /// is on, the detected kinds. Detectable kinds in `previous` that no
    /// longer occur in the text are dropped.
    pub(crate) fn pii_flags(
        &self,
        text: &str,
        given: Vec<String>,
        previous: &[String],
    ) -> Result<Vec<String>> {
        use crate::pii::PiiKind;
        let locatable = |f: &str| {
            matches!(
                PiiKind::parse(f),
                Some(PiiKind::Email | PiiKind::Phone | PiiKind::Card)
            )
        };
        if given.len() > 16 {
            return Err(Error::invalid("at most 16 pii flags"));
        }
        let mut flags = Vec::new();
        for f in given {
            if f.is_empty()
                || f.len() > 32
                || !f
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(Error::invalid(format!(
                    "pii flag {f:?} must be 1 to 32 lowercase letters, digits or _"
                )));
            }
            // A flag carried over from the old text that detection can check is re-derived.
            if previous.contains(&f) && locatable(&f) && self.cfg.pii_detect {
                continue;
            }
            flags.push(f);
        }
        if self.cfg.pii_detect {
            flags.extend(
                crate::pii::detect(text)
                    .into_iter()
                    .map(|k| k.as_str().to_string()),
            );
        }
        flags.sort();
        flags.dedup();
        Ok(flags)
    }
}

/// Key management and the audit log, over the store alone: the server's
/// engine and the offline CLI (`engram keys`, `engram audit`) share it, and
/// it authorizes every call like the engine does.
#[derive(Clone)]
pub struct StoreAdmin {
    store: Arc<dyn Store>,
    max_list_limit: usize,
}

impl StoreAdmin {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreAdmin {
            store,
            max_list_limit: EngineConfig::default().max_list_limit,
        }
    }

    // ---- API keys -------------------------------------------------------------

    /// The key with this id, for authentication only (`engram_auth::apikey`
    /// checks the presented secret against it): no principal exists yet.
    pub async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>> {
        self.store.api_key(id).await
    }

    /// Store a key minted by `engram_auth::apikey::mint` with the role,
    /// namespaces and permissions asked for.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        req: NewApiKey,
        minted: MintedKey,
    ) -> Result<CreatedApiKey> {
        p.authorize(Action::Admin)?;
        // A namespace-limited admin could otherwise mint an unlimited key.
        require_unscoped(p, "API keys")?;
        let name = req.name.trim();
        if name.is_empty() {
            return Err(Error::invalid("name must not be empty"));
        }
        limits::check_string("name", name, limits::MAX_KEY_NAME_BYTES)?;
        if let Some(patterns) = &req.namespaces {
            if patterns.is_empty() || patterns.iter().any(|p| p.is_empty()) {
                return Err(Error::invalid(
                    "namespaces must be a non-empty list of non-empty patterns",
                ));
            }
            if patterns.len() > limits::MAX_KEY_NAMESPACES {
                return Err(Error::TooLarge(format!(
                    "{} namespace patterns; the limit is {}",
                    patterns.len(),
                    limits::MAX_KEY_NAMESPACES
                )));
            }
            for p in patterns {
                limits::check_string("namespace pattern", p, 256)?;
            }
        }
        let MintedKey {
            id,
            token,
            secret_hash,
        } = minted;
        let key = ApiKey {
            id,
            tenant: p.tenant.clone(),
            name: name.to_string(),
            role: req.role,
            namespaces: req.namespaces,
            permissions: req.permissions,
            created_at: Utc::now(),
            created_by: p.subject.clone(),
            revoked_at: None,
            secret_hash,
        };
        self.store
            .create_api_key(key.clone(), &AuditCtx::of(p))
            .await?;
        Ok(CreatedApiKey { key, token })
    }

    pub async fn api_keys(&self, p: &Principal) -> Result<Vec<ApiKey>> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "API keys")?;
        self.store.list_api_keys(&p.tenant).await
    }

    pub async fn revoke_api_key(&self, p: &Principal, id: &str) -> Result<ApiKey> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "API keys")?;
        self.store
            .revoke_api_key(&p.tenant, id, Utc::now(), &AuditCtx::of(p))
            .await?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }

    // ---- audit ----------------------------------------------------------------

    pub async fn audit_events(&self, p: &Principal, q: AuditQuery) -> Result<Vec<AuditEvent>> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "the audit log")?;
        limits::check_count("limit", q.limit.unwrap_or(100), self.max_list_limit)?;
        limits::check_cursor("after", q.after)?;
        for (field, v) in [("actor", &q.actor), ("target", &q.target)] {
            if let Some(v) = v {
                limits::check_string(field, v, limits::MAX_AUDIT_FILTER_BYTES)?;
            }
        }
        self.store.audit_events(&p.tenant, &q).await
    }

    /// Walk the tenant's whole chain and compare its end with the recorded head.
    pub async fn verify_audit(&self, p: &Principal) -> Result<VerifyReport> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "the audit log")?;
        Ok(self.walk_audit(&p.tenant, |_| {}).await?.0)
    }

    /// Every event of the tenant, the head, the verification and the current
    /// records' checksums.
    pub async fn audit_bundle(&self, p: &Principal) -> Result<AuditBundle> {
        p.authorize(Action::Admin)?;
        require_unscoped(p, "the audit log")?;
        let mut events = Vec::new();
        let (verify, head) = self
            .walk_audit(&p.tenant, |page| events.extend_from_slice(page))
            .await?;
        let mut records = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.scan(&p.tenant, &[], after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(match last {
                Ok(m) => m.key,
                Err(c) => c.key,
            });
            // A record that cannot be decoded has no checksum to give: it is
            // quarantined (and listed under /v1/quarantine) instead.
            let (page, corrupt) =
                crate::quarantine::split(page, crate::types::QuarantineSource::Read);
            crate::quarantine::record(&*self.store, corrupt).await?;
            records.extend(page.into_iter().map(|m| RecordChecksum {
                id: m.id,
                namespace: m.namespace,
                checksum: m.checksum,
            }));
        }
        Ok(AuditBundle {
            tenant: p.tenant.clone(),
            exported_at: Utc::now(),
            head: head.map(|(n, hash)| AuditHead { n, hash }),
            verify,
            events,
            records,
        })
    }

    async fn walk_audit(
        &self,
        tenant: &str,
        mut each_page: impl FnMut(&[AuditEvent]),
    ) -> Result<(VerifyReport, Option<(u64, String)>)> {
        // Read the head first: events appended while we walk come after it.
        let head = self.store.audit_head(tenant).await?;
        let mut v = Verifier::new();
        let mut q = AuditQuery {
            limit: Some(AUDIT_PAGE),
            ..AuditQuery::default()
        };
        let end = head.as_ref().map_or(0, |h| h.0);
        loop {
            let mut page = self.store.audit_events(tenant, &q).await?;
            page.retain(|e| e.n <= end);
            let Some(last) = page.last() else { break };
            q.after = Some(last.n);
            each_page(&page);
            if !v.feed(&page) {
                break;
            }
        }
        match &head {
            Some((n, hash)) => v.expect_head(*n, hash),
            None => v.expect_head(0, crate::audit::GENESIS),
        }
        Ok((v.report(), head))
    }
}
