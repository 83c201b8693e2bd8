//! Vector search on 20k x 384 random unit vectors (default options): the HNSW
//! path, the exact path, and recall@10 of the former against the latter.
//!
//! The vectors have the structure of text embeddings (a 16-dimensional
//! latent point mapped into 384 dimensions, plus noise). Recall is also
//! printed for uniformly random unit vectors, which have no structure for
//! any ANN index to exploit (see the report in the crate's tests).
//!
//! `cargo bench -p engram-index --bench vector`

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use engram_core::{AttrTable, Change, ChangeOp, DocAttrs, IndexDoc, Key, Kind, Scope};
use engram_index::{UsearchIndex, VectorOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

const N: usize = 20_000;
const DIMS: usize = 384;
const TENANT: &str = "bench";

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn uniform_unit(rng: &mut StdRng) -> Vec<f32> {
    unit((0..DIMS).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
}

/// Embedding-like unit vectors: 16-d latent, linear map to 384-d, 5% noise.
struct Embeddings {
    basis: Vec<Vec<f32>>,
}

impl Embeddings {
    const LATENT: usize = 16;
    const NOISE: f32 = 0.05;

    fn new(rng: &mut StdRng) -> Self {
        let basis = (0..DIMS)
            .map(|_| {
                (0..Self::LATENT)
                    .map(|_| rng.gen_range(-1.0f32..1.0))
                    .collect()
            })
            .collect();
        Embeddings { basis }
    }

    fn sample(&self, rng: &mut StdRng) -> Vec<f32> {
        let z = unit(
            (0..Self::LATENT)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect(),
        );
        let scale = (Self::LATENT as f32).sqrt() * Self::NOISE;
        unit(
            self.basis
                .iter()
                .map(|row| {
                    row.iter().zip(&z).map(|(a, z)| a * z).sum::<f32>()
                        + scale * rng.gen_range(-1.0f32..1.0)
                })
                .collect(),
        )
    }
}

fn build(
    dir: &std::path::Path,
    table: &AttrTable,
    rng: &mut StdRng,
    gen: &dyn Fn(&mut StdRng) -> Vec<f32>,
) -> UsearchIndex {
    let idx = UsearchIndex::open(dir, DIMS, VectorOptions::default()).unwrap();
    let now = Utc::now();
    let attrs = Arc::new(DocAttrs {
        tenant: TENANT.into(),
        namespace: "default".into(),
        kind: Kind::Fact,
        tags: Vec::new(),
        metadata: Default::default(),
        created_at: now,
        updated_at: now,
        expires_at: None,
        occurred_at: now,
        session: None,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    for chunk in 0..N / 1000 {
        let changes: Vec<Change> = (0..1000)
            .map(|i| {
                let key = (chunk * 1000 + i) as Key;
                table.insert(key, attrs.clone());
                Change {
                    seq: key + 1,
                    key,
                    op: ChangeOp::Upsert(Arc::new(IndexDoc {
                        key,
                        text: String::new(),
                        context: String::new(),
                        vector: gen(rng),
                        target_vector: None,
                        attrs: attrs.clone(),
                    })),
                }
            })
            .collect();
        rt.block_on(engram_core::DerivedIndex::apply(&idx, &changes))
            .unwrap();
    }
    eprintln!("built {N} x {DIMS} in {:.1?}", started.elapsed());
    idx
}

fn recall(idx: &UsearchIndex, scope: &Scope<'_>, queries: &[Vec<f32>]) -> f64 {
    let mut found = 0;
    for q in queries {
        let approx = idx.search_blocking(q, 10, scope).unwrap();
        let exact: HashSet<Key> = idx
            .exact_search(q, 10, scope)
            .unwrap()
            .into_iter()
            .map(|h| h.0)
            .collect();
        found += approx.iter().filter(|h| exact.contains(&h.0)).count();
    }
    found as f64 / (queries.len() * 10) as f64
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);

    // Recall@10 on uniformly random unit vectors, for reference only.
    {
        let dir = tempfile::tempdir().unwrap();
        let table = AttrTable::new();
        let idx = build(dir.path(), &table, &mut rng, &uniform_unit);
        let scope = Scope::new(TENANT, &[], None, Utc::now(), &table);
        let queries: Vec<Vec<f32>> = (0..200).map(|_| uniform_unit(&mut rng)).collect();
        eprintln!(
            "recall@10, uniformly random unit vectors (M=16, ef_add=128, ef=64): {:.4}",
            recall(&idx, &scope, &queries)
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let table = AttrTable::new();
    let gen = Embeddings::new(&mut rng);
    let idx = build(dir.path(), &table, &mut rng, &|r| gen.sample(r));
    let scope = Scope::new(TENANT, &[], None, Utc::now(), &table);
    let queries: Vec<Vec<f32>> = (0..200).map(|_| gen.sample(&mut rng)).collect();
    eprintln!(
        "recall@10, embedding-like unit vectors (M=16, ef_add=128, ef=64): {:.4}",
        recall(&idx, &scope, &queries)
    );

    let mut i = 0;
    c.bench_function("usearch_hnsw_search_k10_20k_x_384", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(idx.search_blocking(&queries[i], 10, &scope).unwrap())
        })
    });
    let mut i = 0;
    c.bench_function("exact_search_k10_20k_x_384", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(idx.exact_search(&queries[i], 10, &scope).unwrap())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
