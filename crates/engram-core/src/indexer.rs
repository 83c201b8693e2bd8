//! The background side: embedding workers and the indexer that keeps every
//! derived index in step with the store's change feed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info_span, Instrument};

use crate::engine::*;
use crate::error::Result;
use crate::quarantine;
use crate::reembed::Backfill;
use crate::types::*;
use crate::worker::EmbedWorker;

impl Engine {
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

    pub(crate) async fn apply_changes(&self, mut changes: Vec<Change>, last: u64) -> Result<usize> {
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
}
