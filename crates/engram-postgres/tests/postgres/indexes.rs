//! PgVectorIndex and PgKeywordIndex against a real PostgreSQL + pgvector.

use crate::common::{Doc, TestDb};
use chrono::{Duration, Utc};
use engram_core::filter::Filter;
use engram_core::{AttrTable, DerivedIndex, Key, KeywordIndex, Scope, VectorIndex};
use engram_postgres::index::{PgKeywordIndex, PgKeywordOptions, PgVectorIndex, PgVectorOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashSet;

const DIMS: usize = 384;

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn random_unit(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    unit((0..dims).map(|_| rng.gen_range(-1.0..1.0)).collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn scope<'a>(
    tenant: &'a str,
    namespaces: &'a [String],
    filter: Option<&'a Filter>,
    attrs: &'a AttrTable,
) -> Scope<'a> {
    Scope::new(tenant, namespaces, filter, Utc::now(), attrs)
}

fn assert_sorted_scores(hits: &[(Key, f32)]) {
    for (_, s) in hits {
        assert!(
            (-1.0..=1.0).contains(s),
            "score {s} is not a cosine similarity"
        );
    }
    for w in hits.windows(2) {
        assert!(w[0].1 >= w[1].1, "hits not sorted by score: {hits:?}");
    }
}

fn opts() -> PgVectorOptions {
    PgVectorOptions {
        len_refresh: std::time::Duration::ZERO,
        ..PgVectorOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_search_recall_filters_and_visibility() {
    let mut db = TestDb::new("vectors").await;
    let mut rng = StdRng::seed_from_u64(42);
    // Opened on the empty table: the HNSW index is built, then maintained
    // by the inserts (as in production).
    let index = PgVectorIndex::open(db.pool.clone(), DIMS, opts())
        .await
        .expect("open");
    assert_eq!(index.index_name(), "memories_embedding_hnsw_384");
    assert_eq!(index.len(), 0);

    let n = 4000;
    // Uniformly random unit vectors: the hard case for HNSW (no clusters,
    // every point nearly orthogonal to every other).
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| random_unit(&mut rng, DIMS)).collect();
    let docs: Vec<Doc> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // 2% are "rare"; namespaces alternate.
            Doc::new(&format!("doc {i}"), Some(v.clone()))
                .namespace(if i % 2 == 0 { "even" } else { "odd" })
                .meta(json!({"i": i, "rare": i % 50 == 7}))
        })
        .collect();
    let keys = db.insert(&docs).await;
    let by_key: std::collections::HashMap<Key, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    sqlx::query("ANALYZE memories")
        .execute(&db.pool)
        .await
        .unwrap();

    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);

    // The ANN search walks the HNSW index; the exact one never does.
    let q = random_unit(&mut rng, DIMS);
    let plan = index.explain(&q, 10, &s, false).await.unwrap();
    assert!(
        plan.contains("memories_embedding_hnsw_384"),
        "ANN search does not use the HNSW index:\n{plan}"
    );
    let plan = index.explain(&q, 10, &s, true).await.unwrap();
    assert!(
        !plan.contains("memories_embedding_hnsw_384"),
        "exact search uses the HNSW index:\n{plan}"
    );

    // Recall of the ANN search against the exact one.
    let k = 10;
    let queries = 50;
    let mut found = 0;
    for i in 0..queries {
        let q = if i % 2 == 0 {
            random_unit(&mut rng, DIMS)
        } else {
            // Near an existing vector, like a real query.
            let base = &vectors[rng.gen_range(0..n)];
            unit(
                base.iter()
                    .map(|x| x + rng.gen_range(-0.05..0.05))
                    .collect(),
            )
        };
        let ann = index.search(&q, k, &s).await.unwrap();
        let exact = index.search_exact(&q, k, &s).await.unwrap();
        assert_eq!(ann.len(), k);
        assert_eq!(exact.len(), k);
        assert_sorted_scores(&ann);
        assert_sorted_scores(&exact);
        for (key, score) in &exact {
            let expected = cosine(&q, &vectors[by_key[key]]);
            assert!(
                (score - expected).abs() < 1e-4,
                "score {score} is not the cosine similarity {expected}"
            );
        }
        let truth: HashSet<Key> = exact.iter().map(|h| h.0).collect();
        found += ann.iter().filter(|h| truth.contains(&h.0)).count();
    }
    let recall = found as f64 / (queries * k) as f64;
    println!("recall@{k} over {queries} queries and {n} vectors: {recall:.3}");
    assert!(recall >= 0.95, "recall {recall} below 0.95");

    // A selective filter (2% of rows) still yields k hits, all matching;
    // more than exist yields all of them.
    let rare = Filter::parse(&json!({"metadata.rare": true})).unwrap();
    let rare_count = (0..n).filter(|i| i % 50 == 7).count();
    for k in [10, 50, rare_count + 20] {
        let s = scope("t1", &all, Some(&rare), &attrs);
        let hits = index.search(&q, k, &s).await.unwrap();
        assert_eq!(hits.len(), k.min(rare_count), "k = {k}");
        assert_sorted_scores(&hits);
        for (key, _) in &hits {
            assert_eq!(by_key[key] % 50, 7, "hit {key} does not match the filter");
        }
        let exact = index.search_exact(&q, k, &s).await.unwrap();
        assert_eq!(exact.len(), k.min(rare_count));
    }
    // Very selective (3 rows) with namespaces: the short ANN result is
    // completed exactly.
    let three = Filter::parse(&json!({"metadata.i": {"$in": [3, 5, 7, 8]}})).unwrap();
    let odd = vec!["odd".to_string()];
    let s3 = scope("t1", &odd, Some(&three), &attrs);
    let hits = index.search(&q, 10, &s3).await.unwrap();
    let mut got: Vec<usize> = hits.iter().map(|h| by_key[&h.0]).collect();
    got.sort();
    assert_eq!(got, vec![3, 5, 7]);

    // Rows that must never come back, even as the nearest: other tenants,
    // deleted, pending, failed, expired ones, and vectors of other dimensions.
    let nearest = vectors[0].clone();
    let hidden = vec![
        Doc::new("other tenant", Some(nearest.clone())).tenant("t2"),
        Doc::new("deleted", Some(nearest.clone())).deleted(),
        Doc::new("pending", Some(nearest.clone())).state("pending"),
        Doc::new("failed", Some(nearest.clone())).state("failed"),
        Doc::new("expired", Some(nearest.clone())).expires(Utc::now() - Duration::seconds(1)),
        Doc::new("no vector", None),
        Doc::new("other model", Some(vec![0.5; 8])),
    ];
    let hidden_keys: HashSet<Key> = db.insert(&hidden).await.into_iter().collect();
    let later =
        Doc::new("expires later", Some(nearest.clone())).expires(Utc::now() + Duration::hours(1));
    let later_key = db.insert(&[later]).await[0];
    let s = scope("t1", &all, None, &attrs);
    for exact in [false, true] {
        let hits = if exact {
            index.search_exact(&nearest, 20, &s).await.unwrap()
        } else {
            index.search(&nearest, 20, &s).await.unwrap()
        };
        assert_eq!(hits.len(), 20);
        assert!(hits.iter().all(|h| !hidden_keys.contains(&h.0)), "{hits:?}");
        let top: HashSet<Key> = hits[..2].iter().map(|h| h.0).collect();
        assert!(
            top.contains(&later_key) && top.contains(&keys[0]),
            "{hits:?}"
        );
        assert!(hits[0].1 > 0.9999, "identical vector scores {}", hits[0].1);
    }
    // Tenant isolation the other way: t2 sees only its own row.
    let s2 = scope("t2", &all, None, &attrs);
    let hits = index.search(&nearest, 10, &s2).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hidden_keys.contains(&hits[0].0));

    // k = 0, wrong dimensions.
    assert!(index.search(&q, 0, &s).await.unwrap().is_empty());
    assert!(index.search(&q[..10], 5, &s).await.is_err());

    // len counts searchable rows of this dimension (refreshed on demand).
    assert_eq!(index.refresh_len().await.unwrap(), n + 1 + 1 + 1);
    assert_eq!(index.len(), n + 3);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_index_bookkeeping() {
    let mut db = TestDb::new("vector_seq").await;
    let mut rng = StdRng::seed_from_u64(1);
    let docs: Vec<Doc> = (0..50)
        .map(|i| Doc::new(&format!("d{i}"), Some(random_unit(&mut rng, 16))))
        .collect();
    db.insert(&docs).await;
    // Opened on a table with rows (the index is built over them), twice at
    // once: the build is serialised and idempotent.
    let (a, b) = tokio::join!(
        PgVectorIndex::open(db.pool.clone(), 16, opts()),
        PgVectorIndex::open(db.pool.clone(), 16, opts()),
    );
    let (index, _other) = (a.unwrap(), b.unwrap());
    // The position starts at the store's feed head: the engine follows the
    // feed from there instead of replaying history.
    assert_eq!(index.persisted_seq(), 50);
    assert_eq!(index.len(), 50);
    index.apply(&[]).await.unwrap();
    index.persist(60).await.unwrap();
    assert_eq!(index.persisted_seq(), 60);
    index.persist(55).await.unwrap();
    assert_eq!(index.persisted_seq(), 60, "the position never goes back");
    // clear rebuilds the index and resets the position (the engine replays).
    index.clear().await.unwrap();
    assert_eq!(index.persisted_seq(), 0);
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);
    let hits = index
        .search(&random_unit(&mut rng, 16), 5, &s)
        .await
        .unwrap();
    assert_eq!(hits.len(), 5);
    // A second dimension gets its own index alongside.
    let wide = PgVectorIndex::open(db.pool.clone(), 24, opts())
        .await
        .unwrap();
    assert_eq!(wide.len(), 0);
    assert!(wide
        .search(&random_unit(&mut rng, 24), 5, &s)
        .await
        .unwrap()
        .is_empty());
    // Bad options are refused.
    let bad = PgVectorOptions { m: 1, ..opts() };
    assert!(PgVectorIndex::open(db.pool.clone(), 16, bad).await.is_err());
    assert!(PgVectorIndex::open(db.pool.clone(), 0, opts())
        .await
        .is_err());
    assert!(PgVectorIndex::open(db.pool.clone(), 4096, opts())
        .await
        .is_err());
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn len_is_refreshed_in_the_background() {
    let mut db = TestDb::new("vector_len").await;
    let o = PgVectorOptions {
        len_refresh: std::time::Duration::from_millis(100),
        ..PgVectorOptions::default()
    };
    let index = PgVectorIndex::open(db.pool.clone(), 4, o).await.unwrap();
    assert_eq!(index.len(), 0);
    db.insert(&[Doc::new("x", Some(vec![1.0, 0.0, 0.0, 0.0]))])
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while index.len() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(index.len(), 1);
    drop(index);
    db.finish().await;
}

const TEXTS: &[&str] = &[
    "Billing dispute: the customer was charged twice for the same invoice",
    "Quarterly billing report for enterprise customers",
    "The quick brown fox jumps over the lazy dog",
    "A fox got into the henhouse last night",
    "Dogs and cats living together",
    "Meeting notes about the product roadmap",
    "Invoice numbering changed in the new billing system",
    "Customer asked about refunds for a disputed invoice",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_search_ranks_ors_and_scopes() {
    let mut db = TestDb::new("keywords").await;
    let index = PgKeywordIndex::open(db.pool.clone()).await.unwrap();
    let mut docs: Vec<Doc> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Doc::new(t, Some(vec![1.0, 0.0]))
                .namespace(if i < 4 { "a" } else { "b" })
                .meta(json!({"i": i}))
        })
        .collect();
    // Invisible copies of the best match.
    docs.push(Doc::new(TEXTS[0], Some(vec![1.0, 0.0])).tenant("t2"));
    docs.push(Doc::new(TEXTS[0], Some(vec![1.0, 0.0])).deleted());
    docs.push(Doc::new(TEXTS[0], None).state("pending"));
    docs.push(Doc::new(TEXTS[0], Some(vec![1.0, 0.0])).expires(Utc::now() - Duration::seconds(1)));
    let keys = db.insert(&docs).await;
    let key = |i: usize| keys[i];
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);

    // The document with both words ranks first; one with only one word is
    // still found (OR semantics); stemming applies (disputed ~ dispute).
    let hits = index.search("billing dispute", 10, &s).await.unwrap();
    assert_eq!(hits[0].0, key(0), "{hits:?}");
    let found: HashSet<Key> = hits.iter().map(|h| h.0).collect();
    for i in [1, 6, 7] {
        assert!(found.contains(&key(i)), "doc {i} missing from {hits:?}");
    }
    assert!(!found.contains(&key(2)));
    assert_eq!(hits.len(), 4, "only visible rows: {hits:?}");
    for w in hits.windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
    assert!(hits.iter().all(|h| h.1 > 0.0));

    // k limits; ranking by how well the words match.
    let hits = index.search("billing dispute", 2, &s).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].0, key(0));
    let hits = index.search("jumping foxes", 10, &s).await.unwrap();
    assert_eq!(hits[0].0, key(2));
    assert_eq!(hits.len(), 2);

    // Scope: namespaces, filter, tenant.
    let b = vec!["b".to_string()];
    let hits = index
        .search("billing dispute", 10, &scope("t1", &b, None, &attrs))
        .await
        .unwrap();
    let found: HashSet<Key> = hits.iter().map(|h| h.0).collect();
    assert_eq!(found, HashSet::from([key(6), key(7)]));
    let f = Filter::parse(&json!({"metadata.i": {"$gte": 1, "$lt": 7}})).unwrap();
    let hits = index
        .search("billing dispute", 10, &scope("t1", &all, Some(&f), &attrs))
        .await
        .unwrap();
    let found: HashSet<Key> = hits.iter().map(|h| h.0).collect();
    assert_eq!(found, HashSet::from([key(1), key(6)]));
    let hits = index
        .search("billing dispute", 10, &scope("t2", &all, None, &attrs))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, key(8));
    assert!(index
        .search("billing", 10, &scope("nobody", &all, None, &attrs))
        .await
        .unwrap()
        .is_empty());

    // Nothing to search for: no hits, no error.
    for q in ["", "   ", "the and of", "!!! ???", "a an the"] {
        assert!(index.search(q, 10, &s).await.unwrap().is_empty(), "{q:?}");
    }
    assert!(index.search("billing", 0, &s).await.unwrap().is_empty());

    // Hostile input is only ever text.
    for q in [
        "'; DROP TABLE memories; --",
        "fox' | 'dog",
        "fox & !dog",
        "fox:* | (dog",
        "\\' \\\\ ''",
        "fox\u{0}dog",
        "$1 $$ $q$ ::tsquery",
        "a:b c's d\\e 'f' \"g\" http://example.com/x?y=1 user@example.com",
    ] {
        let hits = index.search(q, 10, &s).await;
        assert!(hits.is_ok(), "{q:?}: {hits:?}");
    }
    let hits = index.search("fox' | 'dog", 10, &s).await.unwrap();
    let found: HashSet<Key> = hits.iter().map(|h| h.0).collect();
    assert!(found.contains(&key(2)) && found.contains(&key(3)) && found.contains(&key(4)));
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM memories")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(still as usize, docs.len());

    // Bookkeeping.
    assert_eq!(index.refresh_len().await.unwrap(), TEXTS.len() + 2);
    assert_eq!(index.persisted_seq(), 0, "opened on an empty feed");
    index.apply(&[]).await.unwrap();
    index.persist(12).await.unwrap();
    assert_eq!(index.persisted_seq(), 12);
    index.clear().await.unwrap();
    assert_eq!(index.persisted_seq(), 0);
    assert_eq!(index.search("fox", 10, &s).await.unwrap().len(), 2);
    let plan = index.explain("billing dispute", 10, &s).await.unwrap();
    println!("keyword plan:\n{plan}");
    db.finish().await;
}

/// A keyword index with this common-terms cutoff and no background refresh.
/// A rare word counts for more than a common one (inverse document
/// frequency): cover density alone would rank a row with one common word of
/// the query like a row with one rare word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_ranking_weighs_rare_words_above_common_ones() {
    let mut db = TestDb::new("keyword_idf").await;
    let mut docs: Vec<Doc> = (0..12)
        .map(|i| {
            Doc::new(
                &format!("the weather report number {i}"),
                Some(vec![1.0, 0.0]),
            )
        })
        .collect();
    docs.push(Doc::new("a zeppelin report", Some(vec![1.0, 0.0])));
    docs.push(Doc::new("nothing to see", Some(vec![1.0, 0.0])));
    let keys = db.insert(&docs).await;
    let index = keyword_index(&db, 0.0).await.unwrap();
    assert_eq!(index.refresh_len().await.unwrap(), docs.len());
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);
    let hits = index.search("weather zeppelin", 20, &s).await.unwrap();
    assert_eq!(hits.len(), 13, "{hits:?}");
    assert_eq!(hits[0].0, keys[12], "the rare word first: {hits:?}");
    assert!(hits[0].1 > 2.0 * hits[1].1, "{hits:?}");
    db.finish().await;
}

/// A keyword index with no match budget and the given common-terms cutoff.
async fn keyword_index(db: &TestDb, common_cutoff: f64) -> engram_core::Result<PgKeywordIndex> {
    budgeted_keyword_index(db, 0, common_cutoff).await
}

async fn budgeted_keyword_index(
    db: &TestDb,
    match_budget: u64,
    common_cutoff: f64,
) -> engram_core::Result<PgKeywordIndex> {
    let opts = PgKeywordOptions {
        len_refresh: std::time::Duration::ZERO,
        match_budget,
        common_cutoff,
    };
    PgKeywordIndex::open_with(db.pool.clone(), opts).await
}

/// 180 rows in four groups of texts, each row with a unique rare word
/// (texts are unique per namespace); returns each row's group (0-3).
/// Document frequencies: statu 175, updat 125, report 50, kubernet 10,
/// cluster 5.
async fn status_rows(db: &mut TestDb) -> std::collections::HashMap<Key, usize> {
    let groups: [(&str, usize); 4] = [
        ("status update", 120),
        ("status report", 50),
        ("status update about kubernetes", 5),
        ("kubernetes cluster", 5),
    ];
    let mut docs = Vec::new();
    let mut group_of = Vec::new();
    for (g, (text, n)) in groups.iter().enumerate() {
        for i in 0..*n {
            docs.push(Doc::new(
                &format!("{text} ref{g}x{i}"),
                Some(vec![1.0, 0.0]),
            ));
            group_of.push(g);
        }
    }
    let keys = db.insert(&docs).await;
    keys.into_iter().zip(group_of).collect()
}

/// Common terms: with PostgreSQL's statistics read, a word in most rows does
/// not match on its own; a query of only common words matches rows
/// with all of them; a cutoff of 0 keeps OR semantics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_common_terms_rank_but_do_not_match_alone() {
    let mut db = TestDb::new("common_terms").await;
    let group = status_rows(&mut db).await;
    let count = |hits: &[(Key, f32)], g: usize| hits.iter().filter(|h| group[&h.0] == g).count();
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);
    let relative = keyword_index(&db, 0.2).await.unwrap();

    // No statistics yet: nothing is common, OR semantics.
    assert!(relative.common_lexemes().is_empty());
    assert_eq!(
        relative
            .search("status update", 500, &s)
            .await
            .unwrap()
            .len(),
        175
    );

    sqlx::query("ANALYZE memories")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(relative.refresh_stats().await.unwrap() > 0);
    let common: HashSet<String> = relative.common_lexemes().into_iter().collect();
    // status 175/180, updat 125/180, report 50/180 are common; kubernet 10/180 is not.
    for l in ["status", "updat", "report"] {
        assert!(common.contains(l), "{l} not common: {common:?}");
    }
    assert!(!common.contains("kubernet"), "{common:?}");

    // A rare word: only rows with it match; the common words lift the rows
    // that also have them.
    let hits = relative
        .search("status update kubernetes", 500, &s)
        .await
        .unwrap();
    // (Which of them rank first is BM25's call: the rare word's weight,
    // divided by the row's length, outweighs the common ones' here.)
    assert_eq!(hits.len(), 10, "{hits:?}");
    assert_eq!((count(&hits, 2), count(&hits, 3)), (5, 5), "{hits:?}");
    // Only common words: rows with all of them.
    let hits = relative.search("status update", 500, &s).await.unwrap();
    assert_eq!(
        (hits.len(), count(&hits, 0), count(&hits, 2)),
        (125, 120, 5)
    );

    // An absolute cutoff (rows): 100 makes status and updat common, not report.
    let absolute = keyword_index(&db, 100.0).await.unwrap();
    let common: HashSet<String> = absolute.common_lexemes().into_iter().collect();
    assert!(
        common.contains("status") && common.contains("updat"),
        "{common:?}"
    );
    assert!(!common.contains("report"), "{common:?}");
    let hits = absolute.search("status report", 500, &s).await.unwrap();
    assert_eq!((hits.len(), count(&hits, 1)), (50, 50));

    // Off: OR of every word, as before the statistics.
    let off = keyword_index(&db, 0.0).await.unwrap();
    assert!(off.common_lexemes().is_empty());
    assert_eq!(
        off.search("status update", 500, &s).await.unwrap().len(),
        175
    );
    assert_eq!(
        off.search("status update kubernetes", 500, &s)
            .await
            .unwrap()
            .len(),
        180
    );

    // A bad cutoff is refused at open.
    for bad in [-0.5, f64::NAN, f64::INFINITY] {
        let r = keyword_index(&db, bad).await;
        assert!(r.is_err(), "{bad}");
    }
    drop((relative, absolute, off));
    db.finish().await;
}

/// The match budget: a query matches the OR of its rarest words while their
/// document frequencies add up to at most the budget; the others only rank;
/// when even the rarest is over it, rows must hold every word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_matches_the_rarest_words_within_the_budget() {
    let mut db = TestDb::new("match_budget").await;
    let group = status_rows(&mut db).await;
    let groups_of = |hits: &[(Key, f32)]| {
        let mut n = [0usize; 4];
        for h in hits {
            n[group[&h.0]] += 1;
        }
        n
    };
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);
    // Without statistics (every frequency counted) and after ANALYZE
    // (frequencies of the listed words from pg_stats) alike.
    for analysed in [false, true] {
        if analysed {
            sqlx::query("ANALYZE memories")
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let cases: [(u64, &str, [usize; 4]); 6] = [
            // kubernet (10) fits, updat would bring the total to 135.
            (20, "status update kubernetes", [0, 0, 5, 5]),
            // kubernet + updat = 135 fit, statu would make 310.
            (200, "status update kubernetes", [120, 0, 5, 5]),
            (1000, "status update kubernetes", [120, 50, 5, 5]),
            // No bound: the OR of every word.
            (0, "status update kubernetes", [120, 50, 5, 5]),
            // The rarest word (updat, 125) is over the budget: all words.
            (100, "status update", [120, 0, 5, 0]),
            // A word found nowhere counts 0 and matches nothing.
            (20, "zeppelin cluster", [0, 0, 0, 5]),
        ];
        for (budget, query, want) in cases {
            let index = budgeted_keyword_index(&db, budget, 0.0).await.unwrap();
            let hits = index.search(query, 500, &s).await.unwrap();
            assert_eq!(
                groups_of(&hits),
                want,
                "budget {budget}, {query:?}, analysed {analysed}"
            );
            // The budget decides which rows match, not their scores: the
            // commoner words still count in the rank.
            let unbounded = budgeted_keyword_index(&db, 0, 0.0).await.unwrap();
            let all: std::collections::HashMap<Key, f32> = unbounded
                .search(query, 500, &s)
                .await
                .unwrap()
                .into_iter()
                .collect();
            for (key, score) in &hits {
                assert_eq!(Some(score), all.get(key), "{query:?} budget {budget}");
            }
        }
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_index_of_one_model_never_returns_another_models_vectors() {
    let mut db = TestDb::new("vector_models").await;
    let mut rng = StdRng::seed_from_u64(7);
    let docs: Vec<Doc> = (0..40)
        .map(|i| Doc::new(&format!("doc {i}"), Some(random_unit(&mut rng, DIMS))))
        .collect();
    let keys = db.insert(&docs).await;
    // The first half embedded by model "old", the rest by "new" (as in the
    // moment a node has not yet seen a model switch).
    let (old, new) = keys.split_at(20);
    for (version, ks) in [("old", old), ("new", new)] {
        let ks: Vec<i64> = ks.iter().map(|k| *k as i64).collect();
        sqlx::query("UPDATE memories SET embedding_version = $1 WHERE key = ANY($2)")
            .bind(version)
            .bind(&ks)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let attrs = AttrTable::new();
    let all: Vec<String> = vec![];
    let s = scope("t1", &all, None, &attrs);
    let q = random_unit(&mut rng, DIMS);
    let of = |version: Option<&str>| PgVectorOptions {
        model_version: version.map(str::to_string),
        ..opts()
    };
    let new_index = PgVectorIndex::open(db.pool.clone(), DIMS, of(Some("new")))
        .await
        .unwrap();
    let any_index = PgVectorIndex::open(db.pool.clone(), DIMS, of(None))
        .await
        .unwrap();
    let new_keys: HashSet<Key> = new.iter().copied().collect();
    for exact in [false, true] {
        let hits = if exact {
            new_index.search_exact(&q, 30, &s).await.unwrap()
        } else {
            new_index.search(&q, 30, &s).await.unwrap()
        };
        let got: HashSet<Key> = hits.iter().map(|h| h.0).collect();
        assert_eq!(got, new_keys, "exact: {exact}");
        let hits = if exact {
            any_index.search_exact(&q, 30, &s).await.unwrap()
        } else {
            any_index.search(&q, 30, &s).await.unwrap()
        };
        assert_eq!(hits.len(), 30, "exact: {exact}");
    }
}
