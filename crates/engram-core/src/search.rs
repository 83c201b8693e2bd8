//! Search: validation and scope, the two candidate lists, fusion, the
//! speaker and recency preferences, the ranking cache, and hydrating hits
//! (with neighbour expansion) for the caller.

use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::cache::{self, CacheKind};
use crate::codes::Code;
use crate::engine::{redact_memory, Engine};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fusion::{self, FusionParams};
use crate::limits;
use crate::quarantine;
use crate::reembed::Active;
use crate::requests::*;
use crate::scope::Scope;
use crate::text;
use crate::types::*;

impl Engine {
    #[tracing::instrument(name = "engine.search", skip_all, fields(tenant = %p.tenant, mode = ?req.mode, k = req.k))]
    pub async fn search(&self, p: &Principal, req: SearchRequest) -> Result<SearchResponse> {
        p.authorize(Action::Read)?;
        let started = Instant::now();
        let mode = req.mode;
        let out = self.search_inner(p, req).await;
        let mode = match mode {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
        };
        metrics::histogram!("engram_search_duration_seconds", "mode" => mode)
            .record(started.elapsed().as_secs_f64());
        out
    }

    async fn search_inner(&self, p: &Principal, req: SearchRequest) -> Result<SearchResponse> {
        let query = req.query.trim();
        limits::check_string("query", query, self.cfg.max_text_bytes)?;
        if query.is_empty() {
            return Err(Error::bad(Code::InvalidText, "query must not be empty"));
        }
        let k = req.k.unwrap_or(self.cfg.default_k);
        limits::check_count("k", k, self.cfg.max_k)?;
        if req.namespaces.len() > limits::MAX_NAMESPACES_PER_QUERY {
            return Err(Error::TooLarge(format!(
                "{} namespaces; the limit is {}",
                req.namespaces.len(),
                limits::MAX_NAMESPACES_PER_QUERY
            )));
        }
        let Some(namespaces) = self.namespaces_in_scope(p, &req.namespaces).await? else {
            return Ok(SearchResponse {
                hits: Vec::new(),
                mode: req.mode,
            });
        };
        let filter = req.filter.as_ref().map(Filter::parse).transpose()?;
        let mut params = self.cfg.fusion;
        if let Some(w) = req.weights {
            if !(w.vector.is_finite()
                && w.keyword.is_finite()
                && w.vector >= 0.0
                && w.keyword >= 0.0)
                || w.vector + w.keyword == 0.0
            {
                return Err(Error::out_of_range(
                    "weights must be finite, non-negative and not both zero",
                ));
            }
            params.vector_weight = w.vector;
            params.keyword_weight = w.keyword;
        }
        if let Some(m) = req.fusion {
            params.method = m;
        }
        let recency = req.recency.map(recency_params).transpose()?;
        if let Some(e) = req.expand {
            if !(1..=limits::MAX_NEIGHBORS).contains(&e.neighbors) {
                return Err(Error::out_of_range(format!(
                    "expand.neighbors must be between 1 and {}",
                    limits::MAX_NEIGHBORS
                )));
            }
        }
        let scope = Scope::new(
            &p.tenant,
            &namespaces,
            filter.as_ref(),
            Utc::now(),
            &self.attrs,
        );
        let candidates = (k * self.cfg.candidate_factor).max(self.cfg.min_candidates);
        // Standardise over what every search fetches, whatever its k.
        params.depth = self.cfg.min_candidates;
        // Read the generation before ranking: a write that lands meanwhile
        // bumps it, so this ranking is stored under an obsolete key.
        let result_key = self
            .result_key(p, &namespaces, query, k, &req, params, candidates)
            .await;
        let top = match self.cached_ranking(result_key.as_deref()).await {
            Some(top) => top,
            None => {
                let top = self
                    .rank(query, k, &req, &scope, params, candidates, recency)
                    .await?;
                if let Some(key) = &result_key {
                    let bytes = cache::encode_ranking(&top);
                    if let Err(e) = self.cache.put(key, &bytes, self.cfg.result_cache_ttl).await {
                        cache::record_error("put", &e);
                    }
                }
                top
            }
        };
        self.hydrate(p, top, req.mode, req.expand).await
    }

    /// The fused top `k` of a search, from the indexes.
    #[allow(clippy::too_many_arguments)]
    async fn rank(
        &self,
        query: &str,
        k: usize,
        req: &SearchRequest,
        scope: &Scope<'_>,
        params: FusionParams,
        candidates: usize,
        recency: Option<fusion::Recency>,
    ) -> Result<Vec<fusion::Fused>> {
        // A single signal needs more than `k` only when something re-ranks it.
        let single = if recency.is_some() { candidates } else { k };
        let mut fused = match req.mode {
            SearchMode::Vector => {
                let hits = self.vector_hits(query, single, req.exact, scope).await?;
                fusion::single(&hits, true)
            }
            SearchMode::Keyword => fusion::single(
                &self
                    .keywords
                    .search(&crate::query::keyword_query(query), single, scope)
                    .instrument(info_span!("index.keyword", k = single))
                    .await?,
                false,
            ),
            SearchMode::Hybrid => {
                let vector = self.vector_hits(query, candidates, req.exact, scope);
                let keyword_query = crate::query::keyword_query(query);
                let keyword = self
                    .keywords
                    .search(&keyword_query, candidates, scope)
                    .instrument(info_span!("index.keyword", k = candidates));
                let (v, kw) = tokio::try_join!(vector, keyword)?;
                let mut fused = fusion::fuse(&v, &kw, params);
                if params.method == fusion::Method::Convex && req.prefer_speaker.unwrap_or(true) {
                    fusion::prefer_named_speaker(&mut fused, query, |key| {
                        self.attrs
                            .get(key)
                            .and_then(|a| a.session.as_ref().and_then(|s| s.speaker.clone()))
                    });
                }
                fused
            }
        };
        if let Some(r) = &recency {
            fusion::prefer_recent(&mut fused, r, |key| {
                self.attrs.get(key).map(|a| a.occurred_at)
            });
        }
        Ok(fused.into_iter().take(k).collect())
    }

    /// The query's top `k` by vector: embedded and searched with one
    /// snapshot of the active model's embedder and index. A short result may
    /// mean the store switched models under the search (in PostgreSQL the
    /// vectors change in place, and the index only admits its own model's):
    /// then follow the switch at once and search again with the new pair.
    async fn vector_hits(
        &self,
        query: &str,
        k: usize,
        exact: bool,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>> {
        let active = self.active();
        let q = self.embed_query(&active, query).await?;
        let hits = self.vector_search(&active, &q, k, exact, scope).await?;
        if hits.len() >= k {
            return Ok(hits);
        }
        let state = self.store.model_state().await?;
        let ours = &active.embedder.model().version;
        if state.active.as_ref().is_none_or(|m| &m.version == ours) {
            return Ok(hits);
        }
        self.follow_models().await?;
        let fresh = self.active();
        if Arc::ptr_eq(&fresh, &active) {
            return Ok(hits);
        }
        let q = self.embed_query(&fresh, query).await?;
        self.vector_search(&fresh, &q, k, exact, scope).await
    }

    /// The vector index's top `k`: approximate, or an exact scan on request.
    async fn vector_search(
        &self,
        active: &Active,
        q: &[f32],
        k: usize,
        exact: bool,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>> {
        if let Some(m) = self.model_missing.lock().expect("model lock").as_ref() {
            return Err(Error::unavailable("embedder", m.clone()));
        }
        let search = async {
            if exact {
                active.vectors.search_exact(q, k, scope).await
            } else {
                active.vectors.search(q, k, scope).await
            }
        };
        search
            .instrument(info_span!("index.vector", k, exact))
            .await
    }

    /// The cache key of a search's ranking, or `None` when result caching is
    /// off or the tenant's generation cannot be read.
    #[allow(clippy::too_many_arguments)]
    async fn result_key(
        &self,
        p: &Principal,
        namespaces: &[String],
        query: &str,
        k: usize,
        req: &SearchRequest,
        params: FusionParams,
        candidates: usize,
    ) -> Option<String> {
        if self.cfg.result_cache_ttl.is_zero() {
            return None;
        }
        let generation = match self.cache.generation(&p.tenant).await {
            Ok(g) => g,
            Err(e) => {
                cache::record_error("generation", &e);
                return None;
            }
        };
        // Everything the ranking depends on. The namespaces are the ones the
        // search covers after the caller's visibility is applied (empty: all).
        let mut ns: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        ns.sort_unstable();
        ns.dedup();
        let model = self.model();
        let shape = serde_json::json!({
            "v": 3,
            "tenant": p.tenant,
            "namespaces": ns,
            "query": query,
            "k": k,
            "mode": req.mode,
            "filter": req.filter,
            "exact": req.exact,
            "weights": [params.vector_weight, params.keyword_weight, params.rrf_k, params.depth],
            "fusion": params.method,
            "prefer_speaker": req.prefer_speaker,
            "recency": req.recency,
            "candidates": candidates,
            "model": [model.name, model.version],
        });
        Some(cache::result_key(&p.tenant, generation, &shape))
    }

    async fn cached_ranking(&self, key: Option<&str>) -> Option<Vec<fusion::Fused>> {
        let key = key?;
        match self.cache.get(key).await {
            Ok(Some(bytes)) => match cache::decode_ranking(&bytes) {
                Some(top) => {
                    cache::record_hit(CacheKind::Result);
                    return Some(top);
                }
                None => cache::record_error("decode", &"not a cached ranking"),
            },
            Ok(None) => {}
            Err(e) => cache::record_error("get", &e),
        }
        cache::record_miss(CacheKind::Result);
        None
    }

    /// Turn a ranking into hits: live, unexpired memories only (whether the
    /// ranking is fresh or cached), redacted for the caller.
    async fn hydrate(
        &self,
        p: &Principal,
        top: Vec<fusion::Fused>,
        mode: SearchMode,
        expand: Option<Expand>,
    ) -> Result<SearchResponse> {
        let keys: Vec<Key> = top.iter().map(|f| f.key).collect();
        let rows = self
            .store
            .get_by_keys(&p.tenant, &keys)
            .instrument(info_span!("store.get_by_keys", keys = keys.len()))
            .await?;
        let (rows, corrupt) = quarantine::split(rows, QuarantineSource::Read);
        self.quarantine(corrupt).await?;
        let mut by_key: HashMap<Key, Memory> = rows.into_iter().map(|m| (m.key, m)).collect();
        let now = Utc::now();
        let mut hits: Vec<SearchHit> = top
            .into_iter()
            .filter_map(|f| {
                // A memory deleted (or expired) between the ranking and this
                // read is skipped.
                let m = by_key.remove(&f.key).filter(|m| !m.is_expired(now))?;
                let m = redact_memory(p, m);
                Some(SearchHit {
                    id: m.id,
                    namespace: m.namespace,
                    text: m.text,
                    kind: m.kind,
                    metadata: m.metadata,
                    tags: m.tags,
                    occurred_at: m.occurred_at,
                    session: m.session,
                    created_at: m.created_at,
                    scores: f,
                    neighbors: None,
                })
            })
            .collect();
        let mut read: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        if let Some(e) = expand {
            for h in &mut hits {
                let n = self
                    .neighbors(p, &h.namespace, h.session.as_ref(), e.neighbors)
                    .await?;
                read.extend(n.iter().map(|n| n.id));
                h.neighbors = Some(n);
            }
        }
        self.audit_read(p, "search", read).await?;
        Ok(SearchResponse { hits, mode })
    }

    #[tracing::instrument(name = "embed.query", skip_all, fields(cached = tracing::field::Empty))]
    async fn embed_query(&self, active: &Active, query: &str) -> Result<Arc<Vec<f32>>> {
        let normalized = text::normalize(query);
        let model = active.embedder.model();
        let key = cache::embedding_key(model, &normalized);
        match self.cache.get(&key).await {
            Ok(Some(bytes)) => match cache::decode_vector(&bytes, model.dims) {
                Some(v) => {
                    cache::record_hit(CacheKind::Embedding);
                    tracing::Span::current().record("cached", true);
                    return Ok(Arc::new(v));
                }
                None => cache::record_error("decode", &"not a cached embedding"),
            },
            Ok(None) => {}
            Err(e) => cache::record_error("get", &e),
        }
        cache::record_miss(CacheKind::Embedding);
        tracing::Span::current().record("cached", false);
        let started = Instant::now();
        let mut out = active
            .embedder
            .embed(std::slice::from_ref(&normalized))
            .await?;
        metrics::histogram!("engram_query_embed_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let v = out
            .pop()
            .ok_or_else(|| Error::internal("embedder returned nothing"))?;
        let bytes = cache::encode_vector(&v);
        if let Err(e) = self
            .cache
            .put(&key, &bytes, self.cfg.embedding_cache_ttl)
            .await
        {
            cache::record_error("put", &e);
        }
        Ok(Arc::new(v))
    }
}

/// A request's recency preference, checked.
fn recency_params(r: RecencyRequest) -> Result<fusion::Recency> {
    if !(r.half_life_days.is_finite()
        && r.half_life_days > 0.0
        && r.half_life_days <= limits::MAX_HALF_LIFE_DAYS)
    {
        return Err(Error::out_of_range(format!(
            "recency.half_life_days must be more than 0 and at most {}",
            limits::MAX_HALF_LIFE_DAYS
        )));
    }
    let weight = r.weight.unwrap_or(1.0);
    if !(weight.is_finite() && (0.0..=limits::MAX_RECENCY_WEIGHT).contains(&weight)) {
        return Err(Error::out_of_range(format!(
            "recency.weight must be between 0 and {}",
            limits::MAX_RECENCY_WEIGHT
        )));
    }
    Ok(fusion::Recency {
        origin: r.origin.unwrap_or_else(Utc::now),
        half_life_seconds: r.half_life_days * 86_400.0,
        weight,
    })
}
