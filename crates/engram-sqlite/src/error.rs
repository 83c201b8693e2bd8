//! The crate's error type and its mapping onto [`engram_core::Error`].

use engram_core::Error;

/// Everything that can go wrong in the SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// A query, connection or pool failure reported by sqlx / SQLite.
    #[error("sqlite: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("sqlite migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored row could not be decoded (bad JSON, bad uuid, unknown enum value...).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A value could not be encoded for storage.
    #[error("cannot encode {0}")]
    Encode(String),
    /// The operation conflicts with another live record (e.g. duplicate text).
    #[error("{0}")]
    Conflict(String),
}

impl SqliteError {
    pub(crate) fn corrupt(msg: impl std::fmt::Display) -> Self {
        SqliteError::Corrupt(msg.to_string())
    }

    /// Whether retrying later may succeed (busy, locked, I/O, pool exhausted...).
    pub fn is_transient(&self) -> bool {
        match self {
            SqliteError::Sqlx(e) => sqlx_is_transient(e),
            SqliteError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_is_transient(e),
            SqliteError::CreateDir { .. } => true,
            _ => false,
        }
    }
}

// Primary SQLite result codes (https://www.sqlite.org/rescode.html).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;

/// The primary result code of a database error (sqlx reports the extended one).
fn primary_code(e: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    e.code()
        .and_then(|c| c.parse::<i64>().ok())
        .map(|c| c & 0xff)
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            primary_code(db.as_ref()),
            Some(
                SQLITE_BUSY
                    | SQLITE_LOCKED
                    | SQLITE_NOMEM
                    | SQLITE_READONLY
                    | SQLITE_IOERR
                    | SQLITE_FULL
                    | SQLITE_CANTOPEN
                    | SQLITE_PROTOCOL
            )
        ),
        _ => false,
    }
}

/// A unique-constraint violation, described for the caller.
fn unique_violation(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    let msg = db.message();
    Some(if msg.contains("memories.checksum") {
        "a live memory with the same text already exists in this namespace".to_string()
    } else if msg.contains("memories.client_id") {
        "a live memory with the same client id already exists in this namespace".to_string()
    } else if msg.contains("memories.session") {
        "another live message of this session has this position".to_string()
    } else if msg.contains("memories.id") {
        "a memory with this id already exists".to_string()
    } else {
        format!("conflict: {msg}")
    })
}

/// A value the schema's CHECK constraints or guard triggers refuse (see
/// migration 0006): the store never writes what it could not read back. The
/// engine validates first, so reaching this is a missed validation, still the
/// caller's input rather than a server fault.
fn refused(e: &sqlx::Error) -> Option<Error> {
    let db = e.as_database_error()?;
    // SQLITE_CONSTRAINT (19): CHECK, trigger RAISE(ABORT) and NOT NULL; the
    // unique violations were told apart above.
    if primary_code(db) != Some(19) || db.is_foreign_key_violation() {
        return None;
    }
    Some(Error::out_of_range(format!(
        "the store refused a value: {}",
        db.message()
    )))
}

impl From<SqliteError> for Error {
    fn from(e: SqliteError) -> Self {
        if e.is_transient() {
            return Error::unavailable("store", &e);
        }
        match e {
            // A fetched value that does not decode is the row's fault.
            SqliteError::Sqlx(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
                Error::Corrupt(e.to_string())
            }
            SqliteError::Conflict(msg) => Error::Conflict(msg),
            SqliteError::Sqlx(ref inner) => match unique_violation(inner) {
                Some(msg) => Error::Conflict(msg),
                None => match refused(inner) {
                    Some(err) => err,
                    None => Error::internal(&e),
                },
            },
            SqliteError::Corrupt(msg) => Error::Corrupt(msg),
            other => Error::internal(other),
        }
    }
}
