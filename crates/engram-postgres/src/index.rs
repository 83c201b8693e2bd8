//! The scale-out search indexes: pgvector HNSW and PostgreSQL full-text
//! search, both over the `memories` table the PostgreSQL store writes.
//!
//! Unlike the embedded indexes these derive nothing: the vector and the
//! `tsvector` are columns of the memory row, written in the store's
//! transactions, so a committed change is searchable at once, on every node.
//! The [`DerivedIndex`] side is therefore mostly bookkeeping:
//!
//! * `apply` and `persist` only advance the reported position;
//! * `persisted_seq` starts at the store's change-feed head read when the
//!   index is opened (`meta.seq`, the last committed change seq). Everything
//!   up to it is in the table, so it is exactly as "persisted" as the store.
//!   The engine starts following the feed there instead of replaying all
//!   history (with 0 every node start would re-read every memory, vectors
//!   included, through `changes_since` before `ready` passes), and
//!   `wait_searchable` still waits for the engine's indexer to reach a
//!   memory's seq, which only delays it by one indexer round. A value past
//!   the head (`u64::MAX`) would put the engine's feed position beyond every
//!   future change (its attribute table would miss them, and `u64::MAX` is
//!   not even a valid `bigint` seq for the store).
//! * `clear` (the engine's rebuild) rebuilds the PostgreSQL index with
//!   `REINDEX INDEX CONCURRENTLY` and resets the position to 0, so the
//!   engine replays the feed as the contract says.
//! * `len` is a cached `count(*)` of searchable rows, refreshed on open, on
//!   `clear`, by [`refresh_len`](PgVectorIndex::refresh_len) and every
//!   `len_refresh` by a background task (it is a sync fn and only feeds
//!   stats): it may lag by that much.
//!
//! A memory is searchable iff it is live, `ready`, has an embedding and the
//! search's [`Scope`] admits it (see [`crate::filter_sql`]); the scope is part
//! of the SQL, so `k` hits come back whenever `k` admitted memories exist.

use async_trait::async_trait;
use engram_core::context::KEYWORD_CONTEXT_WEIGHT;
use engram_core::{
    Change, ChangeOp, DerivedIndex, Error, Key, KeywordIndex, Result, Scope, VectorIndex,
};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::filter_sql::{push_scope, SEARCHABLE};

/// pgvector's limit on `hnsw.ef_search`.
const MAX_EF_SEARCH: usize = 1000;
/// pgvector's limit on the dimensions of an HNSW index over `vector`.
const MAX_HNSW_DIMS: usize = 2000;
/// First key of the advisory lock that serialises HNSW index builds across
/// nodes (the second is the dimension).
const BUILD_LOCK: i32 = 0x656e_6772; // "engr"
/// The GIN index over `memories.tsv` (created by the store's migration).
const TSV_INDEX: &str = "memories_tsv";

/// Map a database error to the engine's error type: connection, pool and
/// I/O failures (and server-side conditions that pass) are `Unavailable`,
/// a cancelled statement is a `Timeout`, anything else is `Internal`.
pub fn db_err(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable("postgres", e),
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // query_canceled: statement_timeout or a cancel request.
            Some("57014") => Error::Timeout(format!("postgres: {e}")),
            // Connection exceptions, insufficient resources, operator
            // intervention (shutdown, recovery), serialization failures.
            Some(c)
                if c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || c == "40001"
                    || c == "40P01" =>
            {
                Error::unavailable("postgres", e)
            }
            _ => Error::internal(format!("postgres: {e}")),
        },
        _ => Error::internal(format!("postgres: {e}")),
    }
}

/// What the two indexes share: the pool, the reported feed position and the
/// cached row count.
struct Common {
    pool: PgPool,
    position: AtomicU64,
    len: AtomicUsize,
}

impl Common {
    async fn new(pool: PgPool) -> Result<Common> {
        let head = feed_head(&pool).await?;
        Ok(Common {
            pool,
            position: AtomicU64::new(head),
            len: AtomicUsize::new(0),
        })
    }

    fn advance(&self, seq: u64) {
        self.position.fetch_max(seq, Ordering::AcqRel);
    }

    async fn count(&self, extra: &str) -> Result<usize> {
        let sql = format!("SELECT count(*) FROM memories WHERE {SEARCHABLE}{extra}");
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let n = usize::try_from(n).unwrap_or(0);
        self.len.store(n, Ordering::Release);
        Ok(n)
    }
}

/// The store's change-feed head: the last committed change seq.
async fn feed_head(pool: &PgPool) -> Result<u64> {
    let head: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT value FROM meta WHERE name = 'seq'), \
         (SELECT max(seq) FROM memories), 0)::int8",
    )
    .fetch_one(pool)
    .await
    .map_err(db_err)?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// Something whose row count a background task refreshes.
trait Counted: Send + Sync + 'static {
    fn refresh(self: Arc<Self>) -> impl std::future::Future<Output = Result<usize>> + Send;
}

/// Refresh `target`'s count every `every` until it is dropped.
fn spawn_len_refresh<T: Counted>(target: Weak<T>, every: Duration, what: &'static str) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(t) = target.upgrade() else { break };
            if let Err(e) = t.refresh().await {
                tracing::warn!(index = what, error = %e, "refreshing the index size failed");
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Vector index
// ---------------------------------------------------------------------------

/// HNSW build and search parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgVectorOptions {
    /// Graph degree (`m`, 2 to 100). Used when the index is created.
    pub m: usize,
    /// Candidate list size while building (`ef_construction`, at least
    /// `2 * m`, at most 1000). Used when the index is created.
    pub ef_construction: usize,
    /// Candidate list size while searching (`hnsw.ef_search`); raised to `k`
    /// (pgvector caps it at 1000).
    pub ef_search: usize,
    /// `hnsw.max_scan_tuples`: how many tuples an iterative (filtered) scan
    /// visits at most before giving up; `None` keeps pgvector's default
    /// (20 000). A scan that stops short is completed by an exact search.
    pub max_scan_tuples: Option<u64>,
    /// `maintenance_work_mem` for building the index (e.g. `"1GB"`); the
    /// build is much faster when the graph fits. `None`: the server's.
    pub build_memory: Option<String>,
    /// How often [`DerivedIndex::len`] is recounted; zero: only on open and
    /// by [`PgVectorIndex::refresh_len`].
    pub len_refresh: Duration,
    /// Only rows embedded by this model version are candidates, so a query
    /// embedded by one model is never compared with another's vectors (a
    /// node that has not yet seen a model switch finds nothing rather than
    /// the wrong memories). `None`: every row of the dimension.
    pub model_version: Option<String>,
}

impl Default for PgVectorOptions {
    fn default() -> Self {
        PgVectorOptions {
            m: 16,
            ef_construction: 128,
            ef_search: 200,
            max_scan_tuples: None,
            build_memory: None,
            len_refresh: Duration::from_secs(30),
            model_version: None,
        }
    }
}

/// Approximate nearest-neighbour search with pgvector's HNSW over
/// `memories.embedding` (cosine; score = cosine similarity = 1 - distance).
///
/// The index is an expression index over `embedding::vector(dims)`, partial
/// on live, ready rows of that dimension, named `memories_embedding_hnsw_<dims>`,
/// so several models' dimensions can coexist while re-embedding. Searches
/// run the scope's predicates inside the index scan with pgvector 0.8's
/// iterative scan (`relaxed_order`, re-sorted here); a scan that still comes
/// back short of `k` is completed by an exact search, so `k` hits come back
/// whenever `k` admitted memories exist.
///
/// Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct PgVectorIndex {
    inner: Arc<VectorInner>,
}

struct VectorInner {
    common: Common,
    dims: usize,
    opts: PgVectorOptions,
    index_name: String,
}

impl Counted for VectorInner {
    async fn refresh(self: Arc<Self>) -> Result<usize> {
        self.count().await
    }
}

impl VectorInner {
    async fn count(&self) -> Result<usize> {
        let extra = format!(" AND vector_dims(embedding) = {}", self.dims);
        self.common.count(&extra).await
    }

    /// The index expression; searches order by exactly this.
    fn distance_sql(&self) -> String {
        let d = self.dims;
        format!("(embedding::vector({d})) <=> ")
    }

    /// The partial index predicate; searches repeat it literally so that the
    /// planner can prove the index applies.
    fn predicate(&self) -> String {
        format!("{SEARCHABLE} AND vector_dims(embedding) = {}", self.dims)
    }

    /// Create the HNSW index unless a valid one exists (replacing an invalid
    /// one left by a failed concurrent build). Serialised across nodes by a
    /// session advisory lock, taken on a connection detached from the pool
    /// (set up by the pool's hooks, never returned to it): it is closed, and
    /// the lock released, even if this future is dropped.
    async fn ensure_index(&self) -> Result<()> {
        let mut conn = self.common.pool.acquire().await.map_err(db_err)?.detach();
        let result = self.ensure_index_on(&mut conn).await;
        let _ = conn.close().await;
        result
    }

    async fn ensure_index_on(&self, conn: &mut PgConnection) -> Result<()> {
        // Poll for the lock instead of waiting in pg_advisory_lock: a
        // concurrent build (CREATE INDEX CONCURRENTLY) waits for every
        // transaction running in the database, a blocked lock call included,
        // which would deadlock. Between polls this session is idle.
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(BUILD_LOCK)
                .bind(self.dims as i32)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
            if locked {
                break;
            }
            if self.index_valid(conn).await? == Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let valid = self.index_valid(conn).await?;
        if valid == Some(true) {
            return Ok(());
        }
        if valid == Some(false) {
            tracing::warn!(index = %self.index_name, "dropping an invalid HNSW index left by a failed build");
            let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", self.index_name);
            sqlx::query(&drop)
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
        if let Some(mem) = &self.opts.build_memory {
            sqlx::query("SELECT set_config('maintenance_work_mem', $1, false)")
                .bind(mem)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
        tracing::info!(index = %self.index_name, dims = self.dims, "building the HNSW index");
        let sql = format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON memories \
             USING hnsw ((embedding::vector({d})) vector_cosine_ops) \
             WITH (m = {m}, ef_construction = {efc}) WHERE {pred}",
            name = self.index_name,
            d = self.dims,
            m = self.opts.m,
            efc = self.opts.ef_construction,
            pred = self.predicate(),
        );
        sqlx::query(&sql)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Whether the HNSW index exists (`None` if not) and is valid.
    async fn index_valid(&self, conn: &mut PgConnection) -> Result<Option<bool>> {
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
            .bind(&self.index_name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)
    }

    fn check_query(&self, query: &[f32]) -> Result<()> {
        if query.len() != self.dims {
            return Err(Error::internal(format!(
                "pgvector index: expected a {}-dimensional query vector, got {}",
                self.dims,
                query.len()
            )));
        }
        Ok(())
    }

    /// The search statement. ANN: ordered by the index expression, so the
    /// planner can walk the HNSW index with the scope as a filter. Exact:
    /// distances of every admitted row are computed in a materialised CTE,
    /// which no index ordering can reach, then sorted.
    fn build<'a>(
        &self,
        qb: &mut QueryBuilder<'a, Postgres>,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
        exact: bool,
    ) {
        let d = self.dims;
        if exact {
            qb.push("WITH c AS MATERIALIZED (");
        }
        qb.push("SELECT key, ")
            .push(self.distance_sql())
            .push_bind(query.to_vec())
            .push(format!(
                "::real[]::vector({d}) AS distance FROM memories WHERE "
            ))
            .push(self.predicate())
            .push(" AND ");
        if let Some(v) = &self.opts.model_version {
            qb.push("embedding_version = ")
                .push_bind(v.clone())
                .push(" AND ");
        }
        push_scope(qb, scope);
        if exact {
            qb.push(") SELECT key, distance FROM c ORDER BY distance, key");
        } else {
            qb.push(" ORDER BY distance");
        }
        qb.push(" LIMIT ")
            .push_bind(i64::try_from(k).unwrap_or(i64::MAX));
    }

    /// Per-transaction pgvector settings of an ANN search.
    async fn configure(&self, conn: &mut PgConnection, k: usize) -> Result<()> {
        let ef = self.opts.ef_search.max(k).clamp(1, MAX_EF_SEARCH);
        let mut qb = QueryBuilder::<Postgres>::new("SELECT set_config('hnsw.ef_search', ");
        qb.push_bind(ef.to_string())
            .push(", true), set_config('hnsw.iterative_scan', 'relaxed_order', true)");
        if let Some(n) = self.opts.max_scan_tuples {
            qb.push(", set_config('hnsw.max_scan_tuples', ")
                .push_bind(n.to_string())
                .push(", true)");
        }
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
        Ok(())
    }

    async fn ann(&self, query: &[f32], k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>> {
        let mut tx = self.common.pool.begin().await.map_err(db_err)?;
        self.configure(&mut tx, k).await?;
        let mut qb = QueryBuilder::new("");
        self.build(&mut qb, query, k, scope, false);
        let rows = qb
            .build()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let mut hits = to_hits(rows)?;
        // relaxed_order: nearly sorted only.
        sort_hits(&mut hits);
        Ok(hits)
    }

    async fn exact(&self, query: &[f32], k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>> {
        let mut qb = QueryBuilder::new("");
        self.build(&mut qb, query, k, scope, true);
        let rows = qb
            .build()
            .persistent(false)
            .fetch_all(&self.common.pool)
            .await
            .map_err(db_err)?;
        let mut hits = to_hits(rows)?;
        sort_hits(&mut hits);
        Ok(hits)
    }
}

/// `(key, distance)` rows as `(key, cosine similarity)`; a NaN distance
/// (a zero vector) is no neighbour.
fn to_hits(rows: Vec<PgRow>) -> Result<Vec<(Key, f32)>> {
    let mut hits = Vec::with_capacity(rows.len());
    for row in rows {
        let key: i64 = row.try_get(0).map_err(db_err)?;
        let distance: Option<f64> = row.try_get(1).map_err(db_err)?;
        let Some(distance) = distance.filter(|d| !d.is_nan()) else {
            continue;
        };
        let score = (1.0 - distance).clamp(-1.0, 1.0) as f32;
        hits.push((key as Key, score));
    }
    Ok(hits)
}

/// Best first, ties by key.
fn sort_hits(hits: &mut [(Key, f32)]) {
    hits.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

impl PgVectorIndex {
    /// Open the index for `dims`-dimensional embeddings: check pgvector
    /// (0.8 or later, for iterative scans), create the HNSW index if it does
    /// not exist (`CREATE INDEX CONCURRENTLY`: writers are not blocked while
    /// it builds, but this call waits for the build), read the feed head and
    /// count the rows. An existing index keeps the `m` / `ef_construction`
    /// it was built with.
    pub async fn open(pool: PgPool, dims: usize, opts: PgVectorOptions) -> Result<Self> {
        if dims == 0 || dims > MAX_HNSW_DIMS {
            return Err(Error::invalid(format!(
                "pgvector index: dimensions must be 1 to {MAX_HNSW_DIMS}, got {dims}"
            )));
        }
        if !(2..=100).contains(&opts.m)
            || opts.ef_construction < 2 * opts.m
            || opts.ef_construction > 1000
            || opts.ef_search == 0
        {
            return Err(Error::invalid(format!(
                "pgvector index: invalid HNSW options {opts:?}: m must be 2 to 100, \
                 ef_construction 2*m to 1000, ef_search positive"
            )));
        }
        check_pgvector(&pool).await?;
        let inner = Arc::new(VectorInner {
            common: Common::new(pool).await?,
            dims,
            index_name: format!("memories_embedding_hnsw_{dims}"),
            opts,
        });
        inner.ensure_index().await?;
        inner.count().await?;
        spawn_len_refresh(Arc::downgrade(&inner), inner.opts.len_refresh, "pgvector");
        Ok(PgVectorIndex { inner })
    }

    pub fn dims(&self) -> usize {
        self.inner.dims
    }

    /// Name of the HNSW index in the database.
    pub fn index_name(&self) -> &str {
        &self.inner.index_name
    }

    pub fn options(&self) -> &PgVectorOptions {
        &self.inner.opts
    }

    /// Recount the searchable vectors now (what [`DerivedIndex::len`] reports).
    pub async fn refresh_len(&self) -> Result<usize> {
        self.inner.count().await
    }

    /// The plan PostgreSQL chooses for a search (`EXPLAIN`, no costs), with
    /// the same settings: for diagnostics and tests.
    pub async fn explain(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
        exact: bool,
    ) -> Result<String> {
        self.inner.check_query(query)?;
        let mut tx = self.inner.common.pool.begin().await.map_err(db_err)?;
        if !exact {
            self.inner.configure(&mut tx, k).await?;
        }
        let mut qb = QueryBuilder::new("EXPLAIN (COSTS OFF) ");
        self.inner.build(&mut qb, query, k.max(1), scope, exact);
        let lines: Vec<String> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)?;
        Ok(lines.join("\n"))
    }
}

async fn check_pgvector(pool: &PgPool) -> Result<()> {
    let version: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
    let Some(version) = version else {
        return Err(Error::internal(
            "pgvector index: the `vector` extension is not installed in this database",
        ));
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (0, 8) {
        return Err(Error::internal(format!(
            "pgvector index: needs pgvector 0.8 or later (iterative index scans), found {version}"
        )));
    }
    Ok(())
}

#[async_trait]
impl DerivedIndex for PgVectorIndex {
    fn name(&self) -> &'static str {
        "pgvector"
    }

    fn persisted_seq(&self) -> u64 {
        self.inner.common.position.load(Ordering::Acquire)
    }

    async fn apply(&self, changes: &[Change]) -> Result<()> {
        // The store wrote the vectors with the changes themselves.
        if let Some(last) = changes.last() {
            self.inner.common.advance(last.seq);
        }
        Ok(())
    }

    async fn persist(&self, seq: u64) -> Result<()> {
        self.inner.common.advance(seq);
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.inner.ensure_index().await?;
        let reindex = format!("REINDEX INDEX CONCURRENTLY {}", self.inner.index_name);
        sqlx::raw_sql(&reindex)
            .execute(&self.inner.common.pool)
            .await
            .map_err(db_err)?;
        self.inner.common.position.store(0, Ordering::Release);
        self.inner.count().await?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.inner.common.len.load(Ordering::Acquire)
    }
}

#[async_trait]
impl VectorIndex for PgVectorIndex {
    async fn search(&self, query: &[f32], k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>> {
        self.inner.check_query(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let hits = self.inner.ann(query, k, scope).await?;
        if hits.len() < k {
            // Short: fewer than k admitted rows exist, or the iterative scan
            // hit max_scan_tuples before finding k. The exact search settles
            // it, and is cheap exactly when few rows are admitted.
            return self.inner.exact(query, k, scope).await;
        }
        Ok(hits)
    }

    async fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>> {
        self.inner.check_query(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        self.inner.exact(query, k, scope).await
    }
}

// ---------------------------------------------------------------------------
// Keyword index
// ---------------------------------------------------------------------------

/// Options of the keyword index.
#[derive(Debug, Clone, PartialEq)]
pub struct PgKeywordOptions {
    /// How often [`DerivedIndex::len`] is recounted and the lexemes'
    /// frequencies re-read from PostgreSQL's statistics; zero: only on open
    /// and by [`PgKeywordIndex::refresh_len`] / [`PgKeywordIndex::refresh_stats`].
    pub len_refresh: Duration,
    /// How many rows a search may rank (see [`PgKeywordIndex`]): a query
    /// matches the OR of its rarest lexemes while their document frequencies
    /// add up to at most this; the others only add to a row's rank. 0: no
    /// bound (every query matches the OR of all its lexemes).
    pub match_budget: u64,
    /// Lexemes in at least this fraction of the rows (from 1 up: this many
    /// rows) never match on their own, whatever the budget (as
    /// Elasticsearch's `cutoff_frequency`). 0: off (the default; the budget
    /// bounds the cost without dropping a word because the corpus is small).
    pub common_cutoff: f64,
}

impl Default for PgKeywordOptions {
    fn default() -> Self {
        PgKeywordOptions {
            len_refresh: Duration::from_secs(30),
            match_budget: DEFAULT_MATCH_BUDGET,
            common_cutoff: 0.0,
        }
    }
}

/// The default [`PgKeywordOptions::match_budget`] (BENCHMARKS.md, scale-out
/// mode: quality on LoCoMo dev and the cost of a ranked row).
pub const DEFAULT_MATCH_BUDGET: u64 = 2_000;

/// Keyword search with PostgreSQL full-text search over `memories.tsv`
/// (`to_tsvector('english', ...)` of a message's speaker and the text with
/// weight A, and of the context the engine writes with weight B; GIN-indexed).
///
/// The query is analysed with the same `english` configuration. A row
/// scores the sum over the query's lexemes of BM25's inverse document
/// frequency times PostgreSQL's `ts_rank` of that lexeme (its weighted term
/// frequency, divided by 1 + log of the row's length): a rare word (a name)
/// counts for more than a word found in many rows, as in the embedded mode's
/// tantivy BM25. Measured on the LoCoMo dev conversations (BENCHMARKS.md),
/// hybrid evidence fraction@10 0.679 with cover density (`ts_rank_cd`, no
/// IDF) → 0.800 with this and the match budget below. Scores are only
/// comparable within one query, which is all rank fusion needs.
///
/// **Which rows are ranked: a budget of rows.** PostgreSQL has no top-k
/// pruning (BM25 engines skip posting lists with block-max WAND): the
/// ranking runs on every matching row, and a query word found in most rows
/// makes a search rank most of the table (measured: 178 ms for 30k rows,
/// all matching). So the cost is bounded in rows, as a BM25 engine's
/// rarest-first evaluation would: the query's lexemes are taken from the
/// rarest up while their document frequencies add up to at most
/// [`PgKeywordOptions::match_budget`], and a row must contain one of those;
/// the commoner lexemes only add to its rank. A row holding only commoner
/// words of the query is what BM25 scores lowest, so this trims the tail.
/// When even the rarest lexeme is over the budget, a row must contain all
/// the query's lexemes (AND, which the GIN index intersects), and a search
/// may return fewer than `k` hits (hybrid search still has the vector list).
///
/// A budget in rows, not a fraction of the table (an earlier version made
/// lexemes in over 1% of the rows "common", as Elasticsearch's common
/// terms): with a message's neighbours in its row, content words pass 1% of
/// a small corpus, and a question made of them matched almost nothing
/// (LoCoMo dev hybrid evidence fraction@10 0.693, against 0.800 with no
/// bound). The fraction rule is still there, off by default
/// ([`PgKeywordOptions::common_cutoff`]).
///
/// Document frequencies come from PostgreSQL's own column statistics
/// (`pg_stats` `most_common_elems` of `tsv`, kept by ANALYZE / autovacuum)
/// for the lexemes listed there, and are counted through the GIN index for
/// the others (rare by construction). Statistics are table-wide, across
/// tenants; before the first ANALYZE every lexeme is counted.
///
/// Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct PgKeywordIndex {
    inner: Arc<KeywordInner>,
}

struct KeywordInner {
    common: Common,
    opts: PgKeywordOptions,
    /// The lexemes' frequencies, from the last statistics read.
    stats: std::sync::RwLock<Arc<TermStats>>,
}

impl Counted for KeywordInner {
    async fn refresh(self: Arc<Self>) -> Result<usize> {
        self.read_stats().await?;
        self.common.count("").await
    }
}

impl KeywordInner {
    /// Re-read the lexemes' frequencies from `pg_stats`.
    /// `most_common_elem_freqs` holds one frequency per element, then min,
    /// max and null fraction: the elements padded with NULL by `unnest` are
    /// skipped. The table's row estimate turns a cutoff in rows into a
    /// fraction.
    async fn read_stats(&self) -> Result<usize> {
        let rows: Vec<(String, f32)> = sqlx::query_as(
            "SELECT x.e, x.f FROM pg_stats s CROSS JOIN LATERAL \
             unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS x(e, f) \
             WHERE s.schemaname = current_schema() AND s.tablename = 'memories' \
             AND s.attname = 'tsv' AND x.e IS NOT NULL",
        )
        .fetch_all(&self.common.pool)
        .await
        .map_err(db_err)?;
        let reltuples: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'memories'::regclass")
                .fetch_one(&self.common.pool)
                .await
                .map_err(db_err)?;
        let cutoff = self.opts.common_cutoff;
        let common_from = if cutoff <= 0.0 {
            f32::INFINITY
        } else if cutoff < 1.0 {
            cutoff as f32
        } else {
            cutoff as f32 / reltuples.max(1.0)
        };
        let n = rows.len();
        let (lexemes, freqs) = rows.into_iter().unzip();
        *self.stats.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(TermStats {
            lexemes,
            freqs,
            common_from,
        });
        Ok(n)
    }

    fn stats(&self) -> Arc<TermStats> {
        self.stats.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PgKeywordIndex {
    pub async fn open(pool: PgPool) -> Result<Self> {
        Self::open_with(pool, PgKeywordOptions::default()).await
    }

    pub async fn open_with(pool: PgPool, opts: PgKeywordOptions) -> Result<Self> {
        if !opts.common_cutoff.is_finite() || opts.common_cutoff < 0.0 {
            return Err(Error::invalid(format!(
                "keyword index: common_cutoff must be 0 (off), a fraction below 1 or a \
                 number of rows, got {}",
                opts.common_cutoff
            )));
        }
        let every = opts.len_refresh;
        let inner = Arc::new(KeywordInner {
            common: Common::new(pool).await?,
            opts,
            stats: std::sync::RwLock::new(Arc::default()),
        });
        inner.read_stats().await?;
        inner.common.count("").await?;
        spawn_len_refresh(Arc::downgrade(&inner), every, "postgres-fts");
        Ok(PgKeywordIndex { inner })
    }

    /// Recount the searchable documents now (what [`DerivedIndex::len`] reports).
    pub async fn refresh_len(&self) -> Result<usize> {
        self.inner.common.count("").await
    }

    /// Re-read the lexemes' frequencies from PostgreSQL's statistics now
    /// (also done every `len_refresh`); returns how many are listed.
    pub async fn refresh_stats(&self) -> Result<usize> {
        self.inner.read_stats().await
    }

    /// The lexemes currently counted as common
    /// ([`PgKeywordOptions::common_cutoff`]; none while it is off).
    pub fn common_lexemes(&self) -> Vec<String> {
        let stats = self.inner.stats();
        stats
            .lexemes
            .iter()
            .zip(&stats.freqs)
            .filter(|(_, f)| **f >= stats.common_from)
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// The plan PostgreSQL chooses for a search (`EXPLAIN`, no costs).
    pub async fn explain(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<String> {
        let mut qb = QueryBuilder::new("EXPLAIN (COSTS OFF) ");
        build_keyword(
            &mut qb,
            query,
            &self.inner.stats(),
            self.inner.opts.match_budget,
            self.len(),
            k.max(1),
            scope,
        );
        let lines: Vec<String> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&self.inner.common.pool)
            .await
            .map_err(db_err)?;
        Ok(lines.join("\n"))
    }
}

/// The lexemes PostgreSQL's statistics list, the fraction of rows holding
/// each, and the fraction from which one is common (infinite: none is).
#[derive(Debug)]
struct TermStats {
    lexemes: Vec<String>,
    freqs: Vec<f32>,
    common_from: f32,
}

impl Default for TermStats {
    fn default() -> Self {
        TermStats {
            lexemes: Vec::new(),
            freqs: Vec::new(),
            common_from: f32::INFINITY,
        }
    }
}

/// A lexeme's document frequency is counted up to this many rows (a lexeme
/// PostgreSQL's statistics list takes its frequency from them).
const DF_COUNT_CAP: i64 = 100_000;

/// `ts_rank` normalisation: rank / (1 + log(document length)).
const RANK_NORMALIZATION: i32 = 1;

/// The keyword search statement. The tsqueries are built inside PostgreSQL
/// from the lexemes of `to_tsvector('english', $query)`, each quoted as a
/// tsquery literal (quotes and backslashes doubled): the user's text is only
/// ever a bound parameter and is never parsed as tsquery syntax.
///
/// `match_q`, which selects the rows to rank, is the OR of the rarest
/// lexemes whose document frequencies add up to at most `budget` (0: all),
/// leaving out the common ones ([`TermStats::common_from`]); when none
/// qualifies, the AND of all the lexemes; no lexemes (empty or stopwords
/// only): NULL, which matches nothing.
///
/// A matching row scores `Σ idf(t) · ts_rank(weights, tsv, t)` over all the
/// query's lexemes `t`, with BM25's `idf(t) = ln(1 + (N − df + 0.5) / (df +
/// 0.5))` (`N`: searchable rows; `df`: rows holding `t`, from the statistics
/// for a lexeme they list, else counted, which the GIN index makes cheap for
/// the rare ones). Without it a word found in every other message weighs as
/// much as a name found once.
fn build_keyword<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    query: &str,
    stats: &TermStats,
    budget: u64,
    total: usize,
    k: usize,
    scope: &Scope<'_>,
) {
    qb.push(
        "WITH l AS (SELECT lex, \
         '''' || replace(replace(lex, chr(92), chr(92) || chr(92)), '''', '''''') || '''' AS lit \
         FROM unnest(tsvector_to_array(to_tsvector('english', ",
    )
    // PostgreSQL text cannot hold NUL; it separates words like a space.
    .push_bind(query.replace('\0', " "))
    .push("::text))) AS lex), c AS (SELECT * FROM unnest(")
    .push_bind(stats.lexemes.clone())
    .push("::text[], ")
    .push_bind(stats.freqs.clone())
    .push("::float4[]) AS c(e, f)), n AS (SELECT ")
    .push_bind(total as f64)
    // Materialised: each lexeme's frequency is looked up or counted once
    // per search (COALESCE counts only the lexemes the statistics miss).
    .push(
        "::float8 AS total), \
         d AS MATERIALIZED (SELECT l.lex, l.lit, s.f, COALESCE(s.f * n.total, \
         (SELECT count(*) FROM (SELECT 1 FROM memories m WHERE m.tsv @@ l.lit::tsquery LIMIT ",
    )
    .push_bind(DF_COUNT_CAP)
    .push(
        ") x))::float8 AS df FROM l CROSS JOIN n \
         LEFT JOIN LATERAL (SELECT c.f FROM c WHERE c.e = l.lex LIMIT 1) s ON true), \
         r AS (SELECT lex, lit, COALESCE(f >= ",
    )
    .push_bind(stats.common_from)
    .push("::float4, false) AS common, df FROM d), ")
    // The running total of document frequencies, rarest first, over the
    // lexemes that may match on their own.
    .push(
        "b AS (SELECT lit, sum(df) OVER (ORDER BY df, lex ROWS UNBOUNDED PRECEDING) AS upto \
         FROM r WHERE NOT common), \
         q AS (SELECT COALESCE((SELECT string_agg(lit, ' | ') FROM b WHERE ",
    )
    .push_bind(budget as f64)
    // Each tsquery is computed once (an InitPlan), so that `tsv @@ match_q`
    // is an index condition on the GIN index.
    .push("::float8 = 0 OR upto <= ")
    .push_bind(budget as f64)
    .push(
        "::float8), string_agg(lit, ' & '))::tsquery AS match_q FROM r), \
         w AS MATERIALIZED (SELECT d.lit::tsquery AS tq, \
         ln(1 + (GREATEST(n.total, d.df) - d.df + 0.5) / (d.df + 0.5)) AS idf \
         FROM d CROSS JOIN n) \
         SELECT key, (SELECT sum(w.idf * ts_rank(",
    )
    // Weights of D, C, B (a message's context) and A (its speaker and text).
    .push_bind(vec![0.1f32, 0.2, KEYWORD_CONTEXT_WEIGHT, 1.0])
    .push("::float4[], memories.tsv, w.tq, ")
    .push_bind(RANK_NORMALIZATION)
    .push(
        ")) FROM w)::float4 AS score FROM memories \
         WHERE tsv @@ (SELECT match_q FROM q) AND ",
    )
    .push(SEARCHABLE)
    .push(" AND ");
    push_scope(qb, scope);
    qb.push(" ORDER BY score DESC, key LIMIT ")
        .push_bind(i64::try_from(k).unwrap_or(i64::MAX));
}

#[async_trait]
impl DerivedIndex for PgKeywordIndex {
    fn name(&self) -> &'static str {
        "postgres-fts"
    }

    fn persisted_seq(&self) -> u64 {
        self.inner.common.position.load(Ordering::Acquire)
    }

    async fn apply(&self, changes: &[Change]) -> Result<()> {
        // The tsvector is a generated column of the memory row; what the
        // engine adds beside the text (a message's context) is written to
        // the row's `context` column, which the tsvector covers with weight B.
        let mut keys = Vec::new();
        let mut contexts = Vec::new();
        for c in changes {
            if let ChangeOp::Upsert(d) = &c.op {
                if d.attrs.session.is_some() {
                    keys.push(i64::try_from(c.key).unwrap_or(i64::MAX));
                    contexts.push(d.context.replace('\0', " "));
                }
            }
        }
        if !keys.is_empty() {
            sqlx::query(
                "UPDATE memories m SET context = u.ctx \
                 FROM unnest($1::bigint[], $2::text[]) AS u(key, ctx) \
                 WHERE m.key = u.key AND m.context IS DISTINCT FROM u.ctx",
            )
            .bind(&keys)
            .bind(&contexts)
            .execute(&self.inner.common.pool)
            .await
            .map_err(db_err)?;
        }
        if let Some(last) = changes.last() {
            self.inner.common.advance(last.seq);
        }
        Ok(())
    }

    async fn persist(&self, seq: u64) -> Result<()> {
        self.inner.common.advance(seq);
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let reindex = format!("REINDEX INDEX CONCURRENTLY {TSV_INDEX}");
        sqlx::raw_sql(&reindex)
            .execute(&self.inner.common.pool)
            .await
            .map_err(db_err)?;
        self.inner.common.position.store(0, Ordering::Release);
        self.inner.common.count("").await?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.inner.common.len.load(Ordering::Acquire)
    }
}

#[async_trait]
impl KeywordIndex for PgKeywordIndex {
    async fn search(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<Vec<(Key, f32)>> {
        if k == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let stats = self.inner.stats();
        let mut qb = QueryBuilder::new("");
        build_keyword(
            &mut qb,
            query,
            &stats,
            self.inner.opts.match_budget,
            self.len(),
            k,
            scope,
        );
        let rows = qb
            .build()
            .persistent(false)
            .fetch_all(&self.inner.common.pool)
            .await
            .map_err(db_err)?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in rows {
            let key: i64 = row.try_get(0).map_err(db_err)?;
            let score: f32 = row.try_get(1).map_err(db_err)?;
            hits.push((key as Key, score));
        }
        Ok(hits)
    }
}
