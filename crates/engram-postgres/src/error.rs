//! The crate's error type and its mapping onto [`engram_core::Error`].

use engram_core::Error;

/// Everything that can go wrong in the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A query, connection or pool failure reported by sqlx / PostgreSQL.
    #[error("postgres: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("postgres migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded (bad JSON, unknown enum value...).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A value could not be encoded for storage.
    #[error("cannot encode {0}")]
    Encode(String),
    /// The operation conflicts with another live record (e.g. duplicate text).
    #[error("{0}")]
    Conflict(String),
}

// SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const UNIQUE_VIOLATION: &str = "23505";
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
const READ_ONLY_SQL_TRANSACTION: &str = "25006";
const LOCK_NOT_AVAILABLE: &str = "55P03";
const QUERY_CANCELED: &str = "57014";
const ADMIN_SHUTDOWN: &str = "57P01";
const CRASH_SHUTDOWN: &str = "57P02";
const CANNOT_CONNECT_NOW: &str = "57P03";
const DATABASE_DROPPED: &str = "57P04";
const IDLE_SESSION_TIMEOUT: &str = "57P05";
const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
const UNTRANSLATABLE_CHARACTER: &str = "22P05";
const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
const CHECK_VIOLATION: &str = "23514";
const DATETIME_FIELD_OVERFLOW: &str = "22008";
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
const INTERVAL_FIELD_OVERFLOW: &str = "22015";

/// Unique indexes whose violation during an insert means a concurrent
/// transaction stored the same memory first: the insert is retried and then
/// finds it (the id index too: the same item inserted twice at once).
const LIVE_CHECKSUM_INDEX: &str = "memories_live_checksum";
const LIVE_CLIENT_ID_INDEX: &str = "memories_live_client_id";
const ID_INDEX: &str = "memories_id_key";

impl PgError {
    pub(crate) fn corrupt(msg: impl std::fmt::Display) -> Self {
        PgError::Corrupt(msg.to_string())
    }

    /// Whether retrying later may succeed: the server is unreachable, shutting
    /// down, overloaded, the pool is exhausted, or the transaction lost a
    /// deadlock or serialization race.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Sqlx(e) => sqlx_is_transient(e),
            PgError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_is_transient(e),
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, if this is one.
    pub fn code(&self) -> Option<String> {
        let e = match self {
            PgError::Sqlx(e) | PgError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
            _ => return None,
        };
        e.as_database_error()
            .and_then(|db| db.code())
            .map(|c| c.into_owned())
    }

    /// A unique violation of the live checksum, live client id or id index:
    /// another transaction committed the same memory after this one looked
    /// for it.
    pub(crate) fn is_live_duplicate(&self) -> bool {
        let PgError::Sqlx(e) = self else { return false };
        let Some(db) = e.as_database_error() else {
            return false;
        };
        db.is_unique_violation()
            && matches!(
                db.constraint(),
                Some(LIVE_CHECKSUM_INDEX | LIVE_CLIENT_ID_INDEX | ID_INDEX)
            )
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Class 08: connection exception; 53: insufficient resources;
            // 58: system error (I/O) -- all about the server, not the request.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("58")
                || matches!(
                    code.as_ref(),
                    SERIALIZATION_FAILURE
                        | DEADLOCK_DETECTED
                        | READ_ONLY_SQL_TRANSACTION
                        | LOCK_NOT_AVAILABLE
                        | QUERY_CANCELED
                        | ADMIN_SHUTDOWN
                        | CRASH_SHUTDOWN
                        | CANNOT_CONNECT_NOW
                        | DATABASE_DROPPED
                        | IDLE_SESSION_TIMEOUT
                )
        }
        _ => false,
    }
}

/// A unique-constraint violation, described for the caller.
fn unique_violation(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    if db.code().as_deref() != Some(UNIQUE_VIOLATION) {
        return None;
    }
    Some(match db.constraint() {
        Some(LIVE_CHECKSUM_INDEX) => {
            "a live memory with the same text already exists in this namespace".to_string()
        }
        Some(LIVE_CLIENT_ID_INDEX) => {
            "a live memory with the same client id already exists in this namespace".to_string()
        }
        Some(ID_INDEX) => "a memory with this id already exists".to_string(),
        Some("memories_live_session_position") => {
            "another live message of this session has this position".to_string()
        }
        Some("api_keys_pkey") => "an API key with this id already exists".to_string(),
        _ => format!("conflict: {}", db.message()),
    })
}

/// A value PostgreSQL refuses to store though SQLite would (a NUL character
/// in text or JSON, a text too long for the full-text index...): the
/// caller's input, not a server fault.
fn unstorable(e: &sqlx::Error) -> Option<Error> {
    let db = e.as_database_error()?;
    match db.code().as_deref()? {
        CHARACTER_NOT_IN_REPERTOIRE | UNTRANSLATABLE_CHARACTER => Some(Error::bad(
            engram_core::Code::InvalidText,
            format!(
                "value cannot be stored (PostgreSQL text cannot hold NUL characters): {}",
                db.message()
            ),
        )),
        PROGRAM_LIMIT_EXCEEDED => Some(Error::TooLarge(format!(
            "value too large to store: {}",
            db.message()
        ))),
        // The schema's CHECK constraints (migration 0004) and PostgreSQL's own
        // range errors: the store never writes what it could not read back.
        CHECK_VIOLATION
        | DATETIME_FIELD_OVERFLOW
        | NUMERIC_VALUE_OUT_OF_RANGE
        | INTERVAL_FIELD_OVERFLOW => Some(Error::out_of_range(format!(
            "the store refused a value: {}",
            db.message()
        ))),
        _ => None,
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        if e.is_transient() {
            return Error::unavailable("store", &e);
        }
        match e {
            // A fetched value that does not decode is the row's fault.
            PgError::Sqlx(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
                Error::Corrupt(e.to_string())
            }
            PgError::Conflict(msg) => Error::Conflict(msg),
            PgError::Sqlx(ref inner) => {
                if let Some(msg) = unique_violation(inner) {
                    Error::Conflict(msg)
                } else if let Some(err) = unstorable(inner) {
                    err
                } else {
                    Error::internal(&e)
                }
            }
            PgError::Corrupt(msg) => Error::Corrupt(msg),
            other => Error::internal(other),
        }
    }
}
