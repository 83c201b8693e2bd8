//! engram-sqlite: the embedded authoritative store of engram.
//!
//! [`SqliteStore`] implements [`engram_core::Store`] on one SQLite file:
//! memories, namespaces, the embedding job outbox and the change feed that
//! derived indexes replay.
//!
//! # Durability and ordering
//! - The database runs in WAL mode with `synchronous=FULL` and foreign keys on;
//!   a call that writes returns only after its transaction has committed, so an
//!   acknowledged write survives a crash or power loss.
//! - Every write goes through ONE writer connection (a pool of size 1) inside a
//!   `BEGIN IMMEDIATE` transaction, so writes are serialised in-process.
//!   Every change to a memory takes the next value of the `meta.seq` counter in
//!   the same transaction; with a single writer, seq order is commit order,
//!   and [`Store::changes_since`](engram_core::Store::changes_since) (rows with
//!   `seq > after` by seq) never misses a committed change.
//! - Reads use a separate pool of reader connections, which WAL lets run
//!   concurrently with the writer.
//! - The counter is read inside the `BEGIN IMMEDIATE` transaction, so even two
//!   stores (or processes) on the same file hand out unique seqs in commit order.
//!
//! # Jobs
//! A memory has at most one queued or running embedding job. A text change
//! replaces it with a fresh job (new id) rather than resetting the old row, so
//! a late completion or failure of the old job can never touch the new one:
//! a completion whose checksum no longer matches is dropped, a failure of an
//! unknown job is ignored. A completion that matches marks the memory ready
//! and removes all its jobs. A soft delete removes all jobs of the memory.
//!
//! # Schema
//! See `migrations/`: `meta` (the seq counter), `namespaces`, `memories`
//! (times as integer microseconds since the epoch, JSON columns as text, the
//! vector as a little-endian f32 blob) and `jobs`; since version 2 also
//! `audit` + `audit_heads` (the hash chains), `api_keys` and the retention columns;
//! version 3 the outbox column `jobs.published_at`; version 4 `jobs.traceparent`.

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::path::{Path, PathBuf};
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

pub use error::SqliteError;

type Result<T, E = SqliteError> = std::result::Result<T, E>;

/// Tuning knobs for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Size of the reader pool.
    pub readers: u32,
    /// How long SQLite waits on a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// How long a call waits for a free connection before the store is reported unavailable.
    pub acquire_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// What a database file holds, as read by [`SqliteStore::inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    /// Rows in `memories`, soft-deleted ones included.
    pub memories: u64,
    /// Memories not deleted.
    pub live: u64,
    /// The last change seq: the snapshot holds every change up to it.
    pub max_seq: u64,
    pub schema_version: u64,
    pub audit_events: u64,
}

/// The SQLite-backed [`engram_core::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write transaction runs here.
    writer: SqlitePool,
    /// Read-only work (it never writes, though the connections could).
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and apply pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with explicit options.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .pragma("temp_store", "memory")
            // Page cache cap per connection (KiB when negative); the writer's is larger.
            .pragma("cache_size", "-32768");

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .pragma("cache_size", "-65536")
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;

        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base)
            .await?;

        tracing::debug!(path = %path.display(), "sqlite store open");
        Ok(SqliteStore {
            writer,
            reader,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close every connection (waiting for in-flight calls). Later calls fail
    /// as unavailable.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Write a consistent copy of the database to `out` (SQLite's
    /// `VACUUM INTO`) while writers go on: the copy is one read transaction's
    /// view, compacted, without WAL. `out` must not exist. Returns what
    /// [`SqliteStore::inspect`] reads from the copy.
    pub async fn snapshot(&self, out: &Path) -> Result<SnapshotInfo> {
        let target = out
            .to_str()
            .ok_or_else(|| SqliteError::Encode(format!("path {}", out.display())))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.reader)
            .await?;
        Self::inspect(out).await
    }

    /// Check a database file without changing it (a snapshot, or a restored
    /// copy before it is put in place): `PRAGMA integrity_check` must say
    /// `ok`; then the counts and schema version a backup manifest records.
    pub async fn inspect(path: &Path) -> Result<SnapshotInfo> {
        use sqlx::Connection;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .immutable(true);
        let mut c = SqliteConnection::connect_with(&opts).await?;
        let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut c)
            .await?;
        if check != ["ok"] {
            return Err(SqliteError::corrupt(format!(
                "integrity check of {}: {}",
                path.display(),
                check.join("; ")
            )));
        }
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM memories) AS memories,              (SELECT count(*) FROM memories WHERE deleted_at IS NULL) AS live,              (SELECT coalesce(max(seq), 0) FROM memories) AS max_seq,              (SELECT coalesce(max(version), 0) FROM _sqlx_migrations) AS schema_version,              (SELECT count(*) FROM audit) AS audit_events",
        )
        .fetch_one(&mut c)
        .await?;
        let n = |k: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(k)?.max(0) as u64) };
        let info = SnapshotInfo {
            memories: n("memories")?,
            live: n("live")?,
            max_seq: n("max_seq")?,
            schema_version: n("schema_version")?,
            audit_events: n("audit_events")?,
        };
        c.close().await?;
        Ok(info)
    }

    /// The value of `PRAGMA name` on the writer connection (e.g. `journal_mode`,
    /// `synchronous`), for diagnostics and tests.
    pub async fn pragma(&self, name: &str) -> Result<String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(
                sqlx::Error::InvalidArgument(format!("invalid pragma name {name:?}")).into(),
            );
        }
        let row = sqlx::query(&format!("PRAGMA {name}"))
            .persistent(false)
            .fetch_one(&self.writer)
            .await?;
        if let Ok(v) = row.try_get::<i64, _>(0) {
            return Ok(v.to_string());
        }
        Ok(row.try_get::<String, _>(0)?)
    }

    /// Begin a write transaction on the single writer connection.
    async fn begin_write(&self) -> Result<WriteTx> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, seq: None })
    }
}

/// A write transaction that hands out change sequence numbers.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    /// Last seq handed out in this transaction, once one has been.
    seq: Option<i64>,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// The next change sequence number. The counter is written back on commit.
    pub(crate) async fn next_seq(&mut self) -> Result<i64> {
        let current = match self.seq {
            Some(s) => s,
            None => {
                sqlx::query_scalar::<_, i64>("SELECT value FROM meta WHERE name = 'seq'")
                    .fetch_one(&mut *self.tx)
                    .await?
            }
        };
        let next = current
            .checked_add(1)
            .ok_or_else(|| SqliteError::corrupt("seq counter overflow"))?;
        self.seq = Some(next);
        Ok(next)
    }

    /// Remove every job of a memory (done, superseded, or nothing left to embed).
    pub(crate) async fn drop_jobs(&mut self, memory_key: i64) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE memory_key = ?")
            .bind(memory_key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        if let Some(seq) = self.seq {
            sqlx::query("UPDATE meta SET value = ? WHERE name = 'seq'")
                .bind(seq)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Current wall-clock time, for columns the trait gives no `now` for.
fn wall_clock() -> i64 {
    codec::micros(Utc::now())
}
