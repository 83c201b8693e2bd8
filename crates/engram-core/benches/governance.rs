//! Per-write and per-request costs governance adds: chaining an audit event,
//! verifying a chain, detecting and redacting PII (checking an API key:
//! `cargo bench -p engram-auth`).

use chrono::{DateTime, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use engram_core::audit::{AuditAction, AuditCtx, AuditEntry, AuditEvent, Verifier, GENESIS};
use engram_core::pii;
use serde_json::json;

fn chain(n: u64) -> Vec<AuditEvent> {
    let ctx = AuditCtx {
        actor: "key:0123456789abcdef".into(),
        request_id: Some("0190f0c8-5f8e-7a3c-9f00-1234567890ab".into()),
        traceparent: None,
    };
    let at: DateTime<Utc> = DateTime::from_timestamp_micros(1_763_900_000_000_000).unwrap();
    let mut prev = GENESIS.to_string();
    (1..=n)
        .map(|i| {
            let e = AuditEvent::chain(
                AuditEntry {
                    tenant: "acme".into(),
                    action: AuditAction::Create,
                    target: "0190f0c8-5f8e-7a3c-9f00-1234567890ab".into(),
                    details: json!({"namespace": "agent:coder", "checksum": "ab".repeat(32), "client_id": null}),
                },
                &ctx,
                i,
                at,
                prev.clone(),
            );
            prev = e.hash.clone();
            e
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let events = chain(1000);
    c.bench_function("audit/chain_one_event", |b| {
        let e = events[500].clone();
        b.iter(|| black_box(&e).compute_hash())
    });
    let mut g = c.benchmark_group("audit/verify");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("1000_events", |b| {
        b.iter(|| {
            let mut v = Verifier::new();
            v.feed(black_box(&events));
            v.report()
        })
    });
    g.finish();

    let plain = "The staging database password rotates every Monday; deploys are frozen \
                 during the December holidays and version 1.2.3 shipped on 2024-05-01. "
        .repeat(4);
    let with_pii = format!(
        "{plain} Reach Alice at alice@example.com or +44 20 7946 0958, card 4111 1111 1111 1111."
    );
    let mut g = c.benchmark_group("pii");
    for (name, text) in [("find_plain", &plain), ("find_with_pii", &with_pii)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| pii::find(black_box(text))));
    }
    g.throughput(Throughput::Bytes(with_pii.len() as u64));
    g.bench_function("redact_with_pii", |b| {
        b.iter(|| pii::redact(black_box(&with_pii), &[pii::PiiKind::Email]))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
