//! Reads besides search: list, embeddings, RAG, namespaces.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditCtx, AuditEntry};
use crate::cache;
use crate::codes::Code;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::limits;
use crate::quarantine;
use crate::rag::{self, AskRequest, Asking, ChatRequest, Llm};
use crate::requests::*;
use crate::traits::*;
use crate::types::*;

impl Engine {
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
    pub(crate) async fn bump_generation(&self, tenant: &str) {
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
}
