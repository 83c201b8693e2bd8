//! Rank fusion of the vector and keyword result lists.

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
    /// The fused score the hits are ordered by.
    pub fused: f32,
}

/// Weights and the RRF constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionParams {
    pub vector_weight: f32,
    pub keyword_weight: f32,
    /// The `k` of reciprocal-rank fusion: larger flattens the rank curve.
    pub rrf_k: f32,
}

impl Default for FusionParams {
    fn default() -> Self {
        FusionParams {
            vector_weight: 1.0,
            keyword_weight: 1.0,
            rrf_k: 60.0,
        }
    }
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
        fused: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn agreement_beats_a_single_signal() {
        let v = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let k = [(3, 12.0), (4, 11.0)];
        let out = rrf(&v, &k, FusionParams::default());
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
            ..Default::default()
        };
        assert_eq!(rrf(&v, &k, p)[0].key, 1);
        let p = FusionParams {
            keyword_weight: 2.0,
            ..Default::default()
        };
        assert_eq!(rrf(&v, &k, p)[0].key, 2);
    }

    fn arb_list() -> impl Strategy<Value = Vec<(Key, f32)>> {
        prop::collection::vec((0u64..40, 0.0f32..1.0), 0..30)
    }

    proptest! {
        #[test]
        fn fused_is_a_deduplicated_union_in_score_order(v in arb_list(), k in arb_list(), wv in 0.0f32..3.0, wk in 0.0f32..3.0) {
            let p = FusionParams { vector_weight: wv, keyword_weight: wk, rrf_k: 60.0 };
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
            let before = rrf(&v, &k, FusionParams::default());
            let pos_before = before.iter().position(|f| f.key == pick as u64).unwrap();
            let mut v2 = v.clone();
            let item = v2.remove(pick);
            v2.insert(0, item);
            let after = rrf(&v2, &k, FusionParams::default());
            let pos_after = after.iter().position(|f| f.key == pick as u64).unwrap();
            prop_assert!(pos_after <= pos_before);
        }
    }
}
