//! The SQL translation of filters and scopes selects exactly the rows the
//! in-memory evaluator (`Filter::matches`, `Scope::matches`) admits, on a
//! real PostgreSQL, over random documents and random filters (parsed from
//! JSON) plus hand-written edge cases.
//!
//! `ENGRAM_FILTER_SEED` / `ENGRAM_FILTER_CASES` change the seed and the
//! number of random filters.

use crate::common::{Doc, TestDb};
use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, Utc};
use engram_core::filter::{Bound, CmpOp, Field, Filter, Op};
use engram_core::{AttrTable, DocAttrs, Key, Kind, Scope};
use engram_postgres::filter_sql::{push_filter, push_scope};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use sqlx::{PgPool, Postgres, QueryBuilder};
use std::collections::BTreeSet;

fn base() -> DateTime<Utc> {
    "2026-03-01T10:00:00Z".parse().unwrap()
}

/// Times documents are created / updated at (microsecond precision, as stored).
fn doc_times() -> Vec<DateTime<Utc>> {
    let b = base();
    let us = Duration::microseconds;
    vec![
        b,
        b + us(1),
        b - us(1),
        b + Duration::seconds(1),
        b + Duration::hours(1),
        b + Duration::days(1),
        b - Duration::days(400),
        "1969-12-31T23:59:59.999999Z".parse().unwrap(),
        "1955-06-01T12:00:00.5Z".parse().unwrap(),
        "2016-12-31T23:59:59.999999Z".parse().unwrap(),
        "2017-01-01T00:00:00Z".parse().unwrap(),
    ]
}

/// RFC 3339 strings, valid and not, for metadata values and time operands.
const TIME_STRINGS: &[&str] = &[
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00.5Z",
    "2026-03-01T11:00:00+01:00",
    "2026-03-01T05:00:00-05:00",
    "2026-03-01t10:00:00z",
    "2026-03-01 10:00:00Z",
    "2026-03-01T10:00:00.000001Z",
    "2026-03-01T09:59:59.999999Z",
    "2026-03-01T10:00:00.0000005Z",
    "2026-03-01T10:00:00.123456789123Z",
    "2026-03-01T10:00:00.1234567891+00:00",
    "2016-12-31T23:59:60Z",
    "2016-12-31T23:59:60.5+00:00",
    "2017-01-01T00:59:60.25+01:00",
    "0000-02-29T00:00:00Z",
    "0000-01-01T00:00:00+23:59",
    "2024-02-29T12:00:00\u{2212}05:00",
    "2026-03-01T10:00:00+23:59",
    "2026-03-01T10:00:00-23:59",
    "9999-12-31T23:59:59.999999999Z",
    "1969-12-31T23:59:59.9999999Z",
    "1955-06-01T12:00:00.5Z",
    // Not RFC 3339 for chrono:
    "0001-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-03-00T00:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T10:60:00Z",
    "2026-03-01T10:00:61Z",
    "2026-03-01T10:00:00+24:00",
    "2026-03-01T10:00:00+05:60",
    "2026-03-01T10:00:00+0500",
    "2026-03-01T10:00:00+05",
    "2026-03-01T10:00:00",
    "2026-03-01T10:00:00.Z",
    "2026-03-01T10:00:00Z ",
    " 2026-03-01T10:00:00Z",
    "2026-03-01",
    "+2026-03-01T10:00:00Z",
    "2026-3-01T10:00:00Z",
    "2026-03-01X10:00:00Z",
    "2026-03-01T10:00:00UTC",
    "today",
    "",
];

fn valid_time_strings() -> Vec<&'static str> {
    TIME_STRINGS
        .iter()
        .copied()
        .filter(|s| DateTime::parse_from_rfc3339(s).is_ok())
        .collect()
}

fn doc_scalar(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..10) {
        0..=2 => json!(rng.gen_range(-3i64..=5)),
        3 => [
            json!(0.5),
            json!(2.5),
            json!(-1.25),
            json!(3.0),
            json!(1e-7),
            json!(1e20),
            json!(5e-324),
            json!(0.30000000000000004),
            json!(9007199254740993u64),
            json!(-9007199254740993i64),
            json!(u64::MAX),
            json!(-0.0),
        ]
        .choose(rng)
        .unwrap()
        .clone(),
        4..=5 => json!(["x", "y", "", "X", "x y", "ü", "3", "true", "null"]
            .choose(rng)
            .unwrap()),
        6 => json!(TIME_STRINGS.choose(rng).unwrap()),
        7 => json!(rng.gen_bool(0.5)),
        _ => Value::Null,
    }
}

fn doc_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..10) {
        0..=5 => doc_scalar(rng),
        6..=7 => {
            let n = rng.gen_range(0..4);
            Value::Array(
                (0..n)
                    .map(|_| {
                        if depth > 0 && rng.gen_bool(0.2) {
                            doc_value(rng, depth - 1)
                        } else {
                            doc_scalar(rng)
                        }
                    })
                    .collect(),
            )
        }
        _ if depth > 0 => doc_object(rng, depth - 1),
        _ => doc_scalar(rng),
    }
}

fn doc_object(rng: &mut StdRng, depth: u32) -> Value {
    let mut m = Map::new();
    for key in ["c", "d", "0"] {
        if rng.gen_bool(0.6) {
            m.insert(key.into(), doc_value(rng, depth));
        }
    }
    Value::Object(m)
}

fn doc_metadata(rng: &mut StdRng) -> Map<String, Value> {
    let mut m = Map::new();
    for key in ["a", "n", "s", "arr", "0", "k-1"] {
        if rng.gen_bool(0.7) {
            m.insert(key.into(), doc_value(rng, 2));
        }
    }
    if rng.gen_bool(0.8) {
        let b = match rng.gen_range(0..10) {
            0..=5 => doc_object(rng, 2),
            6..=7 => Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| doc_object(rng, 1))
                    .collect(),
            ),
            _ => doc_scalar(rng),
        };
        m.insert("b".into(), b);
    }
    if rng.gen_bool(0.7) {
        let t = match rng.gen_range(0..4) {
            0..=2 => json!(TIME_STRINGS.choose(rng).unwrap()),
            _ => Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| json!(TIME_STRINGS.choose(rng).unwrap()))
                    .collect(),
            ),
        };
        m.insert("t".into(), t);
    }
    m
}

const TAGS: &[&str] = &["red", "green", "blue", "x", "Red"];
const NAMESPACES: &[&str] = &["ns1", "ns2", "ns3"];

fn random_docs(rng: &mut StdRng, n: usize) -> Vec<Doc> {
    let times = doc_times();
    (0..n)
        .map(|i| {
            let mut d = Doc::new(&format!("doc {i}"), None);
            d.attrs.tenant = ["t1", "t1", "t1", "t2"].choose(rng).unwrap().to_string();
            d.attrs.namespace = NAMESPACES.choose(rng).unwrap().to_string();
            d.attrs.kind = *[
                Kind::Fact,
                Kind::Message,
                Kind::DocumentChunk,
                Kind::Summary,
            ]
            .choose(rng)
            .unwrap();
            d.attrs.tags = TAGS
                .iter()
                .filter(|_| rng.gen_bool(0.3))
                .map(|s| s.to_string())
                .collect();
            d.attrs.metadata = doc_metadata(rng);
            d.attrs.created_at = *times.choose(rng).unwrap();
            d.attrs.updated_at = *times.choose(rng).unwrap();
            d.attrs.expires_at = match rng.gen_range(0..4) {
                0 => Some(*times.choose(rng).unwrap()),
                _ => None,
            };
            d
        })
        .collect()
}

/// Hand-written documents for the edge cases.
fn edge_docs() -> Vec<Doc> {
    let d = |m: Value| Doc::new("edge", None).namespace("ns1").meta(m);
    vec![
        d(json!({})),
        d(json!({"a": null})),
        d(json!({"a": []})),
        d(json!({"a": [null]})),
        d(json!({"a": [[]]})),
        d(json!({"a": {}})),
        d(json!({"a": "x", "n": 3})),
        d(json!({"a": ["x", "y"], "n": [1, 5]})),
        d(json!({"a": [["x"]], "n": [[3]]})),
        d(json!({"a": [{"c": "x"}], "b": [{"c": 1}]})),
        d(json!({"a": {"c": "x"}, "b": {"c": [1, "x", null]}})),
        d(json!({"a": 3.0, "n": 3})),
        d(json!({"a": "3", "n": "3"})),
        d(json!({"a": true, "n": false})),
        d(json!({"a": "true", "n": "false"})),
        d(json!({"a": 9007199254740993u64})),
        d(json!({"a": 0.1, "n": 0.30000000000000004})),
        d(json!({"0": "zero", "b": ["first", "second"]})),
        d(json!({"b": {"0": "zero"}})),
        d(json!({"a": "it's \"quoted\" \\ back", "n": "{\"a\":1}"})),
        d(json!({"t": "2026-03-01T10:00:00Z"})),
        d(json!({"t": ["2026-03-01T10:00:00.0000005Z", "nope"]})),
        d(json!({"t": "2016-12-31T23:59:60.5Z"})),
        d(json!({"t": 1772359200})),
        // One instant (2026-03-01T10:00:00Z) in several spellings.
        d(json!({"t": "2026-03-01T05:00:00\u{2212}05:00"})),
        d(json!({"t": "2026-03-01T15:30:00+05:30"})),
        d(json!({"t": "2026-03-01T04:29:59.999999999-05:30"})),
        d(json!({"t": ["0000-02-29T23:59:59Z", "0000-03-01T00:00:00+00:01"]})),
        d(json!({"t": "2016-12-31T23:59:60Z"})),
        d(json!({"a": "", "n": -0.0})),
        d(json!({"a": "\u{1F600}", "n": 1e300})),
        Doc::new("tagless", None).namespace("ns2"),
        Doc::new("tagged", None).namespace("ns3"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, mut doc)| {
        if i % 5 == 0 {
            doc.attrs.tags = vec!["red".into(), "x".into()];
        }
        doc
    })
    .collect()
}

/// Filter fields, with the kind of operands each takes.
const META_FIELDS: &[&str] = &[
    "metadata.a",
    "metadata.b",
    "metadata.b.c",
    "metadata.b.d",
    "metadata.b.0",
    "metadata.b.c.c",
    "metadata.b.c.0",
    "metadata.n",
    "metadata.s",
    "metadata.t",
    "metadata.arr",
    "metadata.0",
    "metadata.k-1",
    "metadata.a.c",
    "metadata.missing",
    "metadata.a\u{0}",
];

fn eq_operand(rng: &mut StdRng, field: &str) -> Value {
    match field {
        "tags" => json!(["red", "green", "blue", "x", "RED", "nope", "re\u{0}d"]
            .choose(rng)
            .unwrap()),
        "namespace" => json!(["ns1", "ns2", "ns3", "nope", "ns\u{0}1"]
            .choose(rng)
            .unwrap()),
        "kind" => json!(["fact", "message", "document_chunk", "summary"]
            .choose(rng)
            .unwrap()),
        "created_at" | "updated_at" => json!(time_operand(rng)),
        _ => match rng.gen_range(0..12) {
            0 => json!(9007199254740992u64),
            1 => json!(3),
            2 => json!("x\u{0}"),
            3 => json!(0.30000000000000004),
            4 => json!(0.1),
            _ => doc_scalar(rng),
        },
    }
}

/// A valid RFC 3339 operand near the documents' times: exact, a
/// sub-microsecond away, in another offset, or a leap second.
fn time_operand(rng: &mut StdRng) -> String {
    let times = doc_times();
    let t = *times.choose(rng).unwrap();
    match rng.gen_range(0..7) {
        0 => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        1 => (t + Duration::nanoseconds(500)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        2 => (t - Duration::nanoseconds(1)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        3 => t
            .with_timezone(&FixedOffset::east_opt(-(5 * 3600 + 30 * 60)).unwrap())
            .to_rfc3339_opts(SecondsFormat::Micros, false),
        4 => [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2017-01-01T00:59:60.999999999+01:00",
        ]
        .choose(rng)
        .unwrap()
        .to_string(),
        _ => valid_time_strings().choose(rng).unwrap().to_string(),
    }
}

fn cmp_bound(rng: &mut StdRng, field: &str) -> Value {
    if field == "created_at" || field == "updated_at" || rng.gen_bool(0.4) {
        json!(time_operand(rng))
    } else {
        match rng.gen_range(0..6) {
            0 => json!(rng.gen_range(-4i64..=6)),
            1 => json!(rng.gen_range(-4i64..=6) as f64 + 0.5),
            2 => json!(9007199254740992u64),
            3 => json!(1e20),
            4 => json!(0.30000000000000004),
            _ => json!(5e-324),
        }
    }
}

fn leaf(rng: &mut StdRng) -> Value {
    let field = match rng.gen_range(0..10) {
        0 => "tags",
        1 => "kind",
        2 => "namespace",
        3 => "created_at",
        4 => "updated_at",
        _ => META_FIELDS.choose(rng).unwrap(),
    };
    let orderable = field.starts_with("metadata.") || field.ends_with("_at");
    let list = |rng: &mut StdRng| -> Value {
        Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| eq_operand(rng, field))
                .collect(),
        )
    };
    let cond = loop {
        let c = match rng.gen_range(0..10) {
            0 => eq_operand(rng, field),
            1 => json!({"$eq": eq_operand(rng, field)}),
            2 => json!({"$ne": eq_operand(rng, field)}),
            3 => json!({"$in": list(rng)}),
            4 => json!({"$nin": list(rng)}),
            5 => json!({"$exists": rng.gen_bool(0.5)}),
            6 if orderable => {
                let op = ["$gt", "$gte", "$lt", "$lte"].choose(rng).unwrap();
                json!({ *op: cmp_bound(rng, field) })
            }
            7 if orderable => json!({"$gte": cmp_bound(rng, field), "$lt": cmp_bound(rng, field)}),
            8 => json!({"$ne": eq_operand(rng, field), "$exists": true}),
            _ => continue,
        };
        break c;
    };
    json!({ field: cond })
}

fn random_filter(rng: &mut StdRng, depth: u32) -> Value {
    if depth == 0 || rng.gen_bool(0.4) {
        return leaf(rng);
    }
    match rng.gen_range(0..4) {
        0 => {
            json!({"$and": (0..rng.gen_range(1..4)).map(|_| random_filter(rng, depth - 1)).collect::<Vec<_>>()})
        }
        1 => {
            json!({"$or": (0..rng.gen_range(1..4)).map(|_| random_filter(rng, depth - 1)).collect::<Vec<_>>()})
        }
        2 => json!({"$not": random_filter(rng, depth - 1)}),
        _ => {
            // Implicit $and: several fields (and a logical key) in one object.
            let mut m = Map::new();
            for _ in 0..rng.gen_range(2..4) {
                if let Value::Object(o) = leaf(rng) {
                    m.extend(o);
                }
            }
            if rng.gen_bool(0.3) {
                m.insert("$or".into(), json!([random_filter(rng, depth - 1)]));
            }
            Value::Object(m)
        }
    }
}

/// Keys the SQL translation of `f` selects.
async fn sql_keys(pool: &PgPool, f: &Filter) -> BTreeSet<Key> {
    let mut qb = QueryBuilder::<Postgres>::new("SELECT key FROM memories WHERE ");
    push_filter(&mut qb, f);
    let sql = qb.sql().to_string();
    let keys: Vec<i64> = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("filter {f:?} failed in SQL: {e}\n{sql}"));
    keys.into_iter().map(|k| k as Key).collect()
}

fn rust_keys(docs: &[(Key, DocAttrs)], f: &Filter) -> BTreeSet<Key> {
    docs.iter()
        .filter(|(_, a)| f.matches(a))
        .map(|(k, _)| *k)
        .collect()
}

async fn assert_same(pool: &PgPool, docs: &[(Key, DocAttrs)], f: &Filter, what: &str) {
    let sql = sql_keys(pool, f).await;
    let rust = rust_keys(docs, f);
    if sql != rust {
        let only_sql: Vec<_> = sql.difference(&rust).collect();
        let only_rust: Vec<_> = rust.difference(&sql).collect();
        let show = |ks: &[&Key]| {
            ks.iter()
                .take(3)
                .map(|k| {
                    let a = &docs.iter().find(|(key, _)| key == *k).unwrap().1;
                    format!(
                        "key {k}: metadata {} tags {:?} kind {} ns {} created {} updated {}",
                        Value::Object(a.metadata.clone()),
                        a.tags,
                        a.kind.as_str(),
                        a.namespace,
                        a.created_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                        a.updated_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        panic!(
            "{what}: SQL and Filter::matches disagree on {}\n\
             only SQL ({}):\n  {}\nonly Rust ({}):\n  {}",
            f.to_json(),
            only_sql.len(),
            show(&only_sql),
            only_rust.len(),
            show(&only_rust),
        );
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filters_select_what_the_evaluator_matches() {
    let seed = env_u64("ENGRAM_FILTER_SEED", 0x5eed_f11e);
    let cases = env_u64("ENGRAM_FILTER_CASES", 3000);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = TestDb::new("filters").await;
    let mut docs = random_docs(&mut rng, 250);
    docs.extend(edge_docs());
    let keys = db.insert(&docs).await;
    let stored = db.read_attrs().await;
    assert_eq!(stored.len(), docs.len());

    // The store reads back what it wrote (so Rust on the read-back
    // attributes is the reference for what list and search see).
    for ((key, read), (k, doc)) in stored.iter().zip(keys.iter().zip(&docs)) {
        assert_eq!(key, k);
        assert_eq!(
            read, &doc.attrs,
            "attributes of key {key} changed through PostgreSQL"
        );
    }

    let mut checked = 0;
    let mut nonempty = 0;
    let mut not_all = 0;
    let mut attempts = 0;
    while checked < cases {
        attempts += 1;
        let v = random_filter(&mut rng, 3);
        let Ok(f) = Filter::parse(&v) else { continue };
        let rust = rust_keys(&stored, &f);
        nonempty += usize::from(!rust.is_empty());
        not_all += usize::from(rust.len() < stored.len());
        assert_same(
            &db.pool,
            &stored,
            &f,
            &format!("seed {seed:#x}, filter {v}"),
        )
        .await;
        checked += 1;
    }
    println!(
        "seed {seed:#x}: {checked} random filters ({attempts} generated) agree; \
         {nonempty} select some rows, {not_all} not all"
    );
    // The generator must produce selective and non-trivial filters.
    assert!(
        nonempty as u64 > cases / 3,
        "too few filters select anything"
    );
    assert!(
        not_all as u64 > cases / 3,
        "too few filters exclude anything"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_filters_select_what_the_evaluator_matches() {
    let mut db = TestDb::new("filter_edges").await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut docs = edge_docs();
    docs.extend(random_docs(&mut rng, 60));
    db.insert(&docs).await;
    let stored = db.read_attrs().await;

    let filters = vec![
        // Missing fields: only $ne, $nin and $exists: false match.
        json!({"metadata.missing": "x"}),
        json!({"metadata.missing": {"$ne": "x"}}),
        json!({"metadata.missing": {"$nin": ["x"]}}),
        json!({"metadata.missing": {"$nin": []}}),
        json!({"metadata.missing": {"$in": []}}),
        json!({"metadata.missing": {"$exists": false}}),
        json!({"metadata.missing": {"$lt": 100}}),
        json!({"$not": {"metadata.missing": {"$lt": 100}}}),
        // null, empty arrays and empty objects.
        json!({"metadata.a": null}),
        json!({"metadata.a": {"$ne": null}}),
        json!({"metadata.a": {"$exists": true}}),
        json!({"metadata.a": {"$exists": false}}),
        json!({"metadata.a.c": "x"}),
        json!({"metadata.a.c": {"$exists": true}}),
        // Arrays: any element; nested arrays never match scalars.
        json!({"metadata.a": "x"}),
        json!({"metadata.a": {"$ne": "x"}}),
        json!({"metadata.a": {"$in": ["y", 3]}}),
        json!({"metadata.a": {"$nin": ["y", 3]}}),
        json!({"metadata.n": {"$gt": 4}}),
        json!({"metadata.n": {"$lte": 1}}),
        json!({"metadata.n": 3}),
        json!({"metadata.b.c": 1}),
        json!({"metadata.b.c": null}),
        json!({"metadata.b.c": "x"}),
        // Paths never descend into arrays (metadata.b.0 is not b[0]).
        json!({"metadata.b.0": "first"}),
        json!({"metadata.b.0": "zero"}),
        json!({"metadata.0": "zero"}),
        // Types are strict: "3" is not 3, "true" is not true.
        json!({"metadata.a": "3"}),
        json!({"metadata.a": 3}),
        json!({"metadata.a": 3.0}),
        json!({"metadata.a": true}),
        json!({"metadata.a": "true"}),
        json!({"metadata.n": {"$gte": "2026-01-01T00:00:00Z"}}),
        json!({"metadata.a": {"$gt": 2}}),
        // Numbers compare as f64.
        json!({"metadata.a": 9007199254740992u64}),
        json!({"metadata.a": 9007199254740993u64}),
        json!({"metadata.n": 0.30000000000000004}),
        json!({"metadata.n": {"$gt": 0.3}}),
        json!({"metadata.a": {"$lt": 0.1}}),
        json!({"metadata.a": {"$lte": 0.1}}),
        json!({"metadata.n": 0}),
        json!({"metadata.n": {"$gte": 1e300}}),
        // Strings: exact bytes, quotes, backslashes, JSON-looking text, emoji.
        json!({"metadata.a": "it's \"quoted\" \\ back"}),
        json!({"metadata.n": "{\"a\":1}"}),
        json!({"metadata.a": "\u{1F600}"}),
        json!({"metadata.a": ""}),
        json!({"metadata.a": "x\u{0}"}),
        json!({"metadata.a": {"$ne": "x\u{0}"}}),
        json!({"metadata.a\u{0}": {"$exists": false}}),
        // Times in metadata: RFC 3339 strings only, nanoseconds, leap seconds.
        json!({"metadata.t": {"$gte": "2026-03-01T10:00:00Z"}}),
        json!({"metadata.t": {"$gt": "2026-03-01T10:00:00Z"}}),
        json!({"metadata.t": {"$lt": "2026-03-01T10:00:00.000000501Z"}}),
        json!({"metadata.t": {"$gt": "2016-12-31T23:59:60Z"}}),
        json!({"metadata.t": {"$lt": "2017-01-01T00:00:00Z"}}),
        json!({"metadata.t": {"$gt": 0}}),
        json!({"metadata.t": "2026-03-01T10:00:00Z"}),
        json!({"metadata.t": {"$lte": "2026-03-01T10:00:00Z"}}),
        json!({"metadata.t": {"$gt": "2026-03-01T09:59:59.999999999Z"}}),
        json!({"metadata.t": {"$lt": "2026-03-01T10:00:00.000000001Z"}}),
        json!({"metadata.t": {"$gte": "2026-03-01T04:29:59.999999999-05:30", "$lt": "2026-03-01T10:00:00Z"}}),
        json!({"metadata.t": {"$lt": "0000-03-01T00:00:00Z"}}),
        json!({"metadata.t": {"$gte": "0000-02-29T23:59:00Z", "$lte": "0000-02-29T23:59:59Z"}}),
        json!({"metadata.t": {"$gt": "2016-12-31T23:59:59.999999999Z", "$lt": "2017-01-01T00:00:00Z"}}),
        json!({"metadata.t": {"$gte": "2016-12-31T23:59:60Z"}}),
        json!({"metadata.t": {"$lte": "2016-12-31T23:59:60Z"}}),
        json!({"metadata.t": {"$lt": "2016-12-31T23:59:60.5Z"}}),
        json!({"metadata.t": "2026-03-01T11:00:00+01:00"}),
        // Tags.
        json!({"tags": "red"}),
        json!({"tags": "RED"}),
        json!({"tags": {"$ne": "red"}}),
        json!({"tags": {"$in": []}}),
        json!({"tags": {"$nin": []}}),
        json!({"tags": {"$in": ["x", "re\u{0}d"]}}),
        json!({"tags": {"$exists": true}}),
        json!({"tags": {"$exists": false}}),
        // Kind, namespace, times.
        json!({"kind": "fact"}),
        json!({"kind": {"$nin": ["fact", "summary"]}}),
        json!({"namespace": {"$in": ["ns2", "ns\u{0}"]}}),
        json!({"namespace": {"$exists": false}}),
        json!({"created_at": "2026-03-01T10:00:00Z"}),
        json!({"created_at": "2026-03-01T10:00:00.0000001Z"}),
        json!({"created_at": {"$gt": "2026-03-01T09:59:59.9999995Z"}}),
        json!({"created_at": {"$gte": "2026-03-01T10:00:00.0000005Z"}}),
        json!({"created_at": {"$lte": "2026-03-01T09:59:59.9999995Z"}}),
        json!({"updated_at": {"$lt": "2026-03-01T11:00:00+01:00"}}),
        json!({"created_at": {"$in": ["2026-03-01T10:00:00Z", "2026-03-01T10:00:00.5Z"]}}),
        json!({"created_at": {"$gt": "0000-01-01T00:00:00Z"}}),
        json!({"created_at": {"$lt": "9999-12-31T23:59:59.999999999Z"}}),
        // Logic.
        json!({"$or": [{"metadata.a": "x"}, {"$not": {"tags": "red"}}]}),
        json!({"$and": [{"metadata.a": {"$exists": true}}, {"$not": {"metadata.a": null}}]}),
        json!({"metadata.a": {"$ne": "x", "$exists": true}, "kind": "fact"}),
    ];
    for v in &filters {
        let f = Filter::parse(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_same(&db.pool, &stored, &f, &format!("filter {v}")).await;
    }

    // Hand-built filters that Filter::parse cannot produce.
    let early: DateTime<Utc> = DateTime::from_timestamp(-300_000_000_000, 0).unwrap();
    let meta = |k: &str| Field::Metadata(vec![k.to_string()]);
    let built = vec![
        Filter::And(vec![]),
        Filter::Or(vec![]),
        Filter::Not(Box::new(Filter::Or(vec![]))),
        Filter::Cond(meta("n"), Op::Cmp(CmpOp::Gt, Bound::Number(f64::NAN))),
        Filter::Cond(meta("n"), Op::Cmp(CmpOp::Lt, Bound::Number(f64::INFINITY))),
        Filter::Cond(
            meta("n"),
            Op::Cmp(CmpOp::Gt, Bound::Number(f64::NEG_INFINITY)),
        ),
        Filter::Cond(Field::Tags, Op::Cmp(CmpOp::Gt, Bound::Number(1.0))),
        Filter::Cond(Field::Kind, Op::Eq(json!(1))),
        Filter::Cond(Field::Namespace, Op::Ne(json!(null))),
        Filter::Cond(Field::CreatedAt, Op::Eq(json!("not a time"))),
        Filter::Cond(Field::CreatedAt, Op::Cmp(CmpOp::Gt, Bound::Number(0.0))),
        Filter::Cond(Field::CreatedAt, Op::Cmp(CmpOp::Gt, Bound::Time(early))),
        Filter::Cond(Field::UpdatedAt, Op::Cmp(CmpOp::Lte, Bound::Time(early))),
        Filter::Cond(meta("t"), Op::Cmp(CmpOp::Gt, Bound::Time(early))),
        Filter::Cond(Field::Metadata(vec![]), Op::Exists(true)),
    ];
    for f in &built {
        if matches!(f, Filter::Cond(Field::Metadata(p), _) if p.is_empty()) {
            // The evaluator indexes path[0]: an empty path is not a filter.
            continue;
        }
        assert_same(&db.pool, &stored, f, &format!("built filter {f:?}")).await;
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_select_what_scope_matches_admits() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut db = TestDb::new("scopes").await;
    let docs = random_docs(&mut rng, 200);
    db.insert(&docs).await;
    let stored = db.read_attrs().await;
    let attrs = AttrTable::new();
    let times = doc_times();
    for i in 0..300 {
        let tenant = ["t1", "t2", "t3", "t\u{0}"]
            .choose(&mut rng)
            .unwrap()
            .to_string();
        let namespaces: Vec<String> = match rng.gen_range(0..4) {
            0 => vec![],
            1 => vec!["ns\u{0}".into()],
            _ => NAMESPACES
                .iter()
                .filter(|_| rng.gen_bool(0.5))
                .map(|s| s.to_string())
                .collect(),
        };
        let now =
            *times.choose(&mut rng).unwrap() + Duration::nanoseconds(rng.gen_range(-1000..1000));
        let filter = if rng.gen_bool(0.6) {
            Filter::parse(&random_filter(&mut rng, 2)).ok()
        } else {
            None
        };
        let scope = Scope::new(&tenant, &namespaces, filter.as_ref(), now, &attrs);
        let expected: BTreeSet<Key> = stored
            .iter()
            .filter(|(_, a)| scope.matches(a))
            .map(|(k, _)| *k)
            .collect();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT key FROM memories WHERE ");
        push_scope(&mut qb, &scope);
        let got: BTreeSet<Key> = qb
            .build_query_scalar::<i64>()
            .persistent(false)
            .fetch_all(&db.pool)
            .await
            .expect("scope query")
            .into_iter()
            .map(|k| k as Key)
            .collect();
        assert_eq!(
            got,
            expected,
            "scope #{i}: tenant {tenant:?} namespaces {namespaces:?} now {now} filter {:?}",
            filter.map(|f| f.to_json())
        );
    }
    db.finish().await;
}

/// A string shaped like an RFC 3339 time, often valid, often subtly not.
fn fuzzed_time(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, common: u32, odd: &[u32]| -> u32 {
        if rng.gen_bool(0.85) {
            common
        } else {
            *odd.choose(rng).unwrap()
        }
    };
    let year = *[0u32, 1, 1969, 1970, 2000, 2016, 2024, 2026, 9999]
        .choose(rng)
        .unwrap();
    let c = rng.gen_range(1..=12);
    let month = pick(rng, c, &[0, 2, 13, 4]);
    let c = rng.gen_range(1..=28);
    let day = pick(rng, c, &[0, 29, 30, 31, 32]);
    let c = rng.gen_range(0..=23);
    let hour = pick(rng, c, &[23, 24, 0]);
    let c = rng.gen_range(0..=59);
    let minute = pick(rng, c, &[59, 60, 0]);
    let c = rng.gen_range(0..=59);
    let second = pick(rng, c, &[59, 60, 61]);
    let sep = if rng.gen_bool(0.9) {
        "T"
    } else {
        *["t", " ", "X", "_"].choose(rng).unwrap()
    };
    let mut s = format!("{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}");
    if rng.gen_bool(0.5) {
        s.push('.');
        for _ in 0..rng.gen_range(0..13) {
            s.push(char::from(b'0' + rng.gen_range(0..10u8)));
        }
    }
    let c = rng.gen_range(0..=14);
    let oh = pick(rng, c, &[23, 24, 99]);
    let c = *[0, 30, 45].choose(rng).unwrap();
    let om = pick(rng, c, &[59, 60]);
    let sign = *["+", "-", "\u{2212}"].choose(rng).unwrap();
    match rng.gen_range(0..12) {
        0..=3 => s.push('Z'),
        4 => s.push('z'),
        5..=9 => s.push_str(&format!("{sign}{oh:02}:{om:02}")),
        10 => s.push_str(&format!("{sign}{oh:02}{om:02}")),
        _ => {}
    }
    if rng.gen_bool(0.03) {
        s.push(' ');
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_times_parse_like_chrono() {
    let mut rng = StdRng::seed_from_u64(env_u64("ENGRAM_FILTER_SEED", 3339));
    let mut db = TestDb::new("rfc3339").await;
    let strings: Vec<String> = (0..1500).map(|_| fuzzed_time(&mut rng)).collect();
    let valid = strings
        .iter()
        .filter(|s| DateTime::parse_from_rfc3339(s).is_ok())
        .count();
    assert!(
        valid > 300 && valid < 1400,
        "{valid} of 1500 parse: the fuzzer is off"
    );
    let docs: Vec<Doc> = strings
        .iter()
        .map(|s| Doc::new("t", None).meta(json!({ "t": s })))
        .collect();
    db.insert(&docs).await;
    let stored = db.read_attrs().await;
    // Bounds at the documents' own instants (so equality is exercised), in
    // their original spelling and normalised.
    let instants: Vec<&String> = strings
        .iter()
        .filter(|s| DateTime::parse_from_rfc3339(s).is_ok())
        .collect();
    for _ in 0..30 {
        let s = instants.choose(&mut rng).unwrap();
        let t = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let spellings = [
            s.to_string(),
            t.to_rfc3339_opts(SecondsFormat::Nanos, true),
            (t + Duration::nanoseconds(1)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        ];
        for b in spellings {
            for op in ["$gt", "$gte", "$lt", "$lte"] {
                let v = json!({"metadata.t": { op: b }});
                let f = Filter::parse(&v).unwrap();
                assert_same(&db.pool, &stored, &f, &format!("filter {v}")).await;
            }
        }
    }
    println!(
        "{valid} of {} fuzzed strings are RFC 3339 for chrono",
        strings.len()
    );
    db.finish().await;
}
