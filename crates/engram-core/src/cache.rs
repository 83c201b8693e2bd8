//! A cache shared by the engine's searches: query embeddings and the fused
//! rankings of recent searches. In-process ([`MemoryCache`]) in the embedded
//! mode; Redis (`engram-redis`) in the scale-out mode, where every node of a
//! deployment shares it.
//!
//! # What is cached
//!
//! - **Query embeddings**, under `emb:<model name>:<model version>:<sha256 of
//!   the normalized query>`, as little-endian f32 bytes. They depend on the
//!   model alone, so they never go stale; they only age out.
//! - **Search rankings**, under `res:<tenant>:<generation>:<sha256 of
//!   everything that shapes the ranking>` (the namespaces the search covers
//!   after the caller's visibility is applied, query, k, mode, filter, fusion
//!   weights, exact, candidate count, model). Only the fused ranking is
//!   stored: memory keys and per-signal scores, never a memory's text,
//!   metadata or tags.
//!
//! # Invariants
//!
//! 1. **Contents are never stale.** A cached ranking is hydrated through
//!    [`Store::get_by_keys`](crate::Store::get_by_keys) exactly like a fresh
//!    one, which returns live memories only, and expired memories are dropped
//!    after hydration; then the hit is redacted for the caller as always. A
//!    deleted, purged or expired memory is never served from the cache, even
//!    if an invalidation were lost.
//! 2. **Rankings are fresh up to a missed bump.** Each tenant has a write
//!    *generation*, part of every result key. A search reads the generation
//!    *before* it computes its ranking; every change to what a tenant's
//!    searches can see bumps the generation *after* the change is visible to
//!    this node's searches. So a ranking computed from older state is only
//!    ever stored under a generation that is already obsolete. The bumps:
//!    - [`Engine::update`](crate::Engine::update) and
//!      [`Engine::delete`](crate::Engine::delete) (soft and hard), which change
//!      the filter attributes searches see at once, bump right after;
//!    - the indexer bumps every tenant touched by a change-feed batch after
//!      applying it to the indexes and before publishing the new indexed
//!      position (so `?wait=true` returns only after the bump). This covers
//!      memories that become searchable when their embedding completes
//!      (creates, re-embedded updates, restores, retried jobs, whichever node
//!      embedded them), TTL expiry and retention purges by the sweeper, and,
//!      in the scale-out mode, changes made through another node (each node
//!      bumps once its own indexes have the change). A removal's tenant is
//!      read from the attribute table before the removal is applied.
//!    - Creates, restores and job retries do not bump by themselves: nothing
//!      becomes searchable before the indexer applies it. Legal holds and
//!      namespace settings do not change any ranking.
//!
//!    Indexes that live in the store itself (searched with SQL) see a
//!    completed embedding as soon as it commits, before any indexer has
//!    bumped: there a ranking cached meanwhile may miss the new memory until
//!    the next indexer round (it polls at least every 500 ms). `?wait=true`
//!    is unaffected: it waits for the indexer's position, published after
//!    the bump.
//! 3. **Failures degrade, never break.** A failed `get`/`put` is a miss; a
//!    failed `generation` skips the result cache for that search; a failed
//!    `bump` after a committed write is logged: rankings may then be stale
//!    (a hole where a deleted memory was, a new one missing) for at most the
//!    result TTL, contents never are (invariant 1).
//!
//! A generation that is lost (Redis restarted without persistence, or the
//! counter evicted) restarts at 0; results cached under the old numbers may
//! then be served again for at most their TTL, with invariant 1 intact.

use async_trait::async_trait;
use moka::Expiry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fusion::Fused;
use crate::types::{Key, ModelInfo};

/// A byte cache with per-entry TTLs and per-tenant write generations.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Store `value` under `key` for `ttl` (a zero `ttl` stores nothing).
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;
    /// The tenant's write generation (0 if never bumped).
    async fn generation(&self, tenant: &str) -> Result<u64>;
    /// Called after every committed write of the tenant; returns the new generation.
    async fn bump(&self, tenant: &str) -> Result<u64>;
}

/// Every started block of this many bytes counts as one more entry against
/// a [`MemoryCache`]'s capacity, so large rankings cannot grow it unbounded.
const WEIGHT_BLOCK: usize = 4096;

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
    deadline: Instant,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, v: &Entry, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// The in-process cache of the embedded mode: a bounded moka cache with
/// per-entry TTLs, and generations in a map that is never evicted (a
/// generation must not go back while results cached under it live).
pub struct MemoryCache {
    entries: moka::sync::Cache<String, Entry>,
    generations: Mutex<HashMap<String, u64>>,
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries (an entry counts once per
    /// started 4 KiB of its value).
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .weigher(|_, v: &Entry| {
                    u32::try_from(1 + v.value.len() / WEIGHT_BLOCK).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build(),
            generations: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .entries
            .get(key)
            .filter(|e| Instant::now() < e.deadline)
            .map(|e| e.value.to_vec()))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Ok(());
        }
        let Some(deadline) = Instant::now().checked_add(ttl) else {
            return Ok(());
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                value: value.into(),
                ttl,
                deadline,
            },
        );
        Ok(())
    }

    async fn generation(&self, tenant: &str) -> Result<u64> {
        Ok(self.generations.lock().get(tenant).copied().unwrap_or(0))
    }

    async fn bump(&self, tenant: &str) -> Result<u64> {
        let mut g = self.generations.lock();
        let n = g.entry(tenant.to_string()).or_insert(0);
        *n += 1;
        Ok(*n)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The key of a query's embedding (`query` already normalized).
pub fn embedding_key(model: &ModelInfo, query: &str) -> String {
    format!(
        "emb:{}:{}:{}",
        model.name,
        model.version,
        sha256_hex(query.as_bytes())
    )
}

/// The key of a ranking: tenant, generation and a digest of `shape`, the
/// canonical description of everything that affects the ranking.
pub fn result_key(tenant: &str, generation: u64, shape: &impl Serialize) -> String {
    let canonical = serde_json::to_vec(shape).expect("serializing a ranking key");
    format!("res:{tenant}:{generation}:{}", sha256_hex(&canonical))
}

/// A vector as little-endian f32 bytes.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector back, if `bytes` holds exactly `dims` finite floats.
pub fn decode_vector(bytes: &[u8], dims: usize) -> Option<Vec<f32>> {
    if bytes.len() != dims * 4 {
        return None;
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// One cached hit: key, vector score, keyword score, vector rank, keyword
/// rank, recency preference, fused score.
type CachedHit = (
    Key,
    Option<f32>,
    Option<f32>,
    Option<u32>,
    Option<u32>,
    Option<f32>,
    f32,
);

#[derive(Serialize, Deserialize)]
struct CachedRanking {
    /// Format version: a value of another version is a miss.
    v: u32,
    hits: Vec<CachedHit>,
}

const RANKING_FORMAT: u32 = 2;

/// A fused ranking (keys and scores only) as cache bytes.
pub fn encode_ranking(hits: &[Fused]) -> Vec<u8> {
    let r = CachedRanking {
        v: RANKING_FORMAT,
        hits: hits
            .iter()
            .map(|f| {
                (
                    f.key,
                    f.vector,
                    f.keyword,
                    f.vector_rank,
                    f.keyword_rank,
                    f.recency,
                    f.fused,
                )
            })
            .collect(),
    };
    serde_json::to_vec(&r).expect("serializing a ranking")
}

/// The ranking back; `None` if the bytes are not a ranking of this format.
pub fn decode_ranking(bytes: &[u8]) -> Option<Vec<Fused>> {
    let r: CachedRanking = serde_json::from_slice(bytes).ok()?;
    if r.v != RANKING_FORMAT {
        return None;
    }
    Some(
        r.hits
            .into_iter()
            .map(
                |(key, vector, keyword, vector_rank, keyword_rank, recency, fused)| Fused {
                    key,
                    vector,
                    keyword,
                    vector_rank,
                    keyword_rank,
                    recency,
                    fused,
                },
            )
            .collect(),
    )
}

/// What is cached, for the metrics' `kind` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheKind {
    Embedding,
    Result,
}

impl CacheKind {
    fn label(self) -> &'static str {
        match self {
            CacheKind::Embedding => "embedding",
            CacheKind::Result => "result",
        }
    }
}

pub(crate) fn record_hit(kind: CacheKind) {
    metrics::counter!("engram_cache_hits_total", "kind" => kind.label()).increment(1);
}

pub(crate) fn record_miss(kind: CacheKind) {
    metrics::counter!("engram_cache_misses_total", "kind" => kind.label()).increment(1);
}

/// A cache operation failed (`op`: get, put, decode, generation, bump); the
/// caller carries on without the cache.
pub(crate) fn record_error(op: &'static str, e: &dyn std::fmt::Display) {
    metrics::counter!("engram_cache_errors_total", "op" => op).increment(1);
    tracing::warn!(op, error = %e, "cache operation failed; continuing without the cache");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let c = MemoryCache::new(100);
        c.put("short", b"a", Duration::from_millis(50))
            .await
            .unwrap();
        c.put("long", b"b", Duration::from_secs(60)).await.unwrap();
        c.put("never", b"c", Duration::ZERO).await.unwrap();
        assert_eq!(c.get("short").await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(
            c.get("never").await.unwrap(),
            None,
            "zero TTL stores nothing"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(c.get("short").await.unwrap(), None);
        assert_eq!(c.get("long").await.unwrap().as_deref(), Some(&b"b"[..]));
        // Overwriting renews the TTL with the new one.
        c.put("long", b"d", Duration::from_millis(30))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.get("long").await.unwrap(), None);
        assert_eq!(c.get("missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn generations_start_at_zero_and_bump_per_tenant() {
        let c = MemoryCache::new(10);
        assert_eq!(c.generation("acme").await.unwrap(), 0);
        assert_eq!(c.bump("acme").await.unwrap(), 1);
        assert_eq!(c.bump("acme").await.unwrap(), 2);
        assert_eq!(c.generation("acme").await.unwrap(), 2);
        assert_eq!(c.generation("globex").await.unwrap(), 0);
        // Generations survive any amount of entry churn.
        for i in 0..100 {
            c.put(&format!("k{i}"), &[0; 10], Duration::from_secs(60))
                .await
                .unwrap();
        }
        assert_eq!(c.generation("acme").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn capacity_is_bounded_and_large_values_weigh_more() {
        let c = MemoryCache::new(20);
        for i in 0..200 {
            c.put(&format!("k{i}"), &[1; 8], Duration::from_secs(60))
                .await
                .unwrap();
        }
        c.entries.run_pending_tasks();
        assert!(c.entries.entry_count() <= 20, "{}", c.entries.entry_count());
        assert!(c.entries.weighted_size() <= 20);
    }

    #[test]
    fn vectors_and_rankings_round_trip() {
        let v = vec![0.25f32, -1.5, 3.0e-7];
        assert_eq!(decode_vector(&encode_vector(&v), 3), Some(v.clone()));
        assert_eq!(decode_vector(&encode_vector(&v), 4), None);
        assert_eq!(decode_vector(&encode_vector(&[f32::NAN]), 1), None);

        let hits = vec![
            Fused {
                key: 7,
                vector: Some(0.812_345_7),
                keyword: None,
                vector_rank: Some(1),
                keyword_rank: None,
                recency: None,
                fused: 1.0 / 61.0,
            },
            Fused {
                key: u64::MAX,
                vector: None,
                keyword: Some(12.5),
                vector_rank: None,
                keyword_rank: Some(3),
                recency: Some(0.25),
                fused: 0.1,
            },
        ];
        assert_eq!(decode_ranking(&encode_ranking(&hits)), Some(hits));
        assert_eq!(decode_ranking(b"{\"v\":1,\"hits\":[]}"), None);
        assert_eq!(decode_ranking(b"garbage"), None);
        // Keys carry no memory content.
        let bytes = encode_ranking(&[]);
        assert_eq!(bytes, b"{\"v\":2,\"hits\":[]}");
    }

    #[test]
    fn keys_separate_models_tenants_generations_and_shapes() {
        let m = ModelInfo {
            name: "minilm".into(),
            version: "v1".into(),
            dims: 3,
        };
        let m2 = ModelInfo {
            version: "v2".into(),
            ..m.clone()
        };
        let k = embedding_key(&m, "hello");
        assert!(k.starts_with("emb:minilm:v1:"), "{k}");
        assert_eq!(k.len(), "emb:minilm:v1:".len() + 64);
        assert_ne!(k, embedding_key(&m2, "hello"));
        assert_ne!(k, embedding_key(&m, "hello!"));

        let shape = serde_json::json!({"q": "x", "k": 3});
        let r = result_key("acme", 4, &shape);
        assert!(r.starts_with("res:acme:4:"), "{r}");
        assert_ne!(r, result_key("acme", 5, &shape));
        assert_ne!(r, result_key("globex", 4, &shape));
        assert_ne!(
            r,
            result_key("acme", 4, &serde_json::json!({"q": "x", "k": 4}))
        );
    }
}
