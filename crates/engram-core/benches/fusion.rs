//! Rank fusion cost for typical candidate list sizes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use engram_core::fusion::{rrf, FusionParams};

type Ranked = Vec<(u64, f32)>;

fn lists(n: usize) -> (Ranked, Ranked) {
    // Half of each list overlaps the other, as in real hybrid queries.
    let v = (0..n as u64)
        .map(|i| (i, 1.0 - i as f32 / n as f32))
        .collect();
    let k = (n as u64 / 2..n as u64 * 3 / 2)
        .map(|i| (i, 20.0 - i as f32 / n as f32))
        .collect();
    (v, k)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rrf");
    for n in [10usize, 50, 200, 1000] {
        let (v, k) = lists(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| rrf(black_box(&v), black_box(&k), FusionParams::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
