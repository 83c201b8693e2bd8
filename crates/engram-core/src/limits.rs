//! The documented ranges of values clients send, and their checks.
//!
//! Every number and time a client can send has a range here (or in
//! [`crate::EngineConfig`] when an operator may change it), and arithmetic on
//! them is checked: a value out of range is a 400 with a specific code, never
//! a value the store cannot read back (the stores also refuse such values
//! themselves: see their guard migrations). The OpenAPI document states the
//! same ranges.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::codes::Code;
use crate::error::{Error, Result};

/// Longest TTL (`ttl_seconds`, a namespace's `default_ttl_seconds`): 100 years.
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// Latest expiry a memory may have: the end of year 9999, the last instant
/// every store, client and RFC 3339 parser can represent.
pub const MAX_TIME_RFC3339: &str = "9999-12-31T23:59:59Z";

/// Longest caller-chosen idempotency key.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// Longest provenance field (agent, session, parent, reference).
pub const MAX_PROVENANCE_BYTES: usize = 1024;

/// Most namespaces one search or ask may name.
pub const MAX_NAMESPACES_PER_QUERY: usize = 100;

/// Deepest nesting of a metadata object (PostgreSQL's jsonb and every JSON
/// parser on the way accept far more; this keeps filters and copies cheap).
pub const MAX_METADATA_DEPTH: usize = 32;

/// Longest API key name, and most namespace patterns on a key.
pub const MAX_KEY_NAME_BYTES: usize = 128;
pub const MAX_KEY_NAMESPACES: usize = 64;

/// Longest audit-log `actor` / `target` filter.
pub const MAX_AUDIT_FILTER_BYTES: usize = 256;

/// The latest representable expiry ([`MAX_TIME_RFC3339`]).
pub fn max_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .expect("a valid date")
}

/// `now + ttl_seconds`, checked: positive, at most [`MAX_TTL_SECONDS`].
pub fn expiry_after(now: DateTime<Utc>, field: &str, ttl_seconds: u64) -> Result<DateTime<Utc>> {
    if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
        return Err(Error::out_of_range(format!(
            "{field} must be between 1 and {MAX_TTL_SECONDS} (100 years)"
        )));
    }
    // Cannot fail for a TTL in range; checked all the same.
    i64::try_from(ttl_seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| Error::out_of_range(format!("{field} is too large")))
}

/// An event time (`occurred_at`) a client sent: from year 1 to
/// [`MAX_TIME_RFC3339`], what both stores hold.
pub fn check_time(field: &str, t: DateTime<Utc>) -> Result<()> {
    let min = Utc
        .with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date");
    if t < min || t > max_time() {
        return Err(Error::out_of_range(format!(
            "{field} must be between 0001-01-01T00:00:00Z and {MAX_TIME_RFC3339}"
        )));
    }
    Ok(())
}

/// Highest message position (what both stores hold as a signed integer).
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// Longest session id, speaker name.
pub const MAX_SESSION_ID_BYTES: usize = 256;
/// Neighbours a search may bring on each side of a message hit.
pub const MAX_NEIGHBORS: usize = 10;
/// The longest recency half-life (100 years), in days.
pub const MAX_HALF_LIFE_DAYS: f64 = 36_500.0;
/// The strongest recency preference, in standard deviations of the score.
pub const MAX_RECENCY_WEIGHT: f32 = 10.0;
pub const MAX_SPEAKER_BYTES: usize = 256;

/// An expiry a client sent: after `now`, not after [`MAX_TIME_RFC3339`].
pub fn check_expiry(now: DateTime<Utc>, t: DateTime<Utc>) -> Result<()> {
    if t <= now {
        return Err(Error::out_of_range("expires_at is in the past"));
    }
    if t > max_time() {
        return Err(Error::out_of_range(format!(
            "expires_at must not be after {MAX_TIME_RFC3339}"
        )));
    }
    Ok(())
}

/// A namespace default TTL: positive, at most [`MAX_TTL_SECONDS`].
pub fn check_ttl(field: &str, ttl_seconds: u64) -> Result<()> {
    if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
        return Err(Error::out_of_range(format!(
            "{field} must be between 1 and {MAX_TTL_SECONDS} (100 years)"
        )));
    }
    Ok(())
}

/// `1 <= value <= max`, else `out_of_range` naming the field.
pub fn check_count(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::out_of_range(format!(
            "{field} must be between 1 and {max}"
        )));
    }
    Ok(())
}

/// A cursor a client hands back (a job id, an audit position): any value a
/// store can hold, i.e. at most `i64::MAX`.
pub fn check_cursor(field: &str, v: Option<u64>) -> Result<()> {
    match v {
        Some(v) if v > i64::MAX as u64 => Err(Error::out_of_range(format!(
            "{field} must be at most {}",
            i64::MAX
        ))),
        _ => Ok(()),
    }
}

/// A string a client stores: no NUL character (PostgreSQL cannot hold one
/// in text or JSON, so neither mode accepts it), at most `max` bytes.
pub fn check_string(field: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(Error::TooLarge(format!(
            "{field} is {} bytes; the limit is {max}",
            s.len()
        )));
    }
    if s.contains('\0') {
        return Err(Error::bad(
            Code::InvalidText,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(())
}

/// Metadata values: no NUL in any key or string, nesting at most
/// [`MAX_METADATA_DEPTH`] deep.
pub fn check_json(field: &str, v: &Value, depth: usize) -> Result<()> {
    if depth > MAX_METADATA_DEPTH {
        return Err(Error::bad(
            Code::InvalidMetadata,
            format!("{field} nests deeper than {MAX_METADATA_DEPTH} levels"),
        ));
    }
    let nul = |s: &str| {
        if s.contains('\0') {
            Err(Error::bad(
                Code::InvalidMetadata,
                format!("{field} must not contain NUL characters"),
            ))
        } else {
            Ok(())
        }
    };
    match v {
        Value::String(s) => nul(s),
        Value::Array(items) => items
            .iter()
            .try_for_each(|x| check_json(field, x, depth + 1)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            nul(k)?;
            check_json(field, x, depth + 1)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded_and_never_overflow() {
        let now = Utc::now();
        for bad in [0, MAX_TTL_SECONDS + 1, i64::MAX as u64, u64::MAX] {
            let e = expiry_after(now, "ttl_seconds", bad).unwrap_err();
            assert_eq!(e.code(), Code::OutOfRange, "{bad}");
        }
        let t = expiry_after(now, "ttl_seconds", MAX_TTL_SECONDS).unwrap();
        assert!(t < max_time());
        assert_eq!(
            expiry_after(now, "x", 60).unwrap(),
            now + chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn expiries_must_be_future_and_representable() {
        let now = Utc::now();
        assert!(check_expiry(now, now).is_err());
        assert!(check_expiry(now, max_time() + chrono::Duration::seconds(1)).is_err());
        assert!(check_expiry(now, max_time()).is_ok());
        assert!(check_expiry(now, DateTime::<Utc>::MAX_UTC).is_err());
    }

    #[test]
    fn strings_and_json_refuse_nul_and_depth() {
        assert_eq!(
            check_string("t", "a\0b", 10).unwrap_err().code(),
            Code::InvalidText
        );
        assert_eq!(
            check_string("t", "abcdef", 3).unwrap_err().code(),
            Code::LimitExceeded
        );
        let nul_key = serde_json::json!({"a\u{0}": 1});
        assert!(check_json("metadata", &nul_key, 0).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..=MAX_METADATA_DEPTH {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(
            check_json("metadata", &deep, 0).unwrap_err().code(),
            Code::InvalidMetadata
        );
        assert!(check_json(
            "metadata",
            &serde_json::json!({"a": [1, "x", {"b": null}]}),
            0
        )
        .is_ok());
    }
}
