//! Administration: jobs, stats, readiness, quarantine.

use chrono::Utc;

use crate::audit::AuditCtx;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::limits;
use crate::quarantine;
use crate::types::*;

impl Engine {
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
    pub(crate) async fn refresh_quarantine(&self) -> Result<()> {
        let keys = quarantine::keys(&*self.store).await?;
        *self.quarantined.lock().expect("quarantine lock") = keys;
        Ok(())
    }
}
