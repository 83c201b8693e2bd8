//! Conversions between domain values and their stored representation, and
//! row decoders. Nothing here panics on bad data: a row that cannot be decoded
//! is a [`PgError::Corrupt`].

use chrono::{DateTime, TimeDelta, Utc};
use engram_core::{
    ClaimedJob, Corrupt, Decoded, DocAttrs, Inserted, Job, JobState, Kind, Memory, NamespaceInfo,
    SessionRef, State,
};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::time::Duration;

use crate::PgError;

type Result<T, E = PgError> = std::result::Result<T, E>;

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

/// Columns of a [`ClaimedJob`] (jobs `j` joined with memories `m`), plus
/// whether the memory is deleted.
macro_rules! claimed_cols {
    () => {
        "j.id AS job_id, j.memory_key, j.attempts, j.traceparent, m.id AS memory_id, m.tenant, \
         m.text, m.speaker, \
         m.checksum, \
         m.embedded_checksum, m.embedding_version, m.deleted_at IS NOT NULL AS deleted"
    };
}
pub(crate) use claimed_cols;

/// A time as stored: truncated to whole microseconds (what `timestamptz`
/// keeps), exactly as the SQLite store's integer microseconds do.
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// `t` plus `d`, in whole microseconds, saturating instead of overflowing.
pub(crate) fn ts_after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let micros = t
        .timestamp_micros()
        .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t` plus a time-to-live in seconds; `None` when the result would be
/// beyond any representable time (a TTL that large never expires).
pub(crate) fn ts_plus_secs(t: DateTime<Utc>, secs: i64) -> Option<DateTime<Utc>> {
    let micros = secs.checked_mul(1_000_000)?;
    ts(t).checked_add_signed(TimeDelta::microseconds(micros))
}

/// A u64 handed in by a caller (key, seq, job id) as a bigint.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Several u64s as bigints.
pub(crate) fn ints(v: &[u64]) -> Vec<i64> {
    v.iter().copied().map(int).collect()
}

/// A row count or limit as a bigint.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored non-negative integer as u64.
pub(crate) fn unsigned(v: i64, col: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| PgError::corrupt(format!("{col}: negative value {v}")))
}

/// Encode a value as JSON for a `jsonb` column (`to_json!(value, "what")`).
/// (Macros rather than generic functions: this crate does not depend on serde
/// itself, only on serde_json.)
macro_rules! to_json {
    ($v:expr, $what:expr) => {
        serde_json::to_value($v).map_err(|e| $crate::PgError::Encode(format!("{}: {e}", $what)))
    };
}
pub(crate) use to_json;

/// Decode a stored JSON value (`from_json!(value, "column")`); a mismatch is corruption.
macro_rules! from_json {
    ($v:expr, $col:expr) => {
        serde_json::from_value($v).map_err(|e| $crate::PgError::Corrupt(format!("{}: {e}", $col)))
    };
}

pub(crate) fn kind(s: &str) -> Result<Kind> {
    Kind::parse(s).ok_or_else(|| PgError::corrupt(format!("kind: unknown value {s:?}")))
}

pub(crate) fn state(s: &str) -> Result<State> {
    State::parse(s).ok_or_else(|| PgError::corrupt(format!("state: unknown value {s:?}")))
}

pub(crate) fn job_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| PgError::corrupt(format!("job state: unknown value {s:?}")))
}

/// A fetched row decoded by `f`, or, when it cannot be, what is known of it:
/// its memory key (column `key_col`, a bigint that always decodes), and its
/// id, tenant and job id when those still decode on their own. Decoding a
/// fetched row does no I/O, so any error here is the row's.
pub(crate) fn decoded<T>(
    row: &PgRow,
    key_col: &str,
    f: impl Fn(&PgRow) -> Result<T>,
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
                id: row.try_get::<uuid::Uuid, _>(id_col).ok(),
                tenant: row.try_get::<String, _>("tenant").ok(),
                job_id: row
                    .try_get::<i64, _>("job_id")
                    .ok()
                    .and_then(|v| u64::try_from(v).ok()),
                occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at").ok(),
                error: e.to_string(),
            }))
        }
    }
}

pub(crate) fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    Ok(row.try_get(col)?)
}

fn attempts(row: &PgRow) -> Result<u32> {
    u32::try_from(get::<i32>(row, "attempts")?)
        .map_err(|_| PgError::corrupt("jobs.attempts out of range"))
}

/// The session of a row selected with [`memory_cols`] or [`attr_cols`].
fn session(row: &PgRow) -> Result<Option<SessionRef>> {
    Ok(match get::<Option<String>>(row, "session")? {
        None => None,
        Some(id) => Some(SessionRef {
            id,
            position: unsigned(
                get::<Option<i64>>(row, "position")?
                    .ok_or_else(|| PgError::corrupt("position: missing on a message"))?,
                "position",
            )?,
            speaker: get(row, "speaker")?,
        }),
    })
}

/// A full memory from a row selected with [`memory_cols`].
pub(crate) fn memory(row: &PgRow) -> Result<Memory> {
    let provenance: Option<Value> = get(row, "provenance")?;
    Ok(Memory {
        id: get(row, "id")?,
        key: unsigned(get(row, "key")?, "key")?,
        tenant: get(row, "tenant")?,
        namespace: get(row, "namespace")?,
        text: get(row, "text")?,
        kind: kind(&get::<String>(row, "kind")?)?,
        metadata: from_json!(get::<Value>(row, "metadata")?, "metadata")?,
        tags: get(row, "tags")?,
        provenance: provenance
            .filter(|p| !p.is_null())
            .map(|p| from_json!(p, "provenance"))
            .transpose()?,
        client_id: get(row, "client_id")?,
        checksum: get(row, "checksum")?,
        state: state(&get::<String>(row, "state")?)?,
        embedding_model: get(row, "embedding_model")?,
        embedding_version: get(row, "embedding_version")?,
        occurred_at: get(row, "occurred_at")?,
        session: session(row)?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        expires_at: get(row, "expires_at")?,
        deleted_at: get(row, "deleted_at")?,
        legal_hold: get(row, "legal_hold")?,
        pii: from_json!(get::<Value>(row, "pii")?, "pii")?,
        seq: unsigned(get(row, "seq")?, "seq")?,
    })
}

/// Key and filter attributes from a row selected with [`attr_cols`].
pub(crate) fn attrs(row: &PgRow) -> Result<(u64, DocAttrs)> {
    Ok((
        unsigned(get(row, "key")?, "key")?,
        DocAttrs {
            tenant: get(row, "tenant")?,
            namespace: get(row, "namespace")?,
            kind: kind(&get::<String>(row, "kind")?)?,
            tags: get(row, "tags")?,
            metadata: from_json!(get::<Value>(row, "metadata")?, "metadata")?,
            created_at: get(row, "created_at")?,
            updated_at: get(row, "updated_at")?,
            expires_at: get(row, "expires_at")?,
            occurred_at: get(row, "occurred_at")?,
            session: session(row)?,
        },
    ))
}

/// An existing memory returned for a duplicate insert (`key, id, state, seq`).
pub(crate) fn existing(row: &PgRow) -> Result<Inserted> {
    Ok(Inserted {
        id: get(row, "id")?,
        key: unsigned(get(row, "key")?, "key")?,
        created: false,
        state: state(&get::<String>(row, "state")?)?,
        seq: unsigned(get(row, "seq")?, "seq")?,
    })
}

/// A job from a row selected with [`job_cols`].
pub(crate) fn job(row: &PgRow) -> Result<Job> {
    Ok(Job {
        id: unsigned(get(row, "id")?, "jobs.id")?,
        tenant: get(row, "tenant")?,
        kind: get(row, "kind")?,
        memory_id: get(row, "memory_id")?,
        state: job_state(&get::<String>(row, "state")?)?,
        attempts: attempts(row)?,
        last_error: get(row, "last_error")?,
        next_run_at: get(row, "next_run_at")?,
        created_at: get(row, "created_at")?,
    })
}

/// A claimed job joined with its memory, from a row selected with [`claimed_cols`].
pub(crate) fn claimed(row: &PgRow) -> Result<ClaimedJob> {
    Ok(ClaimedJob {
        job_id: unsigned(get(row, "job_id")?, "jobs.id")?,
        key: unsigned(get(row, "memory_key")?, "memory_key")?,
        memory_id: get(row, "memory_id")?,
        text: get(row, "text")?,
        speaker: get(row, "speaker")?,
        checksum: get(row, "checksum")?,
        attempts: attempts(row)?,
        embedded_checksum: get(row, "embedded_checksum")?,
        embedding_version: get(row, "embedding_version")?,
        traceparent: get(row, "traceparent")?,
    })
}

pub(crate) fn namespace(row: &PgRow) -> Result<NamespaceInfo> {
    Ok(NamespaceInfo {
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        memories: unsigned(get(row, "memories")?, "memories")?,
        default_ttl_seconds: get::<Option<i64>>(row, "default_ttl_secs")?
            .map(|v| unsigned(v, "default_ttl_secs"))
            .transpose()?,
    })
}
