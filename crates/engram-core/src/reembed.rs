//! Moving every vector to another embedding model without downtime.
//!
//! Vectors of two models cannot be compared, so a model change cannot happen
//! memory by memory: queries must be embedded by the model of the vectors they
//! are compared with. The store therefore records the *active* model (what the
//! served vectors and queries use) and, while a re-embedding runs, a *target*
//! model, and each memory has a second vector slot for the target.
//!
//! 1. A node configured with a next embedder (`[embedder.next]`) records it
//!    as the target ([`Store::begin_reembed`](crate::Store::begin_reembed)).
//! 2. Workers embed every new or changed text with both models (one job,
//!    [`Embedded::also`]), and when their queue is idle back-fill the
//!    target slot of older memories ([`Store::reembed_todo`](crate::Store::reembed_todo),
//!    [`Store::put_target_vectors`](crate::Store::put_target_vectors), each a
//!    new seq). Fresh writes keep priority over the back-fill.
//! 3. The engine follows the change feed into a *shadow* vector index built
//!    from the target vectors, while the active index keeps serving.
//! 4. Once nothing is left to back-fill and the shadow index has caught up,
//!    the engine switches: [`Store::switch_model`](crate::Store::switch_model)
//!    moves the target vectors to the active slot and records the target as
//!    active in one transaction, and the engine swaps its query embedder and
//!    vector index together. Other nodes see the new active model when they
//!    poll the model state and swap the same way.
//!
//! The store writes each vector to the slot of its model version
//! ([`resolve`]), so a job embedded before a switch and completed after it
//! never puts an old-model vector among new ones.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info_span, Instrument};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::traits::{Embedder, VectorIndex};
use crate::types::{
    Change, ChangeOp, Embedded, IndexDoc, Key, ModelInfo, ModelState, ModelVector,
    QuarantineSource, ReembedProgress, TargetVector,
};
use crate::worker::EmbedWorker;

/// Opens the vector index of the next model (the binary knows where it lives).
pub type OpenIndex =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn VectorIndex>>> + Send + Sync>;

/// The model a node re-embeds to: its embedder and how to open its index.
pub struct NextModel {
    pub embedder: Arc<dyn Embedder>,
    pub open_index: OpenIndex,
}

/// The query embedder and vector index of the active model: always used as
/// a pair, so a search never compares vectors of two models.
pub(crate) struct Active {
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) vectors: Arc<dyn VectorIndex>,
}

/// The target model's vector index and how far along the feed it is.
pub(crate) struct Shadow {
    pub(crate) index: Arc<dyn VectorIndex>,
    pub(crate) pos: u64,
}

/// A worker's back-fill cursor.
#[derive(Default)]
pub(crate) struct Backfill {
    after: Option<Key>,
    /// The last round found work: claim jobs without waiting.
    pub(crate) busy: bool,
}

/// How long a worker trusts the model state it read.
pub(crate) const MODEL_STATE_TTL: Duration = Duration::from_secs(1);

/// A re-embedding as `/v1/stats` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReembedStatus {
    pub target: ModelInfo,
    pub done: u64,
    pub total: u64,
    /// Whether this node has the target's embedder (and so can switch).
    pub node_has_target: bool,
}

/// Which configured embedder is the active one, given the store's state:
/// returned as `primary`, with `next` the one to re-embed to, if any. The
/// configured primary is active unless the store recorded the next model as
/// active (a re-embedding finished): then the next one is, and nothing is
/// left to re-embed. An error names both when neither matches, rather than
/// letting queries and vectors of two models meet.
pub fn pick(
    state: &ModelState,
    primary: Arc<dyn Embedder>,
    next: Option<Arc<dyn Embedder>>,
) -> Result<Embedders> {
    let keep = |primary, next| Ok(Embedders { primary, next });
    let Some(active) = &state.active else {
        return keep(primary, next);
    };
    if primary.model().version == active.version {
        return keep(primary, next);
    }
    if let Some(n) = next.filter(|n| n.model().version == active.version) {
        tracing::warn!(
            model = %active.name,
            version = %active.version,
            "the next embedder is the active model already (the re-embedding finished): \
             make it [embedder] and remove [embedder.next]"
        );
        return keep(n, None);
    }
    Err(mismatch(active, primary.model()))
}

/// The store's vectors must be of `model`'s version.
pub(crate) fn check_active(state: &ModelState, model: &ModelInfo) -> Result<()> {
    match &state.active {
        Some(a) if a.version != model.version => Err(mismatch(a, model)),
        _ => Ok(()),
    }
}

fn mismatch(active: &ModelInfo, configured: &ModelInfo) -> Error {
    Error::Conflict(format!(
        "the store's vectors are of model {:?} version {:?}, but this node's embedder is {:?} \
         version {:?}: configure that model as [embedder], and the new one as [embedder.next] \
         to re-embed to it",
        active.name, active.version, configured.name, configured.version
    ))
}

/// The embedders a node has: its configured model and, while it re-embeds,
/// the next one. Which one embeds queries and which vectors go where follows
/// the store's [`ModelState`], not the configuration's order.
#[derive(Clone)]
pub struct Embedders {
    pub primary: Arc<dyn Embedder>,
    pub next: Option<Arc<dyn Embedder>>,
}

impl Embedders {
    pub fn single(primary: Arc<dyn Embedder>) -> Self {
        Embedders {
            primary,
            next: None,
        }
    }

    /// The embedder of this model version, if the node has it.
    pub fn for_version(&self, version: &str) -> Option<&Arc<dyn Embedder>> {
        std::iter::once(&self.primary)
            .chain(self.next.as_ref())
            .find(|e| e.model().version == version)
    }

    /// The embedder of the active model; the primary when none is recorded.
    pub fn active(&self, state: &ModelState) -> Option<&Arc<dyn Embedder>> {
        match &state.active {
            Some(m) => self.for_version(&m.version),
            None => Some(&self.primary),
        }
    }

    /// The embedder of the re-embedding target, if one runs and the node has it.
    pub fn target(&self, state: &ModelState) -> Option<&Arc<dyn Embedder>> {
        state
            .target
            .as_ref()
            .and_then(|m| self.for_version(&m.version))
    }
}

/// Put each vector of a finished job in its slot: `vector`/`model` become the
/// active model's vector and `also` the target's (dropped when no
/// re-embedding runs). `None` when the job carries no vector of the active
/// model (it was embedded before a switch): the store must leave the job to
/// be claimed again rather than write a vector of the wrong model.
pub fn resolve(e: Embedded, state: &ModelState) -> Option<Embedded> {
    let Some(active) = &state.active else {
        // No model recorded (a store no engine has opened): as before models
        // were recorded.
        return Some(Embedded { also: None, ..e });
    };
    let target = state.target.as_ref().map(|t| t.version.as_str());
    let Embedded {
        job_id,
        key,
        checksum,
        vector,
        model,
        also,
    } = e;
    let mut primary = None;
    let mut for_target = None;
    let slots = std::iter::once((model, vector)).chain(also.map(|a| (a.model, Some(a.vector))));
    for (m, v) in slots {
        if primary.is_none() && m.version == active.version {
            primary = Some((m, v));
        } else if Some(m.version.as_str()) == target {
            if let Some(vector) = v {
                for_target = Some(ModelVector { model: m, vector });
            }
        }
    }
    let (model, vector) = primary?;
    Some(Embedded {
        job_id,
        key,
        checksum,
        vector,
        model,
        also: for_target,
    })
}

impl Engine {
    /// Apply the next page of the change feed, up to the indexes' position,
    /// to the shadow index with the target vectors (a memory without one is
    /// removed). Returns how many changes it applied; 0 when no re-embedding
    /// runs or the shadow index is where the indexes are.
    pub(crate) async fn shadow_once(&self) -> Result<usize> {
        let mut guard = self.shadow.lock().await;
        let Some(sh) = guard.as_mut() else {
            return Ok(0);
        };
        self.advance(sh, to_target).await
    }

    /// Apply the next page of changes up to the indexes' position to `sh`,
    /// mapped by `map`. Returns how many it applied.
    async fn advance(&self, sh: &mut Shadow, map: fn(Change) -> Change) -> Result<usize> {
        let upto = *self.indexed.borrow();
        if sh.pos >= upto {
            return Ok(0);
        }
        let changes = self.store.changes_since(sh.pos, 1024).await?;
        let beyond = changes.iter().any(|c| c.seq > upto);
        let mapped: Vec<Change> = changes
            .into_iter()
            .filter(|c| c.seq <= upto)
            .map(map)
            .collect();
        let last = mapped.last().map(|c| c.seq);
        sh.index
            .apply(&mapped)
            .instrument(info_span!("index.shadow", changes = mapped.len()))
            .await?;
        // Past the last change at or below `upto`, the next one is beyond it.
        sh.pos = if beyond { upto } else { last.unwrap_or(upto) };
        Ok(mapped.len())
    }

    /// Read the store's model state: follow a switch made elsewhere, or make
    /// it here once the re-embedding is complete and the shadow index has
    /// caught up with the indexes.
    pub(crate) async fn follow_models(&self) -> Result<()> {
        let state = self.store.model_state().await?;
        let Some(active) = state.active.clone() else {
            return Ok(());
        };
        let mut shadow = self.shadow.lock().await;
        if active.version != self.model().version {
            // Switched by another node (a restart after a switch starts on
            // the new model: see `pick`).
            let Some(embedder) = self.embedders.for_version(&active.version).cloned() else {
                let msg = format!(
                    "the store switched to model {:?} version {:?}, which this node has no \
                     embedder for",
                    active.name, active.version
                );
                tracing::error!("{msg}");
                *self.model_missing.lock().expect("model lock") = Some(msg);
                return Ok(());
            };
            let mut sh = match shadow.take() {
                Some(sh) => sh,
                None => match &self.next_index {
                    Some(open) => {
                        let index = open().await?;
                        Shadow {
                            pos: index.persisted_seq(),
                            index,
                        }
                    }
                    None => return Ok(()),
                },
            };
            // Bring it to the indexes' position. The changes are read after
            // the switch, so their vectors are the new model's already.
            while self.advance(&mut sh, |c| c).await? > 0 {}
            self.switch_to(embedder, sh.index, shadow).await;
            return Ok(());
        }
        let (Some(target), Some(sh)) = (&state.target, shadow.as_ref()) else {
            return Ok(());
        };
        let Some(embedder) = self.embedders.for_version(&target.version).cloned() else {
            return Ok(());
        };
        // The shadow index has every change the indexes have (this task is
        // the only one advancing either): after the swap, the feed goes on
        // from this position into the new index. Changes committed beyond it
        // are read after the switch, with their new-model vectors.
        if sh.pos != *self.indexed.borrow() || self.store.reembed_progress().await?.remaining() > 0
        {
            return Ok(());
        }
        let started = Instant::now();
        if !self.store.switch_model(target).await? {
            return Ok(());
        }
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "the store moved every vector to the new model"
        );
        let sh = shadow.take().expect("checked above");
        self.switch_to(embedder, sh.index, shadow).await;
        Ok(())
    }

    /// Serve with the new model: queries embedded by it, searched in its index.
    async fn switch_to(
        &self,
        embedder: Arc<dyn Embedder>,
        vectors: Arc<dyn VectorIndex>,
        _shadow: tokio::sync::MutexGuard<'_, Option<Shadow>>,
    ) {
        let model = embedder.model().clone();
        // The old index is not cleared: searches that took the old pair just
        // before the swap still use it. It is freed with the last of them
        // (its files are removed at the next start).
        self.set_active(Active { embedder, vectors });
        *self.model_missing.lock().expect("model lock") = None;
        tracing::info!(model = %model.name, version = %model.version, "switched to the new embedding model");
        metrics::counter!("engram_model_switches_total").increment(1);
    }

    /// The re-embedding in progress, as seen by a node serving `model` (read
    /// before this, so a switch committing in between is never shown as
    /// both done and still in progress).
    pub(crate) async fn reembed_status(&self, model: &ModelInfo) -> Result<Option<ReembedStatus>> {
        let state = self.store.model_state().await?;
        let Some(target) = state.target.filter(|t| t.version != model.version) else {
            return Ok(None);
        };
        let ReembedProgress { done, total } = self.store.reembed_progress().await?;
        Ok(Some(ReembedStatus {
            node_has_target: self.embedders.for_version(&target.version).is_some(),
            target,
            done,
            total,
        }))
    }
}

/// A change as the shadow index sees it: the target vector in place of the
/// active one, and a removal when there is none (yet).
fn to_target(c: Change) -> Change {
    let op = match c.op {
        ChangeOp::Upsert(d) => match &d.target_vector {
            Some(t) => ChangeOp::Upsert(Arc::new(IndexDoc {
                key: d.key,
                text: d.text.clone(),
                context: d.context.clone(),
                vector: t.clone(),
                target_vector: None,
                attrs: d.attrs.clone(),
            })),
            None => ChangeOp::Remove,
        },
        ChangeOp::Remove | ChangeOp::Corrupt(_) => ChangeOp::Remove,
    };
    Change { op, ..c }
}

impl EmbedWorker {
    /// The store's model state, cached for [`MODEL_STATE_TTL`].
    pub(crate) async fn model_state(&self) -> Result<ModelState> {
        let mut cached = self.models.lock().await;
        if let Some((at, s)) = cached.as_ref() {
            if at.elapsed() < MODEL_STATE_TTL {
                return Ok(s.clone());
            }
        }
        let s = self.store.model_state().await?;
        *cached = Some((Instant::now(), s.clone()));
        Ok(s)
    }

    /// Embed one batch of older memories with the target model. Returns how
    /// many were written (0 when nothing is left).
    pub(crate) async fn backfill_once(&self, target: &Arc<dyn Embedder>) -> Result<usize> {
        let mut bf = self.backfill.lock().await;
        let mut items = self.store.reembed_todo(bf.after, self.batch).await?;
        if items.is_empty() && bf.after.is_some() {
            // Wrap around: memories before the cursor may need it again
            // (a text changed, or a write raced the first pass).
            bf.after = None;
            items = self.store.reembed_todo(None, self.batch).await?;
        }
        bf.busy = !items.is_empty();
        let Some(last) = items.last().map(|i| match i {
            Ok(i) => i.key,
            Err(c) => c.key,
        }) else {
            return Ok(0);
        };
        bf.after = Some(last);
        // A row that cannot be decoded is quarantined and skipped. (The
        // switch still waits for it: it has no target vector. Repair or
        // purge it, see the quarantine docs.)
        let (items, corrupt) = crate::quarantine::split(items, QuarantineSource::Backfill);
        crate::quarantine::record(&*self.store, corrupt).await?;
        if items.is_empty() {
            return Ok(1);
        }
        let recipe = target.recipe();
        let texts: Vec<String> = items.iter().map(|i| i.embedding_text(recipe)).collect();
        let started = Instant::now();
        let vectors = target
            .embed(&texts)
            .instrument(info_span!("embed.backfill", texts = texts.len()))
            .await?;
        metrics::histogram!("engram_embed_batch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if vectors.len() != items.len() {
            return Err(Error::Embedding(
                "target embedder returned too few vectors".into(),
            ));
        }
        let writes: Vec<TargetVector> = items
            .into_iter()
            .zip(vectors)
            .map(|(i, vector)| TargetVector {
                key: i.key,
                checksum: i.checksum,
                vector,
            })
            .collect();
        let n = self
            .store
            .put_target_vectors(target.model(), writes)
            .instrument(info_span!("store.put_target_vectors"))
            .await?;
        metrics::counter!("engram_reembedded_total").increment(n as u64);
        (self.on_progress)();
        Ok(n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ModelInfo;

    fn model(v: &str) -> ModelInfo {
        ModelInfo {
            name: format!("m{v}"),
            version: v.into(),
            dims: 2,
        }
    }

    fn job(m: &str, also: Option<&str>) -> Embedded {
        Embedded {
            job_id: 1,
            key: 7,
            checksum: "c".into(),
            vector: Some(vec![1.0, 0.0]),
            model: model(m),
            also: also.map(|a| ModelVector {
                model: model(a),
                vector: vec![0.0, 1.0],
            }),
        }
    }

    fn state(active: Option<&str>, target: Option<&str>) -> ModelState {
        ModelState {
            active: active.map(model),
            target: target.map(model),
        }
    }

    /// Only its model identity matters to `pick`; it never embeds.
    struct Named(ModelInfo);

    #[async_trait::async_trait]
    impl Embedder for Named {
        fn model(&self) -> &ModelInfo {
            &self.0
        }
        async fn embed(&self, _: &[String]) -> Result<Vec<Vec<f32>>> {
            Err(Error::internal("not used"))
        }
    }

    fn named(v: &str) -> Arc<dyn Embedder> {
        Arc::new(Named(model(v)))
    }

    #[test]
    fn the_store_decides_which_configured_model_is_active() {
        let version = |e: &Arc<dyn Embedder>| e.model().version.clone();
        // A fresh store: as configured.
        let e = pick(&state(None, None), named("a"), Some(named("b"))).unwrap();
        assert_eq!(version(&e.primary), "a");
        assert_eq!(e.next.as_ref().map(version).as_deref(), Some("b"));
        // The configured model is active: re-embed to the next one.
        let e = pick(&state(Some("a"), Some("b")), named("a"), Some(named("b"))).unwrap();
        assert_eq!(version(&e.primary), "a");
        assert!(e.next.is_some());
        // The re-embedding finished: the next model is active, nothing is next.
        let e = pick(&state(Some("b"), None), named("a"), Some(named("b"))).unwrap();
        assert_eq!(version(&e.primary), "b");
        assert!(e.next.is_none());
        // Neither: refuse, naming the fix.
        let err = pick(&state(Some("c"), None), named("a"), Some(named("b")))
            .err()
            .expect("no configured model is active");
        assert!(err.to_string().contains("embedder.next"), "{err}");
        assert!(check_active(&state(Some("c"), None), &model("a")).is_err());
        assert!(check_active(&state(Some("a"), None), &model("a")).is_ok());
        assert!(check_active(&state(None, None), &model("a")).is_ok());
    }

    #[test]
    fn vectors_go_to_the_slot_of_their_model() {
        // Embedded by active + target: unchanged.
        let r = resolve(job("a", Some("b")), &state(Some("a"), Some("b"))).unwrap();
        assert_eq!(r.model.version, "a");
        assert_eq!(r.vector, Some(vec![1.0, 0.0]));
        assert_eq!(r.also.unwrap().model.version, "b");

        // Embedded before the switch, completed after: the target's vector
        // is now the active one, the old model's is dropped.
        let r = resolve(job("a", Some("b")), &state(Some("b"), None)).unwrap();
        assert_eq!(r.model.version, "b");
        assert_eq!(r.vector, Some(vec![0.0, 1.0]));
        assert!(r.also.is_none());

        // Only the old model's vector: nothing may be written.
        assert!(resolve(job("a", None), &state(Some("b"), None)).is_none());

        // No re-embedding: a stray second vector is not kept.
        let r = resolve(job("a", Some("b")), &state(Some("a"), None)).unwrap();
        assert!(r.also.is_none());

        // A store without a recorded model takes the job as it is.
        let r = resolve(job("z", None), &state(None, None)).unwrap();
        assert_eq!(r.model.version, "z");
    }
}
