//! usearch HNSW vector index.
//!
//! Layout in its directory:
//! - `vectors.usearch`: the usearch index (vectors + graph), loaded into memory on open;
//! - `vectors.meta.json`: `{persisted_seq, dims, count, format_version, file_bytes, checksum}`.
//!
//! Both files are replaced atomically (temp file, fsync, rename, fsync dir),
//! the index first. The meta carries the length and a checksum of the index
//! file, so any pair that does not belong together (a crash between the two
//! renames, a torn or corrupted file) is detected on open and the index starts
//! empty at seq 0 instead of handing a damaged file to the C++ loader.

use async_trait::async_trait;
use engram_core::{Change, ChangeOp, DerivedIndex, Key, Scope, VectorIndex};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::{offload, run_blocking, IndexError};
use engram_fs::{tmp_path, write_atomic};

const NAME: &str = "usearch";
const VECTORS_FILE: &str = "vectors.usearch";
const META_FILE: &str = "vectors.meta.json";
const FORMAT_VERSION: u32 = 1;
/// Capacity reserved up front; it then doubles whenever it is full.
const MIN_CAPACITY: usize = 1024;
/// Batches with at least this many upserts are inserted by several threads.
const PARALLEL_ADD_MIN: usize = 512;
/// Longest brute-force ranking asked of usearch before falling back to
/// fetching the allowed vectors one by one (see `Inner::exact_scan`).
const EXACT_RANKING_MAX: usize = 1024;

/// HNSW and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorOptions {
    /// Graph degree (HNSW `M`).
    pub connectivity: usize,
    /// Candidate list size while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef`); raised to `k` when `k` is larger.
    pub expansion_search: usize,
    /// Below this many vectors every search is an exact scan.
    pub exact_threshold: usize,
}

impl Default for VectorOptions {
    fn default() -> Self {
        VectorOptions {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            exact_threshold: 20_000,
        }
    }
}

/// On-disk description of `vectors.usearch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    persisted_seq: u64,
    dims: usize,
    count: usize,
    format_version: u32,
    /// Length of `vectors.usearch` in bytes.
    file_bytes: u64,
    /// [`checksum`] of `vectors.usearch`.
    checksum: u64,
}

/// What `vectors.usearch` currently holds.
#[derive(Debug, Clone, Copy)]
struct OnDisk {
    /// Value of `Inner::generation` when the file was written.
    generation: u64,
    count: usize,
    file_bytes: u64,
    checksum: u64,
}

/// Approximate nearest-neighbour index over unit-length f32 embeddings
/// (usearch HNSW, cosine metric; similarity = 1 - cosine distance).
///
/// Cheap to clone: clones share the same index.
#[derive(Clone)]
pub struct UsearchIndex {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    dims: usize,
    opts: VectorOptions,
    /// Thread contexts reserved in usearch (concurrent searches / adds).
    threads: usize,
    /// CPUs available: threads used to insert large batches.
    cores: usize,
    /// Write-locked by apply and clear, read-locked by searches and persist.
    index: RwLock<Index>,
    len: AtomicUsize,
    persisted_seq: AtomicU64,
    /// Bumped (under the write lock) by every mutation.
    generation: AtomicU64,
    /// What the files on disk hold; the mutex also serialises persists.
    on_disk: Mutex<Option<OnDisk>>,
    /// usearch fails a search (graph or brute force) outright when more
    /// threads search at once than it has contexts reserved for, so every
    /// search takes a slot first (before the read lock).
    slots: Slots,
}

impl UsearchIndex {
    /// Open the index stored in `dir` (created if missing), or start empty
    /// with persisted seq 0 when there is none or it cannot be used (other
    /// dimensions, unreadable, corrupt).
    pub fn open(dir: &Path, dims: usize, opts: VectorOptions) -> Result<Self, IndexError> {
        let invalid = |message: String| IndexError::Invalid {
            index: NAME,
            path: dir.to_path_buf(),
            message,
        };
        if dims == 0 {
            return Err(invalid("dimensions must be positive".into()));
        }
        if opts.connectivity < 2 || opts.expansion_add == 0 || opts.expansion_search == 0 {
            return Err(invalid(format!(
                "invalid HNSW options {opts:?}: connectivity must be >= 2 and expansions positive"
            )));
        }
        fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            index: NAME,
            path: dir.to_path_buf(),
            op: "creating the index directory",
            source,
        })?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = cores.saturating_mul(2).clamp(4, 64);

        let (index, seq, on_disk) = match load(dir, dims, opts, threads) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => (new_index(dir, dims, opts, threads)?, 0, None),
            Err(reason) => {
                tracing::warn!(
                    index = NAME,
                    path = %dir.display(),
                    %reason,
                    "discarding the persisted vector index; starting empty (the engine replays the change feed)"
                );
                (new_index(dir, dims, opts, threads)?, 0, None)
            }
        };
        let len = index.size();
        if len > 0 {
            tracing::info!(index = NAME, path = %dir.display(), vectors = len, persisted_seq = seq, "loaded vector index");
        }
        Ok(UsearchIndex {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                dims,
                opts,
                threads,
                cores,
                index: RwLock::new(index),
                len: AtomicUsize::new(len),
                persisted_seq: AtomicU64::new(seq),
                generation: AtomicU64::new(0),
                on_disk: Mutex::new(on_disk),
                slots: Slots::new(threads),
            }),
        })
    }

    /// Vector dimensions this index holds.
    pub fn dims(&self) -> usize {
        self.inner.dims
    }

    pub fn options(&self) -> VectorOptions {
        self.inner.opts
    }

    /// Brute-force top `k` over every key the scope allows, by cosine
    /// similarity. What [`VectorIndex::search`] does below
    /// `exact_threshold`; public so benchmarks can measure recall against it.
    /// Blocking.
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        self.inner.check_dims(query.len(), None)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let _slot = self.inner.slots.acquire();
        let index = self.inner.index.read();
        self.inner
            .exact_scan(&index, query, k, scope, &scope.allowed_keys())
    }

    /// Blocking form of [`VectorIndex::search`].
    pub fn search_blocking(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        self.inner.search(query, k, scope)
    }
}

impl Inner {
    fn err_usearch(&self, op: &'static str, e: impl std::fmt::Display) -> IndexError {
        IndexError::Usearch {
            index: NAME,
            path: self.dir.clone(),
            op,
            message: e.to_string(),
        }
    }

    fn err_io(&self, op: &'static str, source: std::io::Error) -> IndexError {
        IndexError::Io {
            index: NAME,
            path: self.dir.clone(),
            op,
            source,
        }
    }

    fn check_dims(&self, got: usize, key: Option<Key>) -> Result<(), IndexError> {
        if got == self.dims {
            Ok(())
        } else {
            Err(IndexError::Dimensions {
                index: NAME,
                path: self.dir.clone(),
                expected: self.dims,
                got,
                key,
            })
        }
    }

    fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        // Validate everything before touching the index.
        for c in changes {
            if let ChangeOp::Upsert(doc) = &c.op {
                self.check_dims(doc.vector.len(), Some(c.key))?;
            }
        }
        // Only the last change of a key matters (the feed is in seq order);
        // collapsing makes the batch free of duplicate keys, which the
        // parallel insert below relies on.
        let mut last: HashMap<Key, usize> = HashMap::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            last.insert(c.key, i);
        }
        let mut order: Vec<usize> = last.into_values().collect();
        order.sort_unstable();

        let index = self.index.write();
        // Count the mutation before making it, so that a batch failing half
        // way is still saved by the next persist.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let result = self.apply_locked(&index, changes, &order);
        self.len.store(index.size(), Ordering::Release);
        result
    }

    fn apply_locked(
        &self,
        index: &Index,
        changes: &[Change],
        order: &[usize],
    ) -> Result<(), IndexError> {
        // Remove first (an upsert replaces), then add.
        for &i in order {
            index
                .remove(changes[i].key)
                .map_err(|e| self.err_usearch("removing a vector", e))?;
        }
        let adds: Vec<(Key, &[f32])> = order
            .iter()
            .filter_map(|&i| match &changes[i].op {
                ChangeOp::Upsert(doc) => Some((changes[i].key, doc.vector.as_slice())),
                ChangeOp::Remove | ChangeOp::Corrupt(_) => None,
            })
            .collect();
        if !adds.is_empty() {
            let needed = index.size() + adds.len();
            if needed > index.capacity() {
                let capacity = needed
                    .max(index.capacity().saturating_mul(2))
                    .max(MIN_CAPACITY);
                index
                    .reserve_capacity_and_threads(capacity, self.threads)
                    .map_err(|e| self.err_usearch("growing the index", e))?;
            }
            let workers = self.cores.min(self.threads);
            if adds.len() >= PARALLEL_ADD_MIN && workers > 1 {
                // usearch supports concurrent inserts of distinct keys (one
                // thread context each); the write lock keeps searches out.
                let chunk = adds.len().div_ceil(workers);
                let idx: &Index = index;
                std::thread::scope(|s| {
                    let handles: Vec<_> = adds
                        .chunks(chunk)
                        .map(|part| {
                            s.spawn(move || {
                                for (key, v) in part {
                                    idx.add(*key, v).map_err(|e| e.to_string())?;
                                }
                                Ok::<(), String>(())
                            })
                        })
                        .collect();
                    for h in handles {
                        match h.join() {
                            Ok(r) => r.map_err(|e| self.err_usearch("adding a vector", e))?,
                            Err(p) => std::panic::resume_unwind(p),
                        }
                    }
                    Ok::<(), IndexError>(())
                })?;
            } else {
                for (key, v) in &adds {
                    index
                        .add(*key, v)
                        .map_err(|e| self.err_usearch("adding a vector", e))?;
                }
            }
        }
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        self.check_dims(query.len(), None)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let _slot = self.slots.acquire();
        let index = self.index.read();
        let size = index.size();
        if size == 0 {
            return Ok(Vec::new());
        }
        if size < self.opts.exact_threshold {
            return self.exact_scan(&index, query, k, scope, &scope.allowed_keys());
        }
        // usearch searches with max(expansion_search, k) candidates and only
        // admits keys the predicate allows into them, walking on through
        // disallowed nodes until the candidate list is full: a filtered
        // search comes back short only when the reachable graph runs out of
        // allowed keys.
        let wanted = k.min(size);
        let matches = index
            .filtered_search(query, wanted, |key| scope.allows(key))
            .map_err(|e| self.err_usearch("searching", e))?;
        let hits: Vec<(Key, f32)> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &d)| (key, 1.0 - d))
            .collect();
        if hits.len() < k {
            // Short: either fewer than k allowed vectors exist, or the filter
            // is so selective that the graph walk missed some. An exact scan
            // over the allowed keys settles it (and is cheap exactly when the
            // filter is selective).
            let allowed = scope.allowed_keys();
            if allowed.len() > hits.len() {
                return self.exact_scan(&index, query, k, scope, &allowed);
            }
        }
        Ok(hits)
    }

    /// Exact top-k among `allowed` (the scope's visible keys; those absent
    /// from the index are skipped), by cosine similarity.
    ///
    /// Two strategies, both without a second copy of the vectors (a side
    /// `HashMap<Key, Vec<f32>>` would double the memory of large indexes,
    /// 150 MB more at 100k x 384, to speed up a path that only runs on small
    /// indexes or for selective scopes):
    /// - few allowed keys: fetch each vector from usearch (`get`: a hash
    ///   lookup and a copy, ~0.5 us with its cache misses) and score it;
    /// - most keys allowed: let usearch rank the whole index with its SIMD
    ///   brute force (memory-bound: ~4 ms for 20k x 384), enough candidates
    ///   that `k` allowed ones are among them, then filter by the scope.
    ///   Fetching 20k vectors one by one would take ~10 ms.
    fn exact_scan(
        &self,
        index: &Index,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
        allowed: &[Key],
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        let size = index.size();
        if allowed.is_empty() || size == 0 || k == 0 {
            return Ok(Vec::new());
        }
        if allowed.len().saturating_mul(3) < size {
            return self.exact_by_key(index, query, k, allowed);
        }
        // Expect a share `allowed / size` of any ranking prefix to be
        // allowed; ask for twice what that needs, and more if it falls short.
        let mut want = (k.saturating_mul(size) / allowed.len())
            .saturating_mul(2)
            .saturating_add(16)
            .min(size);
        loop {
            // usearch keeps brute-force candidates in a sorted array, so a
            // long ranking costs more than fetching the allowed vectors.
            if want > EXACT_RANKING_MAX {
                return self.exact_by_key(index, query, k, allowed);
            }
            let matches = index
                .exact_search(query, want)
                .map_err(|e| self.err_usearch("scanning", e))?;
            let hits: Vec<(Key, f32)> = matches
                .keys
                .iter()
                .zip(&matches.distances)
                .filter(|(&key, _)| scope.allows(key))
                .take(k)
                .map(|(&key, &d)| (key, 1.0 - d))
                .collect();
            // A ranking of the whole index is complete, filtered or not.
            if hits.len() >= k || want >= size {
                return Ok(hits);
            }
            want = want.saturating_mul(4).min(size);
        }
    }

    /// Exact top-k over `keys`, fetching each vector from usearch.
    fn exact_by_key(
        &self,
        index: &Index,
        query: &[f32],
        k: usize,
        keys: &[Key],
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        let q_norm = dot(query, query).sqrt();
        let mut buf = vec![0f32; self.dims];
        let mut scored = Vec::with_capacity(keys.len());
        for &key in keys {
            let found = index
                .get(key, &mut buf)
                .map_err(|e| self.err_usearch("reading a vector", e))?;
            if found == 0 {
                continue;
            }
            let (d, v_norm) = dot_and_norm(query, &buf);
            let denom = q_norm * v_norm;
            let sim = if denom > 0.0 { d / denom } else { 0.0 };
            scored.push((key, sim));
        }
        Ok(top_k(scored, k))
    }

    fn persist(&self, seq: u64) -> Result<(), IndexError> {
        let mut on_disk = self.on_disk.lock();
        let path = self.dir.join(VECTORS_FILE);
        let state = {
            // Read lock: searches go on, applies wait until the file is written.
            let index = self.index.read();
            let generation = self.generation.load(Ordering::Acquire);
            match *on_disk {
                Some(d) if d.generation == generation && path.exists() => d,
                _ => {
                    let d = self.save(&index, &path, generation)?;
                    *on_disk = Some(d);
                    d
                }
            }
        };
        let meta = Meta {
            persisted_seq: seq,
            dims: self.dims,
            count: state.count,
            format_version: FORMAT_VERSION,
            file_bytes: state.file_bytes,
            checksum: state.checksum,
        };
        let bytes = serde_json::to_vec_pretty(&meta).expect("meta serialises");
        write_atomic(&self.dir.join(META_FILE), &bytes)
            .map_err(|e| self.err_io("writing vectors.meta.json", e))?;
        self.persisted_seq.store(seq, Ordering::Release);
        Ok(())
    }

    /// Write the index to `path` crash-safely and describe what was written.
    fn save(&self, index: &Index, path: &Path, generation: u64) -> Result<OnDisk, IndexError> {
        let tmp = tmp_path(path);
        let tmp_str = tmp.to_str().ok_or_else(|| IndexError::Invalid {
            index: NAME,
            path: self.dir.clone(),
            message: "index path is not valid UTF-8".into(),
        })?;
        index
            .save(tmp_str)
            .map_err(|e| self.err_usearch("saving vectors.usearch", e))?;
        let (file_bytes, checksum) = fs::File::open(&tmp)
            .and_then(|mut f| checksum_reader(&mut f))
            .map_err(|e| self.err_io("reading vectors.usearch back", e))?;
        engram_fs::install(&tmp, path).map_err(|e| self.err_io("installing vectors.usearch", e))?;
        Ok(OnDisk {
            generation,
            count: index.size(),
            file_bytes,
            checksum,
        })
    }

    fn clear(&self) -> Result<(), IndexError> {
        {
            let mut index = self.index.write();
            *index = new_index(&self.dir, self.dims, self.opts, self.threads)?;
            self.len.store(0, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.persist(0)
    }
}

#[async_trait]
impl DerivedIndex for UsearchIndex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn persisted_seq(&self) -> u64 {
        self.inner.persisted_seq.load(Ordering::Acquire)
    }

    async fn apply(&self, changes: &[Change]) -> engram_core::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        // Cheap: the documents are behind `Arc`s.
        let changes = changes.to_vec();
        Ok(offload(NAME, &self.inner.dir, move || inner.apply(&changes)).await?)
    }

    async fn persist(&self, seq: u64) -> engram_core::Result<()> {
        let inner = Arc::clone(&self.inner);
        Ok(offload(NAME, &self.inner.dir, move || inner.persist(seq)).await?)
    }

    async fn clear(&self) -> engram_core::Result<()> {
        let inner = Arc::clone(&self.inner);
        Ok(offload(NAME, &self.inner.dir, move || inner.clear()).await?)
    }

    fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }
}

#[async_trait]
impl VectorIndex for UsearchIndex {
    async fn search(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> engram_core::Result<Vec<(Key, f32)>> {
        // The scope is borrowed, so this cannot move to the blocking pool.
        Ok(run_blocking(|| self.inner.search(query, k, scope))?)
    }

    async fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> engram_core::Result<Vec<(Key, f32)>> {
        Ok(run_blocking(|| self.exact_search(query, k, scope))?)
    }
}

fn new_index(
    dir: &Path,
    dims: usize,
    opts: VectorOptions,
    threads: usize,
) -> Result<Index, IndexError> {
    let err = |op: &'static str, message: String| IndexError::Usearch {
        index: NAME,
        path: dir.to_path_buf(),
        op,
        message,
    };
    let index = Index::new(&index_options(dims, opts))
        .map_err(|e| err("creating the index", e.to_string()))?;
    index
        .reserve_capacity_and_threads(MIN_CAPACITY, threads)
        .map_err(|e| err("reserving capacity", e.to_string()))?;
    Ok(index)
}

fn index_options(dims: usize, opts: VectorOptions) -> IndexOptions {
    IndexOptions {
        dimensions: dims,
        metric: MetricKind::Cos,
        quantization: ScalarKind::F32,
        connectivity: opts.connectivity,
        expansion_add: opts.expansion_add,
        expansion_search: opts.expansion_search,
        multi: false,
    }
}

type Loaded = (Index, u64, Option<OnDisk>);

/// Load the persisted index. `Ok(None)`: nothing persisted. `Err(reason)`:
/// something is persisted but unusable.
fn load(
    dir: &Path,
    dims: usize,
    opts: VectorOptions,
    threads: usize,
) -> Result<Option<Loaded>, String> {
    let meta_path = dir.join(META_FILE);
    let path = dir.join(VECTORS_FILE);
    let meta_bytes = match fs::read(&meta_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if path.exists() {
                Err(format!("{VECTORS_FILE} exists without {META_FILE}"))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(format!("cannot read {META_FILE}: {e}")),
    };
    let meta: Meta =
        serde_json::from_slice(&meta_bytes).map_err(|e| format!("invalid {META_FILE}: {e}"))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (expected {FORMAT_VERSION})",
            meta.format_version
        ));
    }
    if meta.dims != dims {
        return Err(format!(
            "persisted vectors have {} dimensions, {dims} requested",
            meta.dims
        ));
    }
    let mut file = fs::File::open(&path).map_err(|e| format!("cannot open {VECTORS_FILE}: {e}"))?;
    let (file_bytes, sum) =
        checksum_reader(&mut file).map_err(|e| format!("cannot read {VECTORS_FILE}: {e}"))?;
    drop(file);
    if file_bytes != meta.file_bytes || sum != meta.checksum {
        return Err(format!(
            "{VECTORS_FILE} does not match {META_FILE} ({file_bytes} bytes, checksum {sum:016x}; \
             expected {} bytes, checksum {:016x})",
            meta.file_bytes, meta.checksum
        ));
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| "index path is not valid UTF-8".to_string())?;
    let header = Index::metadata(path_str).map_err(|e| format!("invalid {VECTORS_FILE}: {e}"))?;
    if header.dimensions != dims as u64
        || header.metric != MetricKind::Cos
        || header.quantization != ScalarKind::F32
        || header.multi
    {
        return Err(format!(
            "{VECTORS_FILE} holds an index of another kind ({} dims, {:?}, {:?}, multi {})",
            header.dimensions, header.metric, header.quantization, header.multi
        ));
    }
    let index = Index::new(&index_options(dims, opts)).map_err(|e| e.to_string())?;
    index
        .load(path_str)
        .map_err(|e| format!("cannot load {VECTORS_FILE}: {e}"))?;
    if index.size() != meta.count {
        return Err(format!(
            "{VECTORS_FILE} holds {} vectors, {META_FILE} says {}",
            index.size(),
            meta.count
        ));
    }
    index.change_expansion_add(opts.expansion_add);
    index.change_expansion_search(opts.expansion_search);
    let capacity = index.size().saturating_mul(2).max(MIN_CAPACITY);
    index
        .reserve_capacity_and_threads(capacity, threads)
        .map_err(|e| format!("cannot reserve capacity: {e}"))?;
    let on_disk = OnDisk {
        generation: 0,
        count: meta.count,
        file_bytes,
        checksum: sum,
    };
    Ok(Some((index, meta.persisted_seq, Some(on_disk))))
}

/// Length and a 64-bit checksum of a file's content. Not cryptographic: it
/// detects torn writes, truncation and bit rot, not tampering.
fn checksum_reader(r: &mut impl Read) -> std::io::Result<(u64, u64)> {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut total: u64 = 0;
    let mut pending: Vec<u8> = Vec::with_capacity(8);
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let mut data = &buf[..n];
        // Complete a word left over from the previous read.
        while !pending.is_empty() && !data.is_empty() {
            pending.push(data[0]);
            data = &data[1..];
            if pending.len() == 8 {
                let w = u64::from_le_bytes(pending[..].try_into().expect("8 bytes"));
                h = (h.rotate_left(23) ^ w).wrapping_mul(K);
                pending.clear();
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            h = (h.rotate_left(23) ^ w).wrapping_mul(K);
        }
        pending.extend_from_slice(words.remainder());
    }
    for (i, b) in pending.iter().enumerate() {
        h = (h.rotate_left(23) ^ ((*b as u64) << (8 * i))).wrapping_mul(K);
    }
    h ^= total;
    h = (h ^ (h >> 31)).wrapping_mul(K);
    Ok((total, h ^ (h >> 29)))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_and_norm(a, b).0
}

/// `(a . b, |b|)`, with 8 independent accumulators so it vectorises.
fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
    let mut d = [0f32; 8];
    let mut n = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            d[i] += x[i] * y[i];
            n[i] += y[i] * y[i];
        }
    }
    let mut dsum: f32 = d.iter().sum();
    let mut nsum: f32 = n.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        dsum += x * y;
        nsum += y * y;
    }
    (dsum, nsum.sqrt())
}

/// The `k` best by score (descending), ties broken by key.
fn top_k(mut scored: Vec<(Key, f32)>, k: usize) -> Vec<(Key, f32)> {
    let cmp = |a: &(Key, f32), b: &(Key, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, cmp);
        scored.truncate(k);
    }
    scored.sort_unstable_by(cmp);
    scored
}

/// A counting semaphore for blocking threads.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.cv.wait(&mut free);
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_read_sizes() {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = checksum_reader(&mut &data[..]).unwrap();
        for step in [1, 3, 7, 8, 13, 4096] {
            assert_eq!(checksum_reader(&mut Trickle(&data, step)).unwrap(), whole);
        }
        let mut flipped = data.clone();
        flipped[5000] ^= 1;
        assert_ne!(checksum_reader(&mut &flipped[..]).unwrap().1, whole.1);
        assert_ne!(
            checksum_reader(&mut &data[..data.len() - 1]).unwrap(),
            whole
        );
    }

    #[test]
    fn top_k_orders_by_score_then_key() {
        let v = vec![(5, 0.1), (1, 0.9), (3, 0.5), (2, 0.9), (4, -1.0)];
        assert_eq!(top_k(v.clone(), 3), vec![(1, 0.9), (2, 0.9), (3, 0.5)]);
        assert_eq!(top_k(v, 10).len(), 5);
    }

    #[test]
    fn dot_and_norm_handles_remainders() {
        let a: Vec<f32> = (0..11).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..11).map(|i| (i % 3) as f32).collect();
        let expect_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let expect_norm: f32 = b.iter().map(|y| y * y).sum::<f32>().sqrt();
        let (d, n) = dot_and_norm(&a, &b);
        assert!((d - expect_dot).abs() < 1e-4);
        assert!((n - expect_norm).abs() < 1e-5);
    }
}
