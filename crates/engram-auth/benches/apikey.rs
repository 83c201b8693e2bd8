//! What checking an API key costs per request, the store lookup aside:
//! parsing the token and the constant-time hash comparison.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use engram_auth::apikey;

fn bench(c: &mut Criterion) {
    let key = apikey::mint();
    c.bench_function("apikey/parse_and_verify", |b| {
        b.iter(|| {
            let (_, secret) = apikey::parse(black_box(&key.token)).unwrap();
            apikey::verify_secret(secret, &key.secret_hash)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
