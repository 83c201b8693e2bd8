//! Conversions between domain values and their stored representation, and
//! row decoders. Nothing here panics on bad data: a row that cannot be decoded
//! is a [`SqliteError::Corrupt`].

use chrono::{DateTime, Utc};
use engram_core::{
    ClaimedJob, Corrupt, Decoded, DocAttrs, Inserted, Job, JobState, Kind, Memory, NamespaceInfo,
    SessionRef, State,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

use crate::SqliteError;

type Result<T, E = SqliteError> = std::result::Result<T, E>;

/// Columns of a [`Memory`], in the order [`memory`] reads them by name.
macro_rules! memory_cols {
    () => {
        "key, id, tenant, namespace, kind, state, checksum, client_id, seq, created_at, \
         updated_at, expires_at, deleted_at, legal_hold, embedding_model, embedding_version, \
         tags, pii, provenance, metadata, text, occurred_at, session, position, speaker"
    };
}
pub(crate) use memory_cols;

/// Columns of [`DocAttrs`] plus the key.
macro_rules! attr_cols {
    () => {
        "key, tenant, namespace, kind, tags, metadata, created_at, updated_at, expires_at, \
         occurred_at, session, position, speaker"
    };
}
pub(crate) use attr_cols;

/// Columns of a [`Job`] (jobs `j` joined with memories `m`).
macro_rules! job_cols {
    () => {
        "j.id, j.tenant, j.kind, m.id AS memory_id, j.state, j.attempts, j.last_error, \
         j.next_run_at, j.created_at"
    };
}
pub(crate) use job_cols;

/// A time as stored: microseconds since the epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `t` plus `d`, in stored microseconds, saturating instead of overflowing.
pub(crate) fn micros_after(t: DateTime<Utc>, d: Duration) -> i64 {
    micros(t).saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn time(v: i64, col: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| SqliteError::corrupt(format!("{col}: timestamp {v} out of range")))
}

pub(crate) fn opt_time(v: Option<i64>, col: &str) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| time(v, col)).transpose()
}

/// A u64 handed in by a caller (key, seq, job id) as an SQLite integer.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A row count or limit as an SQLite integer.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored non-negative integer as u64.
pub(crate) fn unsigned(v: i64, col: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| SqliteError::corrupt(format!("{col}: negative value {v}")))
}

/// Encode a value as JSON text for storage (`to_json!(value, "what")`).
/// (Macros rather than generic functions: this crate does not depend on serde
/// itself, only on serde_json.)
macro_rules! to_json {
    ($v:expr, $what:expr) => {
        serde_json::to_string($v)
            .map_err(|e| $crate::SqliteError::Encode(format!("{}: {e}", $what)))
    };
}
pub(crate) use to_json;

/// Decode stored JSON text (`from_json!(text, "column")`); bad JSON is corruption.
macro_rules! from_json {
    ($s:expr, $col:expr) => {
        serde_json::from_str($s).map_err(|e| $crate::SqliteError::Corrupt(format!("{}: {e}", $col)))
    };
}

/// An embedding as stored: little-endian f32s.
pub(crate) fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub(crate) fn blob_to_vector(b: &[u8]) -> Result<Vec<f32>> {
    let chunks = b.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return Err(SqliteError::corrupt(format!(
            "vector: blob of {} bytes is not a whole number of f32s",
            b.len()
        )));
    }
    Ok(chunks
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(crate) fn uuid(s: &str, col: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| SqliteError::corrupt(format!("{col}: {e}")))
}

pub(crate) fn kind(s: &str) -> Result<Kind> {
    Kind::parse(s).ok_or_else(|| SqliteError::corrupt(format!("kind: unknown value {s:?}")))
}

pub(crate) fn state(s: &str) -> Result<State> {
    State::parse(s).ok_or_else(|| SqliteError::corrupt(format!("state: unknown value {s:?}")))
}

pub(crate) fn job_state(s: &str) -> Result<JobState> {
    JobState::parse(s)
        .ok_or_else(|| SqliteError::corrupt(format!("job state: unknown value {s:?}")))
}

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    Ok(row.try_get(col)?)
}

/// The event time (rows written before schema 8 have none: their creation
/// time) and the session of a row selected with [`memory_cols`] or
/// [`attr_cols`].
fn event(
    row: &SqliteRow,
    created_at: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Option<SessionRef>)> {
    let occurred_at = opt_time(get(row, "occurred_at")?, "occurred_at")?.unwrap_or(created_at);
    let session = match get::<Option<String>>(row, "session")? {
        None => None,
        Some(id) => Some(SessionRef {
            id,
            position: unsigned(
                get::<Option<i64>>(row, "position")?
                    .ok_or_else(|| SqliteError::corrupt("position: missing on a message"))?,
                "position",
            )?,
            speaker: get(row, "speaker")?,
        }),
    };
    Ok((occurred_at, session))
}

/// A full memory from a row selected with [`memory_cols`].
pub(crate) fn memory(row: &SqliteRow) -> Result<Memory> {
    let provenance: Option<String> = get(row, "provenance")?;
    let created_at = time(get(row, "created_at")?, "created_at")?;
    let (occurred_at, session) = event(row, created_at)?;
    Ok(Memory {
        id: uuid(&get::<String>(row, "id")?, "id")?,
        key: unsigned(get(row, "key")?, "key")?,
        tenant: get(row, "tenant")?,
        namespace: get(row, "namespace")?,
        text: get(row, "text")?,
        kind: kind(&get::<String>(row, "kind")?)?,
        metadata: from_json!(&get::<String>(row, "metadata")?, "metadata")?,
        tags: from_json!(&get::<String>(row, "tags")?, "tags")?,
        provenance: provenance
            .map(|p| from_json!(&p, "provenance"))
            .transpose()?,
        client_id: get(row, "client_id")?,
        checksum: get(row, "checksum")?,
        state: state(&get::<String>(row, "state")?)?,
        embedding_model: get(row, "embedding_model")?,
        embedding_version: get(row, "embedding_version")?,
        occurred_at,
        session,
        created_at,
        updated_at: time(get(row, "updated_at")?, "updated_at")?,
        expires_at: opt_time(get(row, "expires_at")?, "expires_at")?,
        deleted_at: opt_time(get(row, "deleted_at")?, "deleted_at")?,
        legal_hold: get::<i64>(row, "legal_hold")? != 0,
        pii: from_json!(&get::<String>(row, "pii")?, "pii")?,
        seq: unsigned(get(row, "seq")?, "seq")?,
    })
}

/// A fetched row decoded by `f`, or, when it cannot be, what is known of it:
/// its memory key (column `key_col`, which must decode: it is an INTEGER
/// PRIMARY KEY or a guarded integer), and its id, tenant and job id when
/// those still decode on their own. Decoding a fetched row does no I/O, so
/// any error here is the row's.
pub(crate) fn decoded<T>(
    row: &SqliteRow,
    key_col: &str,
    f: impl Fn(&SqliteRow) -> Result<T>,
) -> Result<Decoded<T>> {
    match f(row) {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            let key = unsigned(get(row, key_col)?, key_col)?;
            let id_col = if key_col == "memory_key" {
                "memory_id"
            } else {
                "id"
            };
            Ok(Err(Corrupt {
                key,
                id: row
                    .try_get::<String, _>(id_col)
                    .ok()
                    .and_then(|s| Uuid::parse_str(&s).ok()),
                tenant: row.try_get::<String, _>("tenant").ok(),
                job_id: row
                    .try_get::<i64, _>("job_id")
                    .ok()
                    .and_then(|v| u64::try_from(v).ok()),
                occurred_at: row
                    .try_get::<i64, _>("occurred_at")
                    .ok()
                    .and_then(|v| time(v, "occurred_at").ok()),
                error: e.to_string(),
            }))
        }
    }
}

/// Key and filter attributes from a row selected with [`attr_cols`].
pub(crate) fn attrs(row: &SqliteRow) -> Result<(u64, DocAttrs)> {
    let created_at = time(get(row, "created_at")?, "created_at")?;
    let (occurred_at, session) = event(row, created_at)?;
    Ok((
        unsigned(get(row, "key")?, "key")?,
        DocAttrs {
            tenant: get(row, "tenant")?,
            namespace: get(row, "namespace")?,
            kind: kind(&get::<String>(row, "kind")?)?,
            tags: from_json!(&get::<String>(row, "tags")?, "tags")?,
            metadata: from_json!(&get::<String>(row, "metadata")?, "metadata")?,
            created_at,
            updated_at: time(get(row, "updated_at")?, "updated_at")?,
            expires_at: opt_time(get(row, "expires_at")?, "expires_at")?,
            occurred_at,
            session,
        },
    ))
}

/// An existing memory returned for a duplicate insert (`key, id, state, seq`).
pub(crate) fn existing(row: &SqliteRow) -> Result<Inserted> {
    Ok(Inserted {
        id: uuid(&get::<String>(row, "id")?, "id")?,
        key: unsigned(get(row, "key")?, "key")?,
        created: false,
        state: state(&get::<String>(row, "state")?)?,
        seq: unsigned(get(row, "seq")?, "seq")?,
    })
}

/// A job from a row selected with [`job_cols`].
pub(crate) fn job(row: &SqliteRow) -> Result<Job> {
    Ok(Job {
        id: unsigned(get(row, "id")?, "jobs.id")?,
        tenant: get(row, "tenant")?,
        kind: get(row, "kind")?,
        memory_id: uuid(&get::<String>(row, "memory_id")?, "memory_id")?,
        state: job_state(&get::<String>(row, "state")?)?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?)
            .map_err(|_| SqliteError::corrupt("jobs.attempts out of range"))?,
        last_error: get(row, "last_error")?,
        next_run_at: time(get(row, "next_run_at")?, "next_run_at")?,
        created_at: time(get(row, "created_at")?, "jobs.created_at")?,
    })
}

/// A claimed job joined with its memory.
pub(crate) fn claimed(row: &SqliteRow) -> Result<ClaimedJob> {
    Ok(ClaimedJob {
        job_id: unsigned(get(row, "job_id")?, "jobs.id")?,
        key: unsigned(get(row, "memory_key")?, "memory_key")?,
        memory_id: uuid(&get::<String>(row, "memory_id")?, "memory_id")?,
        text: get(row, "text")?,
        speaker: get(row, "speaker")?,
        checksum: get(row, "checksum")?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?)
            .map_err(|_| SqliteError::corrupt("jobs.attempts out of range"))?,
        embedded_checksum: get(row, "embedded_checksum")?,
        embedding_version: get(row, "embedding_version")?,
        traceparent: get(row, "traceparent")?,
    })
}

pub(crate) fn namespace(row: &SqliteRow) -> Result<NamespaceInfo> {
    Ok(NamespaceInfo {
        name: get(row, "name")?,
        created_at: time(get(row, "created_at")?, "namespaces.created_at")?,
        memories: unsigned(get(row, "memories")?, "memories")?,
        default_ttl_seconds: get::<Option<i64>>(row, "default_ttl_secs")?
            .map(|v| unsigned(v, "default_ttl_secs"))
            .transpose()?,
    })
}
