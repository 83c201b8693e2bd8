//! Behaviour of the embedded derived indexes, driven the way the engine
//! drives them: every upserted key also goes into the `AttrTable`, and every
//! search gets a `Scope` over that table.

use chrono::{Duration, Utc};
use engram_core::{
    AttrTable, Change, ChangeOp, DerivedIndex, DocAttrs, IndexDoc, Key, KeywordIndex, Kind, Scope,
    VectorIndex,
};
use engram_index::{TantivyIndex, UsearchIndex, VectorOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Map;
use std::collections::HashSet;
use std::sync::Arc;

const TENANT: &str = "acme";
const OTHER: &str = "globex";

fn attrs(tenant: &str, namespace: &str) -> Arc<DocAttrs> {
    let now = Utc::now();
    Arc::new(DocAttrs {
        tenant: tenant.to_string(),
        namespace: namespace.to_string(),
        kind: Kind::Fact,
        tags: Vec::new(),
        metadata: Map::new(),
        created_at: now,
        updated_at: now,
        expires_at: None,
        occurred_at: now,
        session: None,
    })
}

/// Keeps the attribute table in step with the changes, as the engine does.
struct Feed {
    table: AttrTable,
    seq: u64,
}

impl Feed {
    fn new() -> Self {
        Feed {
            table: AttrTable::new(),
            seq: 0,
        }
    }

    fn upsert(&mut self, key: Key, tenant: &str, text: &str, vector: Vec<f32>) -> Change {
        let a = attrs(tenant, "default");
        self.table.insert(key, a.clone());
        self.seq += 1;
        Change {
            seq: self.seq,
            key,
            op: ChangeOp::Upsert(Arc::new(IndexDoc {
                key,
                text: text.to_string(),
                context: String::new(),
                vector,
                target_vector: None,
                attrs: a,
            })),
        }
    }

    /// An upsert with a context beside the text (a conversation message).
    fn upsert_with_context(&mut self, key: Key, text: &str, context: &str) -> Change {
        let mut c = self.upsert(key, TENANT, text, vec![]);
        if let ChangeOp::Upsert(d) = &mut c.op {
            Arc::make_mut(d).context = context.to_string();
        }
        c
    }

    fn remove(&mut self, key: Key) -> Change {
        self.table.remove(key);
        self.seq += 1;
        Change {
            seq: self.seq,
            key,
            op: ChangeOp::Remove,
        }
    }

    fn scope(&self, tenant: &'static str) -> Scope<'_> {
        Scope::new(tenant, &[], None, Utc::now(), &self.table)
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn random_unit(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    unit((0..dims).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
}

/// A unit vector along axis `i` (plus a little of axis `j`).
fn axis(dims: usize, i: usize, j: usize, w: f32) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i] = 1.0;
    v[j] += w;
    unit(v)
}

fn keys(hits: &[(Key, f32)]) -> Vec<Key> {
    hits.iter().map(|h| h.0).collect()
}

fn low_threshold() -> VectorOptions {
    VectorOptions {
        exact_threshold: 0,
        ..VectorOptions::default()
    }
}

// ---------------------------------------------------------------- usearch

async fn vector_upsert_search_remove(opts: VectorOptions) {
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 8, opts).unwrap();
    let mut feed = Feed::new();
    let changes: Vec<Change> = (0..8)
        .map(|i| feed.upsert(i as Key + 1, TENANT, "", axis(8, i, (i + 1) % 8, 0.1)))
        .collect();
    idx.apply(&changes).await.unwrap();
    assert_eq!(idx.len(), 8);

    let q = axis(8, 3, 3, 0.0);
    let hits = VectorIndex::search(&idx, &q, 3, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].0, 4, "the vector along axis 3 is the nearest");
    // Key 3 (axis 2 + a bit of axis 3) is the runner-up.
    assert_eq!(hits[1].0, 3);
    assert!((hits[0].1 - 1.0 / (1.0f32 + 0.01).sqrt()).abs() < 1e-3);
    assert!(hits[0].1 >= hits[1].1 && hits[1].1 >= hits[2].1);

    // Another tenant sees nothing.
    let none = VectorIndex::search(&idx, &q, 3, &feed.scope(OTHER))
        .await
        .unwrap();
    assert!(none.is_empty());

    let rm = feed.remove(4);
    idx.apply(&[rm]).await.unwrap();
    assert_eq!(idx.len(), 7);
    let hits = VectorIndex::search(&idx, &q, 3, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(hits[0].0, 3);
    assert!(!keys(&hits).contains(&4));

    // Removing an absent key is a no-op.
    let rm = feed.remove(999);
    idx.apply(&[rm]).await.unwrap();
    assert_eq!(idx.len(), 7);
}

#[tokio::test]
async fn vector_upsert_search_remove_exact_path() {
    vector_upsert_search_remove(VectorOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_upsert_search_remove_hnsw_path() {
    vector_upsert_search_remove(low_threshold()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_reupsert_replaces() {
    for opts in [VectorOptions::default(), low_threshold()] {
        let dir = tempfile::tempdir().unwrap();
        let idx = UsearchIndex::open(dir.path(), 4, opts).unwrap();
        let mut feed = Feed::new();
        let a = feed.upsert(1, TENANT, "", axis(4, 0, 0, 0.0));
        let b = feed.upsert(2, TENANT, "", axis(4, 1, 1, 0.0));
        idx.apply(&[a, b]).await.unwrap();
        // Key 1 moves from axis 0 to axis 2; twice in one batch, then again.
        let c = feed.upsert(1, TENANT, "", axis(4, 3, 3, 0.0));
        let d = feed.upsert(1, TENANT, "", axis(4, 2, 2, 0.0));
        idx.apply(&[c, d]).await.unwrap();
        let e = feed.upsert(1, TENANT, "", axis(4, 2, 2, 0.0));
        idx.apply(&[e]).await.unwrap();
        assert_eq!(idx.len(), 2);

        let scope = feed.scope(TENANT);
        let hits = VectorIndex::search(&idx, &axis(4, 2, 2, 0.0), 10, &scope)
            .await
            .unwrap();
        assert_eq!(keys(&hits).len(), 2, "no duplicate key: {hits:?}");
        assert_eq!(hits[0], (1, hits[0].1));
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        let old = VectorIndex::search(&idx, &axis(4, 0, 0, 0.0), 1, &scope)
            .await
            .unwrap();
        assert!(old[0].1 < 0.5, "the old vector is gone: {old:?}");
    }
}

async fn vector_scope_is_applied_inside_search(opts: VectorOptions) {
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 32, opts).unwrap();
    let mut feed = Feed::new();
    let mut rng = StdRng::seed_from_u64(7);
    let changes: Vec<Change> = (0..1000u64)
        .map(|k| {
            let tenant = if k % 50 == 0 { TENANT } else { OTHER };
            let v = random_unit(&mut rng, 32);
            feed.upsert(k, tenant, "", v)
        })
        .collect();
    idx.apply(&changes).await.unwrap();
    assert_eq!(idx.len(), 1000);

    let scope = feed.scope(TENANT);
    let (mut found, mut wanted) = (0, 0);
    for _ in 0..20 {
        let q = random_unit(&mut rng, 32);
        let hits = VectorIndex::search(&idx, &q, 10, &scope).await.unwrap();
        assert_eq!(hits.len(), 10, "k allowed hits come back: {hits:?}");
        assert!(
            hits.iter().all(|(k, _)| k % 50 == 0),
            "only allowed keys: {hits:?}"
        );
        let distinct: HashSet<Key> = keys(&hits).into_iter().collect();
        assert_eq!(distinct.len(), 10);
        // Nearly the exact scan's answer. Not always exactly: the graph walk
        // is approximate, and usearch builds the graph on several threads, so
        // at a 2% filter a run now and then swaps the 10th hit for the 11th.
        let exact: HashSet<Key> = keys(&idx.exact_search(&q, 10, &scope).unwrap())
            .into_iter()
            .collect();
        found += distinct.intersection(&exact).count();
        wanted += exact.len();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.95, "filtered recall@10 {recall}");
    // Asking for more than exist returns all that exist.
    let hits = VectorIndex::search(&idx, &random_unit(&mut rng, 32), 50, &scope)
        .await
        .unwrap();
    assert_eq!(hits.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_scope_filter_exact_path() {
    vector_scope_is_applied_inside_search(VectorOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_scope_filter_hnsw_path() {
    vector_scope_is_applied_inside_search(low_threshold()).await;
}

/// Brute force in the test itself: the ground truth for the exact path.
fn brute_force(
    vectors: &[(Key, Vec<f32>)],
    allowed: impl Fn(Key) -> bool,
    q: &[f32],
    k: usize,
) -> Vec<Key> {
    let mut scored: Vec<(Key, f32)> = vectors
        .iter()
        .filter(|(key, _)| allowed(*key))
        .map(|(key, v)| (*key, v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().take(k).map(|h| h.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_exact_path_matches_brute_force() {
    // Below exact_threshold: every search is exact, whatever share of the
    // index the scope allows -- including a scope whose keys all rank last.
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 24, VectorOptions::default()).unwrap();
    let mut feed = Feed::new();
    let mut rng = StdRng::seed_from_u64(5);
    let vectors: Vec<(Key, Vec<f32>)> = (0..1000u64)
        .map(|k| (k, random_unit(&mut rng, 24)))
        .collect();
    let q = axis(24, 0, 0, 0.0);
    // Tenant "acme": the vectors pointing away from the query (half of them).
    let away = |v: &[f32]| v[0] < 0.0;
    let changes: Vec<Change> = vectors
        .iter()
        .map(|(k, v)| feed.upsert(*k, if away(v) { TENANT } else { OTHER }, "", v.clone()))
        .collect();
    idx.apply(&changes).await.unwrap();
    let acme: HashSet<Key> = vectors
        .iter()
        .filter(|(_, v)| away(v))
        .map(|(k, _)| *k)
        .collect();
    assert!(acme.len() > 400 && acme.len() < 600);

    for k in [1, 10, 100] {
        let hits = VectorIndex::search(&idx, &q, k, &feed.scope(TENANT))
            .await
            .unwrap();
        assert_eq!(
            keys(&hits),
            brute_force(&vectors, |key| acme.contains(&key), &q, k)
        );
        let hits = VectorIndex::search(&idx, &q, k, &feed.scope(OTHER))
            .await
            .unwrap();
        assert_eq!(
            keys(&hits),
            brute_force(&vectors, |key| !acme.contains(&key), &q, k)
        );
    }
    // Everything allowed, and 1 key in 50 allowed.
    let all = Scope::new(TENANT, &[], None, Utc::now(), &feed.table);
    for (key, _) in &vectors {
        feed.table.insert(
            *key,
            attrs(if key % 50 == 0 { "few" } else { TENANT }, "default"),
        );
    }
    let hits = VectorIndex::search(&idx, &q, 10, &all).await.unwrap();
    assert_eq!(
        keys(&hits),
        brute_force(&vectors, |key| key % 50 != 0, &q, 10)
    );
    let few = feed.scope("few");
    let hits = VectorIndex::search(&idx, &q, 10, &few).await.unwrap();
    assert_eq!(
        keys(&hits),
        brute_force(&vectors, |key| key % 50 == 0, &q, 10)
    );
    let hits = VectorIndex::search_exact(&idx, &q, 10, &few).await.unwrap();
    assert_eq!(
        keys(&hits),
        brute_force(&vectors, |key| key % 50 == 0, &q, 10)
    );
    // Similarities are cosines.
    let best = vectors.iter().find(|(k, _)| *k == hits[0].0).unwrap();
    assert!((hits[0].1 - best.1[0]).abs() < 1e-4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_expired_and_unknown_keys_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 4, low_threshold()).unwrap();
    let mut feed = Feed::new();
    let a = feed.upsert(1, TENANT, "", axis(4, 0, 0, 0.0));
    let b = feed.upsert(2, TENANT, "", axis(4, 0, 1, 0.5));
    idx.apply(&[a, b]).await.unwrap();
    // Key 1 expired; key 2 unknown to the attribute table (not ready yet).
    let mut expired = (*feed.table.get(1).unwrap()).clone();
    expired.expires_at = Some(Utc::now() - Duration::seconds(1));
    feed.table.insert(1, Arc::new(expired));
    feed.table.remove(2);
    let hits = VectorIndex::search(&idx, &axis(4, 0, 0, 0.0), 5, &feed.scope(TENANT))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_rejects_wrong_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 4, VectorOptions::default()).unwrap();
    let mut feed = Feed::new();
    let good = feed.upsert(1, TENANT, "", axis(4, 0, 0, 0.0));
    let bad = feed.upsert(2, TENANT, "", vec![1.0, 0.0]);
    let err = idx.apply(&[good, bad]).await.unwrap_err();
    assert!(matches!(err, engram_core::Error::Internal(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("usearch") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    assert_eq!(idx.len(), 0, "a rejected batch applies nothing");
    let err = VectorIndex::search(&idx, &[1.0], 1, &feed.scope(TENANT))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4-dimensional"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_persist_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    let mut rng = StdRng::seed_from_u64(3);
    let vectors: Vec<Vec<f32>> = (0..300).map(|_| random_unit(&mut rng, 16)).collect();
    let q = random_unit(&mut rng, 16);
    let before;
    {
        let idx = UsearchIndex::open(dir.path(), 16, low_threshold()).unwrap();
        assert_eq!(idx.persisted_seq(), 0);
        let changes: Vec<Change> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| feed.upsert(i as Key, TENANT, "", v.clone()))
            .collect();
        idx.apply(&changes).await.unwrap();
        let rm = feed.remove(5);
        idx.apply(&[rm]).await.unwrap();
        idx.persist(feed.seq).await.unwrap();
        assert_eq!(idx.persisted_seq(), 301);
        // A second persist with nothing new only moves the seq.
        idx.persist(302).await.unwrap();
        assert_eq!(idx.persisted_seq(), 302);
        before = VectorIndex::search(&idx, &q, 10, &feed.scope(TENANT))
            .await
            .unwrap();
    }
    assert!(dir.path().join("vectors.usearch").exists());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("vectors.meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["persisted_seq"], 302);
    assert_eq!(meta["dims"], 16);
    assert_eq!(meta["count"], 299);
    assert_eq!(meta["format_version"], 1);

    let idx = UsearchIndex::open(dir.path(), 16, low_threshold()).unwrap();
    assert_eq!(idx.persisted_seq(), 302);
    assert_eq!(idx.len(), 299);
    let after = VectorIndex::search(&idx, &q, 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&before), keys(&after));
    let exact = idx
        .exact_search(&vectors[7], 1, &feed.scope(TENANT))
        .unwrap();
    assert_eq!(exact[0].0, 7);
    assert!(
        (exact[0].1 - 1.0).abs() < 1e-5,
        "vectors survive the round trip"
    );
    // The reopened index keeps working.
    let more = feed.upsert(1000, TENANT, "", random_unit(&mut rng, 16));
    idx.apply(&[more]).await.unwrap();
    assert_eq!(idx.len(), 300);

    // Other dimensions requested: the persisted index is discarded.
    drop(idx);
    let idx = UsearchIndex::open(dir.path(), 32, low_threshold()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_corrupt_files_open_empty() {
    let setup = |dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        async move {
            let idx = UsearchIndex::open(&dir, 8, VectorOptions::default()).unwrap();
            let mut feed = Feed::new();
            let changes: Vec<Change> = (0..8)
                .map(|i| feed.upsert(i, TENANT, "", axis(8, i as usize, 0, 0.2)))
                .collect();
            idx.apply(&changes).await.unwrap();
            idx.persist(8).await.unwrap();
            assert_eq!(
                UsearchIndex::open(&dir, 8, VectorOptions::default())
                    .unwrap()
                    .len(),
                8
            );
        }
    };
    let vectors = |d: &tempfile::TempDir| d.path().join("vectors.usearch");
    let meta = |d: &tempfile::TempDir| d.path().join("vectors.meta.json");

    // Garbage in place of the index.
    let d = tempfile::tempdir().unwrap();
    setup(d.path()).await;
    std::fs::write(
        vectors(&d),
        b"this is not a usearch index, just garbage (:*?\"",
    )
    .unwrap();
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));

    // Truncated index.
    let d = tempfile::tempdir().unwrap();
    setup(d.path()).await;
    let bytes = std::fs::read(vectors(&d)).unwrap();
    std::fs::write(vectors(&d), &bytes[..bytes.len() / 2]).unwrap();
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));

    // One flipped byte.
    let d = tempfile::tempdir().unwrap();
    setup(d.path()).await;
    let mut bytes = std::fs::read(vectors(&d)).unwrap();
    bytes[40] ^= 0x55;
    std::fs::write(vectors(&d), &bytes).unwrap();
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));

    // Garbage meta, missing meta.
    let d = tempfile::tempdir().unwrap();
    setup(d.path()).await;
    std::fs::write(meta(&d), b"{not json").unwrap();
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
    std::fs::remove_file(meta(&d)).unwrap();
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));

    // The empty index that replaced a corrupt one persists and reopens normally.
    let mut feed = Feed::new();
    let c = feed.upsert(1, TENANT, "", axis(8, 1, 1, 0.0));
    idx.apply(&[c]).await.unwrap();
    idx.persist(1).await.unwrap();
    drop(idx);
    let idx = UsearchIndex::open(d.path(), 8, VectorOptions::default()).unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_clear() {
    let dir = tempfile::tempdir().unwrap();
    let idx = UsearchIndex::open(dir.path(), 4, VectorOptions::default()).unwrap();
    let mut feed = Feed::new();
    let changes: Vec<Change> = (0..4)
        .map(|i| feed.upsert(i, TENANT, "", axis(4, i as usize, 0, 0.1)))
        .collect();
    idx.apply(&changes).await.unwrap();
    idx.persist(4).await.unwrap();
    idx.clear().await.unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
    assert!(idx.is_empty());
    let hits = VectorIndex::search(&idx, &axis(4, 0, 0, 0.0), 3, &feed.scope(TENANT))
        .await
        .unwrap();
    assert!(hits.is_empty());
    drop(idx);
    let idx = UsearchIndex::open(dir.path(), 4, VectorOptions::default()).unwrap();
    assert_eq!(
        (idx.len(), idx.persisted_seq()),
        (0, 0),
        "the cleared state is persisted"
    );
    // Usable after clear.
    let c = feed.upsert(9, TENANT, "", axis(4, 2, 2, 0.0));
    idx.apply(&[c]).await.unwrap();
    let hits = VectorIndex::search(&idx, &axis(4, 2, 2, 0.0), 3, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vector_concurrent_searches_and_applies() {
    // More concurrent searches than usearch has thread contexts, racing with
    // applies: every search must succeed.
    let dir = tempfile::tempdir().unwrap();
    let idx = Arc::new(UsearchIndex::open(dir.path(), 16, low_threshold()).unwrap());
    let feed = Arc::new(parking_lot::RwLock::new(Feed::new()));
    let mut rng = StdRng::seed_from_u64(11);
    let changes: Vec<Change> = {
        let mut f = feed.write();
        (0..2000)
            .map(|k| f.upsert(k, TENANT, "", random_unit(&mut rng, 16)))
            .collect()
    };
    idx.apply(&changes).await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let idx = idx.clone();
        let feed = feed.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut rng = StdRng::seed_from_u64(100 + t);
            for _ in 0..20 {
                let q = random_unit(&mut rng, 16);
                let f = feed.read();
                let scope = f.scope(TENANT);
                let hits = idx.search_blocking(&q, 10, &scope).unwrap();
                assert_eq!(hits.len(), 10);
            }
        }));
    }
    for round in 0..5u64 {
        let batch: Vec<Change> = {
            let mut f = feed.write();
            (0..200)
                .map(|i| {
                    f.upsert(
                        10_000 + round * 200 + i,
                        TENANT,
                        "",
                        random_unit(&mut rng, 16),
                    )
                })
                .collect()
        };
        idx.apply(&batch).await.unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(idx.len(), 3000);
}

/// Random unit vectors with the structure of real text embeddings: a
/// 16-dimensional latent point mapped linearly into `dims` dimensions, plus
/// a little isotropic noise. Nearest-neighbour similarities come out around
/// 0.8 (top 1) and 0.7 (top 10), as with MiniLM over a real corpus.
///
/// Uniformly random unit vectors are useless for measuring an ANN index: in
/// 384 dimensions all their pairwise similarities concentrate around 0
/// (top-10 neighbours at ~0.2 vs ~0.15 for the 1000th), no graph can
/// navigate them, and HNSW recall@10 with M=16, ef=64 is ~0.28 (0.65 at
/// ef=256) -- a property of the data, not of the index.
struct Embeddings {
    basis: Vec<Vec<f32>>,
}

impl Embeddings {
    const LATENT: usize = 16;
    const NOISE: f32 = 0.05;

    fn new(rng: &mut StdRng, dims: usize) -> Self {
        let basis = (0..dims)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_hnsw_recall_at_10() {
    const N: usize = 20_000;
    const DIMS: usize = 384;
    let dir = tempfile::tempdir().unwrap();
    let opts = VectorOptions::default();
    let idx = UsearchIndex::open(dir.path(), DIMS, opts).unwrap();
    let mut feed = Feed::new();
    let mut rng = StdRng::seed_from_u64(42);
    let gen = Embeddings::new(&mut rng, DIMS);
    for chunk in 0..(N / 2000) {
        let batch: Vec<Change> = (0..2000)
            .map(|i| {
                let key = (chunk * 2000 + i) as Key;
                feed.upsert(key, TENANT, "", gen.sample(&mut rng))
            })
            .collect();
        idx.apply(&batch).await.unwrap();
    }
    assert_eq!(idx.len(), N);
    assert!(
        idx.len() >= opts.exact_threshold,
        "search takes the HNSW path"
    );

    let scope = feed.scope(TENANT);
    let queries = 200;
    let mut found = 0;
    for _ in 0..queries {
        let q = gen.sample(&mut rng);
        let approx = VectorIndex::search(&idx, &q, 10, &scope).await.unwrap();
        let exact = VectorIndex::search_exact(&idx, &q, 10, &scope)
            .await
            .unwrap();
        assert_eq!(approx.len(), 10);
        assert_eq!(exact.len(), 10);
        let truth: HashSet<Key> = keys(&exact).into_iter().collect();
        found += approx.iter().filter(|(k, _)| truth.contains(k)).count();
        // Both paths report similarity on the same scale.
        for (k, s) in &approx {
            if let Some((_, e)) = exact.iter().find(|(x, _)| x == k) {
                assert!((s - e).abs() < 1e-3, "{s} vs {e}");
            }
        }
    }
    let recall = found as f64 / (queries * 10) as f64;
    eprintln!("HNSW recall@10 vs exact on {N} x {DIMS} embedding-like unit vectors: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 = {recall}");
}

// ---------------------------------------------------------------- tantivy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_upsert_search_remove() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    let changes = vec![
        feed.upsert(1, TENANT, "The cat sat on the mat", vec![]),
        feed.upsert(2, TENANT, "Dogs chase cats in the garden", vec![]),
        feed.upsert(3, TENANT, "Quarterly revenue grew by ten percent", vec![]),
        feed.upsert(4, OTHER, "A cat of another tenant", vec![]),
    ];
    idx.apply(&changes).await.unwrap();
    assert_eq!(idx.len(), 4);
    assert_eq!(idx.persisted_seq(), 4, "apply commits with the last seq");

    let scope = feed.scope(TENANT);
    let hits = KeywordIndex::search(&idx, "cat", 10, &scope).await.unwrap();
    let mut got = keys(&hits);
    got.sort();
    assert_eq!(
        got,
        vec![1, 2],
        "stemmed 'cats' matches, other tenant excluded"
    );
    assert!(hits.iter().all(|h| h.1 > 0.0));

    let hits = KeywordIndex::search(&idx, "revenue", 10, &scope)
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![3]);

    let rm = feed.remove(1);
    idx.apply(&[rm]).await.unwrap();
    assert_eq!(idx.len(), 3);
    assert_eq!(idx.persisted_seq(), 5);
    let hits = KeywordIndex::search(&idx, "cat", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![2]);
}

#[tokio::test]
async fn keyword_reupsert_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    let a = feed.upsert(7, TENANT, "apples and pears", vec![]);
    idx.apply(&[a]).await.unwrap();
    let b = feed.upsert(7, TENANT, "bananas", vec![]);
    let c = feed.upsert(7, TENANT, "cherries and bananas", vec![]);
    idx.apply(&[b, c]).await.unwrap();
    assert_eq!(idx.len(), 1);
    let scope = feed.scope(TENANT);
    assert!(KeywordIndex::search(&idx, "apples", 10, &scope)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        keys(
            &KeywordIndex::search(&idx, "bananas cherries", 10, &scope)
                .await
                .unwrap()
        ),
        vec![7],
        "exactly one document for the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_stemming_and_bm25_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    let changes = vec![
        feed.upsert(1, TENANT, "She runs every morning", vec![]),
        feed.upsert(2, TENANT, "The garden is green", vec![]),
        feed.upsert(3, TENANT, "running shoes for the marathon", vec![]),
        feed.upsert(4, TENANT, "a marathon in the rain", vec![]),
        feed.upsert(5, TENANT, "rain, rain and more rain", vec![]),
    ];
    idx.apply(&changes).await.unwrap();
    let scope = feed.scope(TENANT);

    let hits = KeywordIndex::search(&idx, "running", 10, &scope)
        .await
        .unwrap();
    let got: HashSet<Key> = keys(&hits).into_iter().collect();
    assert_eq!(got, HashSet::from([1, 3]), "'running' finds 'runs'");
    let hits = KeywordIndex::search(&idx, "RUN", 10, &scope).await.unwrap();
    assert_eq!(hits.len(), 2, "lowercased");

    // More query terms matched ranks higher.
    let hits = KeywordIndex::search(&idx, "marathon running shoes", 10, &scope)
        .await
        .unwrap();
    assert_eq!(hits[0].0, 3, "{hits:?}");
    assert!(hits[0].1 > hits[1].1);
    assert!(keys(&hits).contains(&4));
    // k limits the result, keeping the best.
    let top1 = KeywordIndex::search(&idx, "marathon running shoes", 1, &scope)
        .await
        .unwrap();
    assert_eq!(top1, hits[..1].to_vec());
    // Higher term frequency ranks higher (BM25).
    let hits = KeywordIndex::search(&idx, "rain", 10, &scope)
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![5, 4]);
}

#[tokio::test]
async fn keyword_special_characters_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    let c = feed.upsert(
        1,
        TENANT,
        "error: connection (timeout) at host:port?",
        vec![],
    );
    idx.apply(&[c]).await.unwrap();
    let scope = feed.scope(TENANT);
    for q in [
        "\"(:*?",
        "timeout)",
        "host:port",
        "AND OR NOT",
        "\"unterminated",
        "field:value^2 [a TO b] {x} ~1 +must -not \\ / !",
        "connection*",
        "",
        "   ",
        "(((",
        "日本語 ünïcödé",
    ] {
        let hits = KeywordIndex::search(&idx, q, 5, &scope).await;
        assert!(hits.is_ok(), "query {q:?} failed: {hits:?}");
    }
    let hits = KeywordIndex::search(&idx, "(timeout)", 5, &scope)
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![1]);
    let hits = KeywordIndex::search(&idx, "host:port", 5, &scope)
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![1]);
    assert!(KeywordIndex::search(&idx, "", 5, &scope)
        .await
        .unwrap()
        .is_empty());
    assert!(KeywordIndex::search(&idx, "?!*", 5, &scope)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_scope_is_applied_inside_search() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    // 1000 docs share the word "memory"; only every 50th is visible. The
    // invisible ones score higher (shorter texts), so a post-filter of the
    // global top-10 would return nothing.
    let changes: Vec<Change> = (0..1000u64)
        .map(|k| {
            if k % 50 == 0 {
                feed.upsert(
                    k,
                    TENANT,
                    &format!("memory {k} with quite a lot of other words"),
                    vec![],
                )
            } else {
                feed.upsert(k, OTHER, "memory", vec![])
            }
        })
        .collect();
    // Several batches: several segments.
    for part in changes.chunks(300) {
        idx.apply(part).await.unwrap();
    }
    let hits = KeywordIndex::search(&idx, "memory", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|(k, _)| k % 50 == 0), "{hits:?}");
    let all = KeywordIndex::search(&idx, "memory", 100, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(all.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_persist_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    {
        let idx = TantivyIndex::open(dir.path(), "test").unwrap();
        assert_eq!(idx.persisted_seq(), 0);
        let changes = vec![
            feed.upsert(1, TENANT, "persistent memories survive restarts", vec![]),
            feed.upsert(2, TENANT, "volatile thoughts", vec![]),
        ];
        idx.apply(&changes).await.unwrap();
        assert_eq!(idx.persisted_seq(), 2);
        // No persist: every apply is a durable commit.
    }
    {
        let idx = TantivyIndex::open(dir.path(), "test").unwrap();
        assert_eq!((idx.len(), idx.persisted_seq()), (2, 2));
        idx.persist(10).await.unwrap();
        assert_eq!(idx.persisted_seq(), 10);
    }
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    assert_eq!(idx.persisted_seq(), 10);
    assert_eq!(idx.len(), 2);
    let hits = KeywordIndex::search(&idx, "restart", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_context_is_searched_below_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let changes = vec![
        feed.upsert_with_context(1, "Ann: her name is Pixel", "Ann: I adopted a dog"),
        feed.upsert_with_context(2, "Bo: my dog sleeps all day", "Ann: her name is Pixel"),
        feed.upsert_with_context(3, "Bo: see you", ""),
    ];
    idx.apply(&changes).await.unwrap();
    // "Pixel" is in 1's text and 2's context: the text ranks first.
    let hits = KeywordIndex::search(&idx, "pixel", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![1, 2]);
    assert!(hits[0].1 > hits[1].1, "{hits:?}");
    // A word found only in the context still finds the message.
    let hits = KeywordIndex::search(&idx, "adopted", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_index_of_another_recipe_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    {
        let idx = TantivyIndex::open(dir.path(), "1w2").unwrap();
        let c = feed.upsert(1, TENANT, "hello world", vec![]);
        idx.apply(&[c]).await.unwrap();
        assert_eq!((idx.len(), idx.persisted_seq()), (1, 1));
    }
    {
        let idx = TantivyIndex::open(dir.path(), "1w2").unwrap();
        assert_eq!(
            (idx.len(), idx.persisted_seq()),
            (1, 1),
            "same recipe: kept"
        );
    }
    // Another recipe: empty at seq 0, so the engine replays the feed.
    let idx = TantivyIndex::open(dir.path(), "1w3").unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_corrupt_index_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    {
        let idx = TantivyIndex::open(dir.path(), "test").unwrap();
        let c = feed.upsert(1, TENANT, "hello world", vec![]);
        idx.apply(&[c]).await.unwrap();
    }
    std::fs::write(dir.path().join("meta.json"), b"garbage (:*?").unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
    let c = feed.upsert(2, TENANT, "hello again", vec![]);
    idx.apply(&[c]).await.unwrap();
    let hits = KeywordIndex::search(&idx, "hello", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![2]);
    drop(idx);

    // Segment files gone: also recreated.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".idx") || name.ends_with(".term") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));

    // A second open while the first holds the writer is an error, not a wipe.
    let err = TantivyIndex::open(dir.path(), "test")
        .err()
        .expect("writer lock is held");
    assert!(err.to_string().contains("tantivy"), "{err}");
    drop(idx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_clear() {
    let dir = tempfile::tempdir().unwrap();
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    let mut feed = Feed::new();
    let changes = vec![
        feed.upsert(1, TENANT, "one fish", vec![]),
        feed.upsert(2, TENANT, "two fish", vec![]),
    ];
    idx.apply(&changes).await.unwrap();
    idx.clear().await.unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
    assert!(KeywordIndex::search(&idx, "fish", 10, &feed.scope(TENANT))
        .await
        .unwrap()
        .is_empty());
    drop(idx);
    let idx = TantivyIndex::open(dir.path(), "test").unwrap();
    assert_eq!((idx.len(), idx.persisted_seq()), (0, 0));
    let c = feed.upsert(3, TENANT, "red fish", vec![]);
    idx.apply(&[c]).await.unwrap();
    let hits = KeywordIndex::search(&idx, "fish", 10, &feed.scope(TENANT))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![3]);
}
