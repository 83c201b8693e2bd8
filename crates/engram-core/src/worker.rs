//! Embedding workers: claim jobs from a queue, embed them in batches (with
//! the target model too while a re-embedding runs), write the vectors back;
//! and the embedded mode's queue, the store's job table with leases. Runs
//! inside `engram serve` or alone in `engram worker`.

use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info_span, Instrument};

use crate::error::Result;
use crate::quarantine;
use crate::reembed::{Backfill, Embedders};
use crate::traits::*;
use crate::types::*;

/// Claims embedding jobs from a queue, embeds them in batches and writes the
/// vectors back. Runs inside `serve` or alone in `engram worker`.
pub struct EmbedWorker {
    pub(crate) queue: Arc<dyn JobQueue>,
    /// For the model state and the re-embedding back-fill.
    pub(crate) store: Arc<dyn Store>,
    pub(crate) embedders: Embedders,
    pub(crate) batch: usize,
    pub(crate) on_progress: Arc<dyn Fn() + Send + Sync>,
    /// The store's model state, re-read every second (`reembed::MODEL_STATE_TTL`).
    pub(crate) models: tokio::sync::Mutex<Option<(Instant, ModelState)>>,
    pub(crate) backfill: tokio::sync::Mutex<Backfill>,
}

impl EmbedWorker {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        store: Arc<dyn Store>,
        embedders: Embedders,
        batch: usize,
    ) -> Self {
        EmbedWorker {
            queue,
            store,
            embedders,
            batch,
            on_progress: Arc::new(|| {}),
            models: tokio::sync::Mutex::new(None),
            backfill: tokio::sync::Mutex::new(Backfill::default()),
        }
    }

    /// One embedding worker round: claim a batch, embed, write back; with
    /// no job waiting, back-fill a batch of a running re-embedding. Returns
    /// the number of jobs and memories handled (0 when idle after waiting up
    /// to `wait`).
    pub async fn work_once(&self, wait: Duration) -> Result<usize> {
        let state = self.model_state().await?;
        let Some(active) = self.embedders.active(&state).cloned() else {
            // Jobs stay in the queue for a worker that has the model.
            let m = state
                .active
                .as_ref()
                .map(|m| m.version.as_str())
                .unwrap_or("?");
            tracing::error!(
                active = m,
                "this worker has no embedder for the store's active model"
            );
            tokio::time::sleep(wait).await;
            return Ok(0);
        };
        let target = self.embedders.target(&state).cloned();
        // While back-filling, do not wait for jobs: there is work either way.
        let busy = target.is_some() && self.backfill.lock().await.busy;
        let jobs = self
            .queue
            .claim(self.batch, if busy { Duration::ZERO } else { wait })
            .await?;
        if jobs.is_empty() {
            return match target {
                Some(t) => self.backfill_once(&t).await,
                None => Ok(0),
            };
        }
        // One span per batch, linked to the request behind each job (a batch
        // serves many requests; see `crate::telemetry`).
        let span = info_span!(
            "worker.embed_batch",
            jobs = jobs.len(),
            embedded = tracing::field::Empty,
            failed = tracing::field::Empty
        );
        let mut linked = std::collections::HashSet::new();
        for tp in jobs.iter().filter_map(|j| j.traceparent.as_deref()) {
            if linked.insert(tp) {
                crate::telemetry::add_link(&span, tp);
            }
        }
        self.embed_batch(jobs, &active, target.as_ref())
            .instrument(span)
            .await
    }

    /// Run `work` on claimed jobs `ids`, renewing their leases meanwhile as
    /// the queue asks (a slow embedder must not let them be claimed and
    /// embedded again by another worker). A failed renewal is logged: the
    /// work goes on, at worst a job is embedded twice (idempotent).
    async fn renewing<T>(&self, ids: &[u64], work: impl std::future::Future<Output = T>) -> T {
        let Some(every) = self.queue.renew_every().filter(|d| !d.is_zero()) else {
            return work.await;
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    if let Err(e) = self.queue.renew(ids).await {
                        tracing::warn!(jobs = ids.len(), error = %e, "renewing job leases failed");
                    }
                }
            }
        }
    }

    async fn embed_batch(
        &self,
        jobs: Vec<ClaimedJob>,
        embedder: &Arc<dyn Embedder>,
        target: Option<&Arc<dyn Embedder>>,
    ) -> Result<usize> {
        let n = jobs.len();
        let model = embedder.model().clone();
        // Every claimed job stays leased until the batch is written back,
        // those that need no embedding included.
        let ids: Vec<u64> = jobs.iter().map(|j| j.job_id).collect();
        // The target's texts, by its recipe (which may differ from the
        // active model's: a recipe change re-embeds like a model change).
        let texts: HashMap<u64, String> = match target {
            Some(t) => jobs
                .iter()
                .map(|j| (j.job_id, j.embedding_text(t.recipe())))
                .collect(),
            None => HashMap::new(),
        };
        let mut done = Vec::with_capacity(n);
        let mut todo = Vec::with_capacity(n);
        for j in jobs {
            // Idempotent by checksum: a redelivered job whose vector is already
            // current completes without embedding again.
            if j.embedded_checksum.as_deref() == Some(j.checksum.as_str())
                && j.embedding_version.as_deref() == Some(model.version.as_str())
            {
                done.push(Embedded {
                    job_id: j.job_id,
                    key: j.key,
                    checksum: j.checksum,
                    vector: None,
                    model: model.clone(),
                    also: None,
                });
            } else {
                todo.push(j);
            }
        }
        let mut failures = Vec::new();
        if !todo.is_empty() {
            let recipe = embedder.recipe();
            let texts: Vec<String> = todo.iter().map(|j| j.embedding_text(recipe)).collect();
            let started = Instant::now();
            let batch = self
                .renewing(
                    &ids,
                    embedder
                        .embed(&texts)
                        .instrument(info_span!("embed.batch", texts = texts.len())),
                )
                .await;
            metrics::histogram!("engram_embed_batch_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match batch {
                Ok(vectors) if vectors.len() == todo.len() => {
                    for (j, v) in todo.into_iter().zip(vectors) {
                        done.push(embedded(j, v, &model));
                    }
                }
                _ => {
                    // Isolate the failing input so one bad text cannot hold
                    // back the rest of the batch.
                    for j in todo {
                        let text = j.embedding_text(recipe);
                        let one = embedder.embed(std::slice::from_ref(&text));
                        match self.renewing(&ids, one).await {
                            Ok(mut v) if v.len() == 1 => {
                                let v = v.pop().expect("one vector");
                                done.push(embedded(j, v, &model));
                            }
                            Ok(_) => failures.push(JobFailure {
                                job_id: j.job_id,
                                error: "embedder returned no vector".into(),
                            }),
                            Err(e) => failures.push(JobFailure {
                                job_id: j.job_id,
                                error: e.to_string(),
                            }),
                        }
                    }
                }
            }
        }
        if let Some(t) = target.filter(|_| !done.is_empty()) {
            // While re-embedding, the same texts by the target model too, so
            // new writes need no back-fill. A failure leaves them to it.
            let texts: Vec<String> = done
                .iter()
                .map(|e| texts.get(&e.job_id).cloned().unwrap_or_default())
                .collect();
            let embedded = self
                .renewing(
                    &ids,
                    t.embed(&texts)
                        .instrument(info_span!("embed.target", texts = texts.len())),
                )
                .await;
            match embedded {
                Ok(vectors) if vectors.len() == done.len() => {
                    for (e, vector) in done.iter_mut().zip(vectors) {
                        e.also = Some(ModelVector {
                            model: t.model().clone(),
                            vector,
                        });
                    }
                }
                Ok(_) => tracing::warn!("target embedder returned too few vectors"),
                Err(e) => {
                    tracing::warn!(error = %e, "target embedding failed; left to the back-fill")
                }
            }
        }
        let span = tracing::Span::current();
        span.record("embedded", done.len());
        span.record("failed", failures.len());
        if !done.is_empty() {
            metrics::counter!("engram_embedded_total").increment(done.len() as u64);
            self.queue
                .complete(done)
                .instrument(info_span!("queue.complete"))
                .await?;
            (self.on_progress)();
        }
        if !failures.is_empty() {
            metrics::counter!("engram_embed_failures_total").increment(failures.len() as u64);
            tracing::warn!(count = failures.len(), "embedding attempts failed");
            self.queue
                .fail(failures)
                .instrument(info_span!("queue.fail"))
                .await?;
            (self.on_progress)();
        }
        Ok(n)
    }

    /// Run until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                r = self.work_once(Duration::from_secs(1)) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "worker round failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

fn embedded(j: ClaimedJob, v: Vec<f32>, model: &ModelInfo) -> Embedded {
    Embedded {
        job_id: j.job_id,
        key: j.key,
        checksum: j.checksum,
        vector: Some(v),
        model: model.clone(),
        also: None,
    }
}

/// The embedded job queue: the store's job table, claimed with leases.
pub struct StoreQueue {
    store: Arc<dyn Store>,
    lease: Duration,
    retry: RetryPolicy,
    wake: Notify,
}

impl StoreQueue {
    pub fn new(store: Arc<dyn Store>, lease: Duration, retry: RetryPolicy) -> Self {
        StoreQueue {
            store,
            lease,
            retry,
            wake: Notify::new(),
        }
    }
}

#[async_trait::async_trait]
impl JobQueue for StoreQueue {
    async fn enqueued(&self) -> Result<()> {
        self.wake.notify_waiters();
        self.wake.notify_one();
        Ok(())
    }

    async fn claim(&self, limit: usize, wait: Duration) -> Result<Vec<ClaimedJob>> {
        let rows = self.store.claim_jobs(limit, self.lease, Utc::now()).await?;
        if !rows.is_empty() || wait.is_zero() {
            return quarantine::claimed(&*self.store, rows, self.retry).await;
        }
        // Sleep until new jobs are announced or `wait` passes (retries become
        // due by time, so polling at this interval picks them up).
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        let rows = self.store.claim_jobs(limit, self.lease, Utc::now()).await?;
        quarantine::claimed(&*self.store, rows, self.retry).await
    }

    async fn complete(&self, done: Vec<Embedded>) -> Result<()> {
        self.store.complete_jobs(done, Utc::now()).await
    }

    async fn fail(&self, failures: Vec<JobFailure>) -> Result<()> {
        self.store.fail_jobs(failures, self.retry, Utc::now()).await
    }

    /// A third of the lease: two renewals can fail before it runs out.
    fn renew_every(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }

    async fn renew(&self, job_ids: &[u64]) -> Result<()> {
        self.store
            .renew_leases(job_ids, self.lease, Utc::now())
            .await
            .map(|_| ())
    }
}
