//! engram-postgres: the scale-out authoritative store of engram.
//!
//! [`PgStore`] implements [`engram_core::Store`] on PostgreSQL (with the
//! pgvector extension): memories, namespaces, the embedding job outbox, the
//! audit hash chains, API keys and the change feed that derived indexes
//! replay. Several engram nodes may share one database; every guarantee
//! below holds across nodes, not just within one process.
//!
//! # Durability and ordering
//! - A call that writes returns only after its transaction has committed, so
//!   an acknowledged write is as durable as the server's commit (with the
//!   default `synchronous_commit = on` the WAL is flushed first; a warning is
//!   logged at connect time if the server runs with it `off`).
//! - Transactions run at `READ COMMITTED`. Every change to a memory takes its
//!   seq from the single `meta.seq` row with
//!   `UPDATE meta SET value = value + n WHERE name = 'seq' RETURNING value`.
//!   The row lock taken by that UPDATE is held until commit, so transactions
//!   that change memories hand out seqs one after another, and one that took
//!   a seq commits (and becomes visible) before the next one can take its
//!   own: seq order is commit order, and
//!   [`Store::changes_since`](engram_core::Store::changes_since) (rows with
//!   `seq > after` by seq) never skips a committed change. A rolled-back
//!   transaction gives its seqs back, so the feed has no holes either.
//! - The counter is a global serialization point for memory writes, so every
//!   transaction takes it as late as possible: lookups, row locks, job
//!   changes and the audit events (which only describe the change) come
//!   first; the seq, the one statement writing the memory rows that carry
//!   it, and the commit last.
//! - Row locks are always taken in the same order: memory rows (by key, or
//!   `SKIP LOCKED` by the sweepers, which never wait), job rows, namespace
//!   and API key rows, audit heads (by tenant), then the seq row. Concurrent
//!   writers queue instead of deadlocking. Should PostgreSQL still report a
//!   deadlock or a serialization failure, the call fails as
//!   [`Error::Unavailable`](engram_core::Error::Unavailable) and may be retried.
//! - Dedupe: partial unique indexes allow one live memory per checksum and
//!   per client id in a namespace. An insert looks its items up first; if a
//!   concurrent transaction commits the same memory meanwhile, the insert hits
//!   the index, rolls back and runs again, and then returns the other memory
//!   (`created: false`) instead of failing.
//! - Connection failures, a server shutting down or an exhausted pool are
//!   [`Error::Unavailable`](engram_core::Error::Unavailable) (503 with
//!   `Retry-After`), never internal errors.
//!
//! # Jobs
//! A memory has at most one queued or running embedding job; a text change
//! replaces it with a fresh job (new id), so a late completion or failure of
//! the old job never touches the new one. Claims lock job rows with
//! `FOR UPDATE SKIP LOCKED`, so workers on any number of nodes never get the
//! same job while its lease runs. `published_at` makes the jobs table the
//! transactional outbox of an external queue: jobs not yet announced (or
//! rescheduled by a failure or a retry since) are listed by
//! [`Store::unpublished_jobs`](engram_core::Store::unpublished_jobs).
//!
//! # Audit
//! Each tenant's hash chain head lives in `audit_heads`; appends lock that row
//! (`SELECT ... FOR UPDATE`) in the same transaction as the change they
//! record, so a tenant's chain grows strictly in order across nodes. Events
//! are built by [`engram_core::AuditEvent::chain`] exactly as the SQLite store
//! does, and `details` is kept as the JSON text that was hashed.
//!
//! # Schema
//! See `migrations/`: native `timestamptz` (microsecond precision: times are
//! truncated to whole microseconds before they are stored, as in SQLite),
//! `uuid`, `jsonb`, `text[]` tags and pgvector's `vector` for the embedding.
//! [`PgStore::migrate`] applies it under a PostgreSQL advisory lock, so nodes
//! starting together are safe.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

mod codec;
mod error;
mod feed;
mod governance;
mod insert;
mod jobs;
mod memories;
mod models;
mod quarantine;
mod store;

pub mod filter_sql;
pub mod index;

pub use error::PgError;
pub use index::{
    PgKeywordIndex, PgKeywordOptions, PgVectorIndex, PgVectorOptions, DEFAULT_MATCH_BUDGET,
};

type Result<T, E = PgError> = std::result::Result<T, E>;

/// Key of the session advisory lock held while migrating (any fixed value
/// works; this one is "engram" in ASCII).
const MIGRATE_LOCK: i64 = 0x656e_6772_616d;

/// Tuning knobs for [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Largest number of connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long a call waits for a connection (including connecting to the
    /// server) before the store is reported unavailable.
    pub acquire_timeout: Duration,
    /// Server-side limit on any one statement (`statement_timeout`); `None`
    /// keeps the server's setting.
    pub statement_timeout: Option<Duration>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: None,
        }
    }
}

/// The PostgreSQL-backed [`engram_core::Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user@host:port/db`) and
    /// check that it answers. Does not migrate: call [`PgStore::migrate`].
    pub async fn connect(url: &str, opts: PgOptions) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?, opts).await
    }

    /// [`PgStore::connect`] with parsed connect options.
    pub async fn connect_with(options: PgConnectOptions, opts: PgOptions) -> Result<Self> {
        let store = Self::connect_lazy_with(options, opts);
        let mut conn = store.pool.acquire().await?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut *conn)
            .await?;
        if sync == "off" {
            tracing::warn!(
                "postgres runs with synchronous_commit = off: acknowledged writes may be lost in a crash"
            );
        }
        tracing::debug!("postgres store connected");
        Ok(store)
    }

    /// A store whose connections are opened on first use: nothing is checked
    /// now, and an unreachable server shows up as
    /// [`Error::Unavailable`](engram_core::Error::Unavailable) on calls.
    pub fn connect_lazy(url: &str, opts: PgOptions) -> Result<Self> {
        Ok(Self::connect_lazy_with(
            PgConnectOptions::from_str(url)?,
            opts,
        ))
    }

    /// [`PgStore::connect_lazy`] with parsed connect options.
    pub fn connect_lazy_with(options: PgConnectOptions, opts: PgOptions) -> Self {
        let mut options = if options.get_application_name().is_none() {
            options.application_name("engram")
        } else {
            options
        };
        if let Some(t) = opts.statement_timeout {
            options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .min_connections(opts.min_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(options);
        PgStore { pool }
    }

    /// A store on an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The connection pool, shared with the pgvector and full-text indexes.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply pending schema migrations. Holds a session advisory lock on a
    /// connection of its own meanwhile, so that nodes starting together
    /// migrate one after another (the later ones find nothing to do). The
    /// connection is closed afterwards, which releases every lock it held
    /// even if migrating failed half-way.
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?.detach();
        let result = migrate_locked(&mut conn).await;
        if let Err(e) = sqlx::Connection::close(conn).await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        result
    }

    /// Close every connection (waiting for in-flight calls). Later calls fail
    /// as unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begin a write transaction.
    async fn begin_write(&self) -> Result<WriteTx> {
        let tx = self.pool.begin().await?;
        Ok(WriteTx {
            tx,
            heads: HashMap::new(),
            seq_taken: false,
        })
    }
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await?;
    sqlx::migrate!("./migrations").run(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A write transaction that hands out change sequence numbers and appends
/// audit events.
///
/// Lock order, kept by every caller so that writers never deadlock: the
/// `embedding_models` rows (by those that depend on the active model), memory
/// rows (by key), job rows, namespace and API key rows (new namespaces by
/// tenant and name), audit heads (by tenant, all of a transaction's at once:
/// [`WriteTx::audit`] before any seq is taken), and last the seq row
/// ([`WriteTx::next_seqs`]).
pub(crate) struct WriteTx {
    tx: Transaction<'static, Postgres>,
    /// Chain heads locked by this transaction: `(n, hash)` of the last event.
    heads: HashMap<String, (u64, String)>,
    /// Whether the seq row is locked (taken a seq) already.
    seq_taken: bool,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The next `n` change sequence numbers (`n >= 1`). The first call locks
    /// the counter row until commit, which orders this transaction's commit
    /// after every earlier seq-taking transaction and before every later one.
    pub(crate) async fn next_seqs(&mut self, n: usize) -> Result<RangeInclusive<i64>> {
        let n = i64::try_from(n.max(1)).map_err(|_| PgError::corrupt("too many seqs"))?;
        let last: i64 = sqlx::query_scalar(
            "UPDATE meta SET value = value + $1 WHERE name = 'seq' RETURNING value",
        )
        .bind(n)
        .fetch_one(&mut *self.tx)
        .await?;
        self.seq_taken = true;
        Ok(last - n + 1..=last)
    }

    /// The next change sequence number.
    pub(crate) async fn next_seq(&mut self) -> Result<i64> {
        Ok(*self.next_seqs(1).await?.start())
    }

    /// Lock the audit chain heads of these tenants (creating missing ones),
    /// all in one go and in tenant order. Call before taking a seq.
    pub(crate) async fn lock_heads<'a>(
        &mut self,
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let missing: BTreeSet<&str> = tenants
            .into_iter()
            .filter(|t| !self.heads.contains_key(*t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        debug_assert!(
            !self.seq_taken,
            "audit heads must be locked before the seq row"
        );
        let missing: Vec<&str> = missing.into_iter().collect();
        sqlx::query(
            "INSERT INTO audit_heads (tenant, n, hash) \
             SELECT t, 0, $2 FROM unnest($1::text[]) AS t ORDER BY t \
             ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(&missing)
        .bind(engram_core::audit::GENESIS)
        .execute(&mut *self.tx)
        .await?;
        let rows = sqlx::query(
            "SELECT tenant, n, hash FROM audit_heads WHERE tenant = ANY($1) \
             ORDER BY tenant FOR UPDATE",
        )
        .bind(&missing)
        .fetch_all(&mut *self.tx)
        .await?;
        for row in &rows {
            let tenant: String = row.try_get("tenant")?;
            let n = codec::unsigned(row.try_get("n")?, "audit_heads.n")?;
            self.heads.insert(tenant, (n, row.try_get("hash")?));
        }
        if let Some(t) = missing.iter().find(|t| !self.heads.contains_key(**t)) {
            return Err(PgError::corrupt(format!("audit head of {t:?} vanished")));
        }
        Ok(())
    }

    /// Remove every job of these memories (done, superseded, or nothing left
    /// to embed).
    pub(crate) async fn drop_jobs(&mut self, memory_keys: &[i64]) -> Result<()> {
        if memory_keys.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM jobs WHERE memory_key = ANY($1)")
            .bind(memory_keys)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Current wall-clock time, whole microseconds, for columns the trait gives no `now` for.
fn wall_clock() -> DateTime<Utc> {
    codec::ts(Utc::now())
}
