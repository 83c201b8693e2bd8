//! Fusion of the vector and keyword result lists.
//!
//! The default is a convex combination of z-scored signals: each list's
//! scores are standardised (mean 0, standard deviation 1 over the list), a
//! memory missing from a list gets that list's lowest score, and the fused
//! score is `(wv * z_vector + wk * z_keyword) / (wv + wk)`. Unlike
//! reciprocal-rank fusion it keeps *how much* better one hit is than the
//! next: a keyword hit that stands far above the rest stays on top even when
//! the vector side ranks it 30th. Measured on the LoCoMo dev conversations
//! (BENCHMARKS.md, "Retrieval"), evidence fraction@10: keyword alone 0.744,
//! RRF (k = 60) 0.669, this 0.76; the default weights (vector 0.3, keyword
//! 0.7) were chosen there, and reciprocal-rank fusion stays available
//! (`"fusion": "rrf"`).

use serde::Serialize;
use std::collections::HashMap;

use crate::types::Key;

/// Per-signal contribution to one fused hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fused {
    #[serde(skip)]
    pub key: Key,
    /// Cosine similarity, if the vector search returned the memory.
    pub vector: Option<f32>,
    /// BM25 score, if the keyword search returned the memory.
    pub keyword: Option<f32>,
    /// 1-based rank in the vector list.
    pub vector_rank: Option<u32>,
    /// 1-based rank in the keyword list.
    pub keyword_rank: Option<u32>,
    /// The recency preference added to the score (`recency` requests only):
    /// `weight * 0.5^(age / half_life)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recency: Option<f32>,
    /// The fused score the hits are ordered by.
    pub fused: f32,
}

/// How the two lists are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Method {
    /// Weighted sum of z-scored scores (see the module docs).
    #[default]
    Convex,
    /// Weighted reciprocal-rank fusion.
    Rrf,
}

/// Method, weights, the RRF constant and the normalisation depth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionParams {
    pub method: Method,
    pub vector_weight: f32,
    pub keyword_weight: f32,
    /// The `k` of reciprocal-rank fusion: larger flattens the rank curve.
    pub rrf_k: f32,
    /// Convex fusion standardises each list over its first `depth` entries,
    /// and an entry below them counts as the lowest of those (as a missing
    /// one does). The engine sets it to the fewest candidates a search
    /// fetches, so asking for more hits (a deeper candidate list) never
    /// reorders the top: on the LoCoMo dev conversations, standardising over
    /// the whole list made `k = 50` rank 0.762 of the evidence in its top 10
    /// where `k = 25` ranked 0.770.
    pub depth: usize,
}

impl Default for FusionParams {
    fn default() -> Self {
        FusionParams {
            method: Method::Convex,
            vector_weight: 0.3,
            keyword_weight: 0.7,
            rrf_k: 60.0,
            depth: 100,
        }
    }
}

/// How much a conversation message said by the one speaker a query names is
/// preferred, in standard deviations of the fused score (convex fusion only).
/// "What did Caroline research?" is mostly answered by Caroline's own turns;
/// measured on the LoCoMo dev conversations, evidence fraction@10 +0.01
/// (BENCHMARKS.md, "Retrieval").
pub const SPEAKER_PREFERENCE: f32 = 0.5;

/// The lowercase words of a text (alphanumeric runs).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Raise the hits said by the one speaker `query` names (every word of the
/// speaker's name is a word of the query) by [`SPEAKER_PREFERENCE`], and
/// re-sort. Nothing changes when the query names no speaker of the hits, or
/// more than one.
pub fn prefer_named_speaker(
    hits: &mut [Fused],
    query: &str,
    speaker: impl Fn(Key) -> Option<String>,
) {
    let q: std::collections::HashSet<String> = words(query).into_iter().collect();
    let speakers: Vec<Option<String>> = hits.iter().map(|h| speaker(h.key)).collect();
    let mut named: Vec<String> = speakers
        .iter()
        .flatten()
        .map(|s| words(s).join(" "))
        .filter(|s| !s.is_empty() && s.split(' ').all(|w| q.contains(w)))
        .collect();
    named.sort_unstable();
    named.dedup();
    let [one] = named.as_slice() else {
        return;
    };
    for (h, s) in hits.iter_mut().zip(&speakers) {
        if s.as_ref().is_some_and(|s| &words(s).join(" ") == one) {
            h.fused += SPEAKER_PREFERENCE;
        }
    }
    hits.sort_by(|a, b| b.fused.total_cmp(&a.fused).then(a.key.cmp(&b.key)));
}

/// A preference for recent events: a hit whose event time (`occurred_at`) is
/// `age` away from `origin` gains `weight * 0.5^(age / half_life)`. The
/// origin defaults to now; like a decay function in Elasticsearch, events on
/// either side of it decay, so an origin in the past means "around then".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recency {
    pub origin: chrono::DateTime<chrono::Utc>,
    pub half_life_seconds: f64,
    pub weight: f32,
}

impl Recency {
    /// The preference for an event at `at`.
    pub fn boost(&self, at: chrono::DateTime<chrono::Utc>) -> f32 {
        let age = (self.origin - at).num_milliseconds().unsigned_abs() as f64 / 1000.0;
        self.weight * 0.5f64.powf(age / self.half_life_seconds) as f32
    }
}

/// Re-rank `hits` with a recency preference. The scores are standardised
/// first (mean 0, standard deviation 1 over the candidates) so that the
/// weight means the same in every mode: BM25, cosine, RRF and convex scores
/// live on different scales. A hit whose event time is unknown gets none.
pub fn prefer_recent(
    hits: &mut [Fused],
    r: &Recency,
    occurred_at: impl Fn(Key) -> Option<chrono::DateTime<chrono::Utc>>,
) {
    if hits.is_empty() {
        return;
    }
    let n = hits.len() as f32;
    let mean = hits.iter().map(|h| h.fused).sum::<f32>() / n;
    let sd = (hits.iter().map(|h| (h.fused - mean).powi(2)).sum::<f32>() / n).sqrt();
    for h in hits.iter_mut() {
        let z = if sd > f32::EPSILON {
            (h.fused - mean) / sd
        } else {
            0.0
        };
        let boost = occurred_at(h.key).map_or(0.0, |t| r.boost(t));
        h.recency = Some(boost);
        h.fused = z + boost;
    }
    hits.sort_by(|a, b| b.fused.total_cmp(&a.fused).then(a.key.cmp(&b.key)));
}

/// Fuse the lists with `p.method`.
pub fn fuse(vector: &[(Key, f32)], keyword: &[(Key, f32)], p: FusionParams) -> Vec<Fused> {
    match p.method {
        Method::Convex => convex(vector, keyword, p),
        Method::Rrf => rrf(vector, keyword, p),
    }
}

/// Standardised scores of a list (first occurrence of each key; value:
/// score, 1-based rank, z) and the z of a key missing from it. Mean and
/// standard deviation are those of the first `depth` distinct entries; the
/// lowest z among them is the floor, given to missing keys and to entries
/// below it (deeper in the list), or -1 below every present one when those
/// entries are all equal.
fn zscores(list: &[(Key, f32)], depth: usize) -> (HashMap<Key, (f32, u32, f32)>, f32) {
    let mut first: HashMap<Key, (f32, u32, f32)> = HashMap::with_capacity(list.len());
    // Scores of the first `depth` distinct keys, in list order.
    let mut head: Vec<f64> = Vec::with_capacity(depth.min(list.len()));
    for (i, &(key, score)) in list.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(e) = first.entry(key) {
            e.insert((score, i as u32 + 1, 0.0));
            if head.len() < depth.max(1) {
                head.push(score as f64);
            }
        }
    }
    let n = head.len() as f64;
    if n == 0.0 {
        return (first, 0.0);
    }
    let mean = head.iter().sum::<f64>() / n;
    let sd = (head.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd.is_nan() || sd <= 1e-9 {
        // Nothing to tell the head apart: every present key scores 0.
        return (first, -1.0);
    }
    let z = |s: f64| ((s - mean) / sd) as f32;
    let floor = head.iter().map(|&s| z(s)).fold(f32::INFINITY, f32::min);
    for v in first.values_mut() {
        v.2 = z(v.0 as f64).max(floor);
    }
    (first, floor)
}

/// Convex combination of z-scored scores: `fused = (wv * zv + wk * zk) /
/// (wv + wk)`, a missing signal counting as its list's lowest score.
/// Output is ordered by fused score, ties by key.
pub fn convex(vector: &[(Key, f32)], keyword: &[(Key, f32)], p: FusionParams) -> Vec<Fused> {
    let (zv, floor_v) = zscores(vector, p.depth);
    let (zk, floor_k) = zscores(keyword, p.depth);
    let total = p.vector_weight + p.keyword_weight;
    let (wv, wk) = if total > 0.0 {
        (p.vector_weight / total, p.keyword_weight / total)
    } else {
        (0.5, 0.5)
    };
    let mut keys: Vec<Key> = zv.keys().chain(zk.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out: Vec<Fused> = keys
        .into_iter()
        .map(|key| {
            let v = zv.get(&key);
            let k = zk.get(&key);
            Fused {
                key,
                vector: v.map(|x| x.0),
                keyword: k.map(|x| x.0),
                vector_rank: v.map(|x| x.1),
                keyword_rank: k.map(|x| x.1),
                recency: None,
                fused: wv * v.map_or(floor_v, |x| x.2) + wk * k.map_or(floor_k, |x| x.2),
            }
        })
        .collect();
    out.sort_by(|a, b| b.fused.total_cmp(&a.fused).then(a.key.cmp(&b.key)));
    out
}

/// Weighted reciprocal-rank fusion: `fused = Σ w / (rrf_k + rank)`.
/// Each input must be ordered best first; duplicates within a list keep their
/// first (best) rank. Output is ordered by fused score, ties by key.
pub fn rrf(vector: &[(Key, f32)], keyword: &[(Key, f32)], p: FusionParams) -> Vec<Fused> {
    let mut by_key: HashMap<Key, Fused> = HashMap::with_capacity(vector.len() + keyword.len());
    for (i, &(key, score)) in vector.iter().enumerate() {
        let e = by_key.entry(key).or_insert_with(|| empty(key));
        if e.vector_rank.is_none() {
            let rank = i as u32 + 1;
            e.vector = Some(score);
            e.vector_rank = Some(rank);
            e.fused += p.vector_weight / (p.rrf_k + rank as f32);
        }
    }
    for (i, &(key, score)) in keyword.iter().enumerate() {
        let e = by_key.entry(key).or_insert_with(|| empty(key));
        if e.keyword_rank.is_none() {
            let rank = i as u32 + 1;
            e.keyword = Some(score);
            e.keyword_rank = Some(rank);
            e.fused += p.keyword_weight / (p.rrf_k + rank as f32);
        }
    }
    let mut out: Vec<Fused> = by_key.into_values().collect();
    out.sort_by(|a, b| b.fused.total_cmp(&a.fused).then(a.key.cmp(&b.key)));
    out
}

/// A single list as fused hits, keeping its own score as the fused one.
pub fn single(list: &[(Key, f32)], is_vector: bool) -> Vec<Fused> {
    list.iter()
        .enumerate()
        .map(|(i, &(key, score))| {
            let rank = Some(i as u32 + 1);
            Fused {
                key,
                vector: is_vector.then_some(score),
                keyword: (!is_vector).then_some(score),
                vector_rank: if is_vector { rank } else { None },
                keyword_rank: if is_vector { None } else { rank },
                recency: None,
                fused: score,
            }
        })
        .collect()
}

fn empty(key: Key) -> Fused {
    Fused {
        key,
        vector: None,
        keyword: None,
        vector_rank: None,
        keyword_rank: None,
        recency: None,
        fused: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recency_halves_per_half_life_and_reorders_ties() {
        use chrono::{Duration, TimeZone, Utc};
        let origin = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        let r = Recency {
            origin,
            half_life_seconds: 10.0 * 86_400.0,
            weight: 1.0,
        };
        assert!((r.boost(origin) - 1.0).abs() < 1e-6);
        assert!((r.boost(origin - Duration::days(10)) - 0.5).abs() < 1e-6);
        assert!((r.boost(origin - Duration::days(20)) - 0.25).abs() < 1e-6);
        // After the origin decays the same way.
        assert!((r.boost(origin + Duration::days(10)) - 0.5).abs() < 1e-6);

        // Equal relevance: the newer event wins; a much more relevant old
        // one still beats a barely relevant new one.
        let at = |k: Key| match k {
            1 => Some(origin - Duration::days(100)),
            2 => Some(origin - Duration::days(1)),
            3 => Some(origin),
            _ => None,
        };
        let mut hits = single(&[(1, 5.0), (2, 5.0), (3, 0.1), (4, 5.0)], false);
        prefer_recent(&mut hits, &r, at);
        let order: Vec<Key> = hits.iter().map(|h| h.key).collect();
        assert_eq!(order, vec![2, 1, 4, 3]);
        assert!(hits[0].recency.unwrap() > 0.9);
        assert_eq!(hits[2].recency, Some(0.0));
        // Scores already equal: recency alone orders them.
        let mut flat = single(&[(1, 1.0), (3, 1.0)], true);
        prefer_recent(&mut flat, &r, at);
        assert_eq!(flat[0].key, 3);
    }
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn rrf_params() -> FusionParams {
        FusionParams {
            method: Method::Rrf,
            vector_weight: 1.0,
            keyword_weight: 1.0,
            rrf_k: 60.0,
            depth: 100,
        }
    }

    #[test]
    fn convex_keeps_a_standout_keyword_hit_on_top() {
        // The keyword side is sure of key 9 (far above the rest); the vector
        // side ranks it last. RRF puts the vector's favourites first.
        let v: Vec<(Key, f32)> = (1..=9).map(|i| (i, 0.9 - i as f32 * 0.01)).collect();
        let k = [(9, 30.0), (1, 5.0), (2, 4.9), (3, 4.8)];
        let out = convex(&v, &k, FusionParams::default());
        assert_eq!(out[0].key, 9, "{out:?}");
        assert_eq!(out[0].vector_rank, Some(9));
        assert_eq!(out[0].keyword_rank, Some(1));
        assert_ne!(rrf(&v, &k, rrf_params())[0].key, 9);
    }

    #[test]
    fn the_named_speaker_is_preferred_when_only_one_is_named() {
        let speaker = |k: Key| {
            Some(
                if k.is_multiple_of(2) {
                    "Caroline"
                } else {
                    "Melanie Ann"
                }
                .to_string(),
            )
        };
        let base = || {
            convex(
                &[(1, 0.9), (2, 0.85), (3, 0.2)],
                &[],
                FusionParams::default(),
            )
        };
        let mut hits = base();
        assert_eq!(hits[0].key, 1);
        prefer_named_speaker(&mut hits, "What did caroline paint?", speaker);
        assert_eq!(hits[0].key, 2, "{hits:?}");
        // Every word of a name must appear; two names: no preference.
        let mut hits = base();
        prefer_named_speaker(&mut hits, "What did Ann say?", speaker);
        assert_eq!(hits, base());
        let mut hits = base();
        prefer_named_speaker(&mut hits, "Did Caroline meet Melanie Ann?", speaker);
        assert_eq!(hits, base());
        let mut hits = base();
        prefer_named_speaker(&mut hits, "Where was it?", |_| None);
        assert_eq!(hits, base());
    }

    #[test]
    fn convex_with_one_signal_keeps_its_order() {
        let v = [(3, 0.9), (1, 0.8), (2, 0.1)];
        let p = FusionParams {
            keyword_weight: 0.0,
            ..FusionParams::default()
        };
        let out = convex(&v, &[(2, 9.0)], p);
        assert_eq!(out.iter().map(|f| f.key).collect::<Vec<_>>(), vec![3, 1, 2]);
        let only = convex(&v, &[], FusionParams::default());
        assert_eq!(
            only.iter().map(|f| f.key).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
        assert!(convex(&[], &[], FusionParams::default()).is_empty());
        // Equal scores: present beats missing.
        let out = convex(&[(1, 0.5)], &[(2, 1.0), (1, 1.0)], FusionParams::default());
        assert_eq!(out[0].key, 1);
    }

    #[test]
    fn a_deeper_candidate_list_does_not_reorder_the_head() {
        // Two lists of 150 candidates with scores falling at different rates;
        // fusing their first 100 and fusing all 150 must agree on every key
        // the first 100 hold.
        let v: Vec<(Key, f32)> = (0..150).map(|i| (i, 1.0 - i as f32 * 0.004)).collect();
        let k: Vec<(Key, f32)> = (0..150)
            .map(|i| ((i * 7 + 3) % 200, 30.0 / (1.0 + i as f32)))
            .collect();
        let p = FusionParams::default();
        assert_eq!(p.depth, 100);
        let head = convex(&v[..100], &k[..100], p);
        let all = convex(&v, &k, p);
        let in_all: HashMap<Key, f32> = all.iter().map(|f| (f.key, f.fused)).collect();
        for f in &head {
            assert_eq!(in_all[&f.key], f.fused, "key {}", f.key);
        }
        let order: Vec<Key> = all
            .iter()
            .map(|f| f.key)
            .filter(|key| head.iter().any(|h| h.key == *key))
            .collect();
        assert_eq!(order, head.iter().map(|f| f.key).collect::<Vec<_>>());
        assert_eq!(
            all[..10].iter().map(|f| f.key).collect::<Vec<_>>(),
            head[..10].iter().map(|f| f.key).collect::<Vec<_>>()
        );
        // Standardising over the whole list instead would have moved scores.
        let whole = convex(&v, &k, FusionParams { depth: 150, ..p });
        assert!(whole.iter().any(|f| in_all[&f.key] != f.fused));
    }

    #[test]
    fn agreement_beats_a_single_signal() {
        let v = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let k = [(3, 12.0), (4, 11.0)];
        let out = rrf(&v, &k, rrf_params());
        assert_eq!(out[0].key, 3, "in both lists, so first: {out:?}");
        assert_eq!(out[0].vector_rank, Some(3));
        assert_eq!(out[0].keyword_rank, Some(1));
        assert_eq!(out[0].vector, Some(0.7));
        assert_eq!(out[0].keyword, Some(12.0));
        assert_eq!(out.len(), 4);
        let four = out.iter().find(|f| f.key == 4).unwrap();
        assert_eq!(four.vector, None);
    }

    #[test]
    fn weights_shift_the_order() {
        let v = [(1, 0.9)];
        let k = [(2, 5.0)];
        let p = FusionParams {
            vector_weight: 2.0,
            ..rrf_params()
        };
        assert_eq!(rrf(&v, &k, p)[0].key, 1);
        let p = FusionParams {
            keyword_weight: 2.0,
            ..rrf_params()
        };
        assert_eq!(rrf(&v, &k, p)[0].key, 2);
    }

    fn arb_list() -> impl Strategy<Value = Vec<(Key, f32)>> {
        prop::collection::vec((0u64..40, 0.0f32..1.0), 0..30)
    }

    proptest! {
        #[test]
        fn fused_is_a_deduplicated_union_in_score_order(v in arb_list(), k in arb_list(), wv in 0.0f32..3.0, wk in 0.0f32..3.0) {
            let p = FusionParams { vector_weight: wv, keyword_weight: wk, ..rrf_params() };
            let out = rrf(&v, &k, p);
            let keys: HashSet<Key> = v.iter().chain(k.iter()).map(|x| x.0).collect();
            prop_assert_eq!(out.len(), keys.len());
            let out_keys: HashSet<Key> = out.iter().map(|f| f.key).collect();
            prop_assert_eq!(&out_keys, &keys);
            for w in out.windows(2) {
                prop_assert!(w[0].fused >= w[1].fused);
            }
            for f in &out {
                let mut want = 0.0f32;
                if let Some(r) = f.vector_rank { want += wv / (60.0 + r as f32); }
                if let Some(r) = f.keyword_rank { want += wk / (60.0 + r as f32); }
                prop_assert!((f.fused - want).abs() < 1e-6);
                // The rank is the first position of the key in its list.
                if let Some(r) = f.vector_rank {
                    let first = v.iter().position(|x| x.0 == f.key).unwrap() as u32 + 1;
                    prop_assert_eq!(r, first);
                }
            }
        }

        #[test]
        fn improving_a_rank_never_lowers_the_fused_position(n in 2usize..20, pick in 0usize..19) {
            // A key that moves up in one list cannot move down in the fused order.
            let pick = pick % n;
            let v: Vec<(Key, f32)> = (0..n as u64).map(|i| (i, 1.0)).collect();
            let k: Vec<(Key, f32)> = (0..n as u64).rev().map(|i| (i, 1.0)).collect();
            let before = rrf(&v, &k, rrf_params());
            let pos_before = before.iter().position(|f| f.key == pick as u64).unwrap();
            let mut v2 = v.clone();
            let item = v2.remove(pick);
            v2.insert(0, item);
            let after = rrf(&v2, &k, rrf_params());
            let pos_after = after.iter().position(|f| f.key == pick as u64).unwrap();
            prop_assert!(pos_after <= pos_before);
        }

        #[test]
        fn convex_is_a_deduplicated_union_in_score_order(v in arb_list(), k in arb_list(), wv in 0.0f32..3.0, wk in 0.0f32..3.0) {
            let p = FusionParams { vector_weight: wv, keyword_weight: wk, ..FusionParams::default() };
            let out = convex(&v, &k, p);
            let keys: HashSet<Key> = v.iter().chain(k.iter()).map(|x| x.0).collect();
            prop_assert_eq!(out.len(), keys.len());
            for w in out.windows(2) {
                prop_assert!(w[0].fused >= w[1].fused);
            }
            for f in &out {
                prop_assert!(f.fused.is_finite());
                if let Some(r) = f.keyword_rank {
                    let first = k.iter().position(|x| x.0 == f.key).unwrap() as u32 + 1;
                    prop_assert_eq!(r, first);
                    prop_assert_eq!(f.keyword, Some(k[first as usize - 1].1));
                }
            }
        }
    }
}
