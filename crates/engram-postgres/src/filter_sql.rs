//! Translation of a search [`Scope`] (tenant, namespaces, expiry, metadata
//! filter) into a SQL boolean expression over the `memories` table.
//!
//! The SQL has exactly the semantics of [`Scope::matches`] and
//! [`Filter::matches`], which are the reference: the equivalence is tested
//! against real PostgreSQL over random documents and filters. Every value
//! from the filter is a bind parameter (`QueryBuilder::push_bind`); only
//! constants of this module are ever written into the SQL text.
//!
//! Every fragment is a two-valued boolean (never SQL `NULL`), so `NOT` is
//! the Rust `!` and `$ne` / `$nin` / `$exists: false` are plain negations of
//! `$eq` / `$in` / `$exists: true`, as in the evaluator.
//!
//! How each field maps:
//!
//! * `tags` (`text[]`): `tags && $values`; `$exists` is `cardinality(tags) > 0`.
//! * `kind`, `namespace` (`text`): `= ANY($values)`; always present.
//! * `created_at`, `updated_at` (`timestamptz`, microseconds): compared with
//!   the bound rounded down to the microsecond, with the comparison adjusted
//!   when the bound has sub-microsecond digits (or is a leap second), so the
//!   result is the one of comparing at nanosecond precision in Rust.
//! * `metadata.a.b`: the value `metadata -> 'a' -> 'b'` (text keys only, so,
//!   like the evaluator, a path never descends into an array), whose values
//!   are its elements when it is an array (one level) and itself otherwise:
//!   - `$eq` / `$in` with strings, booleans and null: jsonb containment
//!     `metadata @> ANY('{"a":{"b":v}}', '{"a":{"b":[v]}}', ...)`, which is
//!     exact for scalars (a scalar matches only an equal scalar, or an equal
//!     direct element of an array) and can use the GIN index on `metadata`;
//!   - numbers (equality and order) compare as `float8`, as the evaluator
//!     compares `as_f64()`, never across types;
//!   - time bounds parse string values as RFC 3339 exactly as
//!     `chrono::DateTime::parse_from_rfc3339` does (grammar, ranges, leap
//!     second, offsets up to ±23:59, nanoseconds, extra digits ignored) and
//!     compare `(epoch seconds, nanoseconds)` pairs; strings that do not
//!     parse never match;
//!   - `$exists` is "present and not an empty array".
//!
//! Text that PostgreSQL cannot hold (a NUL character) cannot be equal to
//! anything stored, so such operands simply match nothing.
//!
//! Operands that [`Filter::parse`] rejects (arrays or objects as `$eq`
//! operands) can only come from a hand-built [`Filter`]; they match nothing
//! here (the evaluator would compare them with `serde_json` equality).
//!
//! The expressions name the `memories` columns unqualified (`tenant`,
//! `namespace`, `kind`, `tags`, `metadata`, `created_at`, `updated_at`,
//! `expires_at`) and use the aliases `_el(_v)` and `_tm(_r)` in subqueries,
//! so the surrounding query must not give those names other meanings.

use chrono::{DateTime, Utc};
use engram_core::filter::{Bound, CmpOp, Field, Filter, Op};
use engram_core::Scope;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};

/// The rows searches may return at all: live, embedded memories.
pub const SEARCHABLE: &str = "deleted_at IS NULL AND state = 'ready' AND embedding IS NOT NULL";

/// The RFC 3339 grammar `chrono::DateTime::parse_from_rfc3339` accepts, as
/// a PostgreSQL regular expression. Groups: 1 year, 2 month, 3 day, 4 hour,
/// 5 minute, 6 second, 7 fraction digits, 8 offset sign (`+`, `-` or U+2212),
/// 9 offset hours, 10 offset minutes (groups 8-10 are NULL for `Z`).
/// Ranges (month, day of month, hour, minute, second, offset hours) are
/// checked separately. No backslashes, so it reads the same whatever
/// `standard_conforming_strings` is.
const RFC3339_RE: &str = "^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:[.]([0-9]+))?(?:[Zz]|([-+\u{2212}])([0-9]{2}):([0-5][0-9]))$";

/// Earliest `timestamptz` PostgreSQL can store (4714-11-24 BC 00:00 UTC), in
/// microseconds since the Unix epoch. Every stored time is at or after it.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

type Qb<'a> = QueryBuilder<'a, Postgres>;

/// Push the scope's visibility rules (tenant, namespaces, expiry at
/// `scope.now`, filter) as one parenthesised boolean expression. The
/// engine's attribute table inside the scope is not used.
pub fn push_scope(qb: &mut Qb<'_>, scope: &Scope<'_>) {
    qb.push("(");
    if text_ok(scope.tenant) {
        qb.push("tenant = ").push_bind(scope.tenant.to_owned());
    } else {
        qb.push("FALSE");
    }
    if !scope.namespaces.is_empty() {
        let ns: Vec<String> = scope
            .namespaces
            .iter()
            .filter(|n| text_ok(n))
            .cloned()
            .collect();
        qb.push(" AND namespace = ANY(").push_bind(ns).push(")");
    }
    // expires_at > now  <=>  expires_at > floor_us(now) for microsecond values.
    let (now_us, _) = split_micros(scope.now);
    // (A `now` before anything PostgreSQL can store: every expiry is later.)
    if let Some(now) = micros_to_time(now_us) {
        qb.push(" AND (expires_at IS NULL OR expires_at > ")
            .push_bind(now)
            .push(")");
    }
    if let Some(f) = scope.filter {
        qb.push(" AND ");
        push_filter(qb, f);
    }
    qb.push(")");
}

/// Push `f` as a parenthesised boolean expression that holds exactly for the
/// rows whose attributes satisfy [`Filter::matches`].
pub fn push_filter(qb: &mut Qb<'_>, f: &Filter) {
    match f {
        Filter::And(fs) => push_junction(qb, fs, " AND ", "TRUE"),
        Filter::Or(fs) => push_junction(qb, fs, " OR ", "FALSE"),
        Filter::Not(inner) => {
            qb.push("(NOT ");
            push_filter(qb, inner);
            qb.push(")");
        }
        Filter::Cond(field, op) => push_cond(qb, field, op),
    }
}

fn push_junction(qb: &mut Qb<'_>, fs: &[Filter], sep: &str, empty: &str) {
    if fs.is_empty() {
        qb.push(empty);
        return;
    }
    qb.push("(");
    for (i, f) in fs.iter().enumerate() {
        if i > 0 {
            qb.push(sep);
        }
        push_filter(qb, f);
    }
    qb.push(")");
}

fn push_cond(qb: &mut Qb<'_>, field: &Field, op: &Op) {
    match op {
        Op::Eq(v) => push_in(qb, field, std::slice::from_ref(v)),
        Op::In(vs) => push_in(qb, field, vs),
        Op::Ne(v) => negated(qb, |qb| push_in(qb, field, std::slice::from_ref(v))),
        Op::Nin(vs) => negated(qb, |qb| push_in(qb, field, vs)),
        Op::Exists(true) => push_exists(qb, field),
        Op::Exists(false) => negated(qb, |qb| push_exists(qb, field)),
        Op::Cmp(c, b) => push_cmp(qb, field, *c, b),
    }
}

fn negated(qb: &mut Qb<'_>, inner: impl FnOnce(&mut Qb<'_>)) {
    qb.push("(NOT ");
    inner(qb);
    qb.push(")");
}

fn push_bool(qb: &mut Qb<'_>, b: bool) {
    qb.push(if b { "TRUE" } else { "FALSE" });
}

/// Whether PostgreSQL can hold this text (it cannot hold NUL characters).
fn text_ok(s: &str) -> bool {
    !s.contains('\0')
}

/// Some value of the field equals one of `vs` (the evaluator's `$in`; `$eq`
/// is the one-element case).
fn push_in(qb: &mut Qb<'_>, field: &Field, vs: &[Value]) {
    match field {
        Field::Tags | Field::Kind | Field::Namespace | Field::Session => {
            let strs: Vec<String> = vs
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| text_ok(s))
                .map(str::to_owned)
                .collect();
            if strs.is_empty() {
                return push_bool(qb, false);
            }
            match field {
                Field::Tags => qb.push("(tags && ").push_bind(strs).push("::text[])"),
                Field::Kind => qb.push("(kind = ANY(").push_bind(strs).push("))"),
                // NULL (not a message) equals nothing, and `$ne` must match it.
                Field::Session => qb
                    .push("COALESCE(session = ANY(")
                    .push_bind(strs)
                    .push("), FALSE)"),
                _ => qb.push("(namespace = ANY(").push_bind(strs).push("))"),
            };
        }
        Field::CreatedAt | Field::UpdatedAt | Field::OccurredAt => {
            // Stored times have microsecond precision: an operand with finer
            // digits (or a leap second) equals none of them.
            let times: Vec<DateTime<Utc>> = vs
                .iter()
                .filter_map(Value::as_str)
                .filter_map(parse_time)
                .filter_map(|t| match split_micros(t) {
                    (us, false) => micros_to_time(us),
                    (_, true) => None,
                })
                .collect();
            if times.is_empty() {
                return push_bool(qb, false);
            }
            qb.push("(")
                .push(time_column(field))
                .push(" = ANY(")
                .push_bind(times)
                .push("))");
        }
        Field::Metadata(path) => {
            if !path.iter().all(|p| text_ok(p)) {
                // No stored key holds a NUL: the field is missing.
                return push_bool(qb, false);
            }
            let mut docs: Vec<Json<Value>> = Vec::new();
            let mut nums: Vec<f64> = Vec::new();
            for v in vs {
                match v {
                    Value::Null | Value::Bool(_) => {}
                    Value::String(s) if text_ok(s) => {}
                    Value::Number(n) => {
                        if let Some(x) = n.as_f64() {
                            nums.push(x);
                        }
                        continue;
                    }
                    _ => continue,
                }
                docs.push(Json(nest(path, v.clone())));
                docs.push(Json(nest(path, Value::Array(vec![v.clone()]))));
            }
            if docs.is_empty() && nums.is_empty() {
                return push_bool(qb, false);
            }
            let has_docs = !docs.is_empty();
            qb.push("(");
            if has_docs {
                qb.push("metadata @> ANY(")
                    .push_bind(docs)
                    .push("::jsonb[])");
            }
            if !nums.is_empty() {
                if has_docs {
                    qb.push(" OR ");
                }
                push_any_value(qb, path, &|qb, e| {
                    qb.push("CASE WHEN jsonb_typeof(");
                    push_elem(qb, e);
                    qb.push(") = 'number' THEN (");
                    push_elem(qb, e);
                    qb.push(")::float8 = ANY(")
                        .push_bind(nums.clone())
                        .push("::float8[]) ELSE FALSE END");
                });
            }
            qb.push(")");
        }
    }
}

/// `{"a": {"b": v}}` for the path `a.b`.
fn nest(path: &[String], v: Value) -> Value {
    path.iter().rev().fold(v, |acc, key| {
        let mut m = Map::new();
        m.insert(key.clone(), acc);
        Value::Object(m)
    })
}

/// The field has at least one value.
fn push_exists(qb: &mut Qb<'_>, field: &Field) {
    match field {
        Field::Tags => {
            qb.push("(cardinality(tags) > 0)");
        }
        Field::Kind
        | Field::Namespace
        | Field::CreatedAt
        | Field::UpdatedAt
        | Field::OccurredAt => push_bool(qb, true),
        Field::Session => {
            qb.push("(session IS NOT NULL)");
        }
        Field::Metadata(path) => {
            if !path.iter().all(|p| text_ok(p)) {
                return push_bool(qb, false);
            }
            // An empty array has no values: it does not "exist".
            qb.push("COALESCE(CASE jsonb_typeof(");
            push_path(qb, path);
            qb.push(") WHEN 'array' THEN jsonb_array_length(");
            push_path(qb, path);
            qb.push(") > 0 ELSE (");
            push_path(qb, path);
            qb.push(") IS NOT NULL END, FALSE)");
        }
    }
}

fn push_cmp(qb: &mut Qb<'_>, field: &Field, c: CmpOp, bound: &Bound) {
    match (field, bound) {
        (Field::CreatedAt | Field::UpdatedAt | Field::OccurredAt, Bound::Time(t)) => {
            let (us, rem) = split_micros(*t);
            let Some(floor) = micros_to_time(us) else {
                // Earlier than every storable time: every value is greater.
                return push_bool(qb, matches!(c, CmpOp::Gt | CmpOp::Gte));
            };
            // For a bound b with sub-microsecond digits and microsecond x:
            // x > b <=> x >= b <=> x > floor(b); x < b <=> x <= b <=> x <= floor(b).
            let op = match (c, rem) {
                (c, false) => cmp_sql(c),
                (CmpOp::Gt | CmpOp::Gte, true) => ">",
                (CmpOp::Lt | CmpOp::Lte, true) => "<=",
            };
            qb.push("(")
                .push(time_column(field))
                .push(" ")
                .push(op)
                .push(" ")
                .push_bind(floor)
                .push(")");
        }
        (Field::Metadata(path), Bound::Number(x)) => {
            if x.is_nan() || !path.iter().all(|p| text_ok(p)) {
                return push_bool(qb, false);
            }
            let x = *x;
            push_any_value(qb, path, &|qb, e| {
                qb.push("CASE WHEN jsonb_typeof(");
                push_elem(qb, e);
                qb.push(") = 'number' THEN (");
                push_elem(qb, e);
                qb.push(")::float8 ")
                    .push(cmp_sql(c))
                    .push(" ")
                    .push_bind(x)
                    .push("::float8 ELSE FALSE END");
            });
        }
        (Field::Metadata(path), Bound::Time(t)) => {
            if !path.iter().all(|p| text_ok(p)) {
                return push_bool(qb, false);
            }
            let secs = t.timestamp();
            let nanos = i64::from(t.timestamp_subsec_nanos());
            push_any_value(qb, path, &|qb, e| {
                push_time_string_cmp(qb, e, c, secs, nanos)
            });
        }
        // Ordering is not defined on tags, kind or namespace, nor between
        // times and numbers: nothing matches (as in the evaluator).
        _ => push_bool(qb, false),
    }
}

fn cmp_sql(c: CmpOp) -> &'static str {
    match c {
        CmpOp::Gt => ">",
        CmpOp::Gte => ">=",
        CmpOp::Lt => "<",
        CmpOp::Lte => "<=",
    }
}

fn time_column(field: &Field) -> &'static str {
    match field {
        Field::UpdatedAt => "updated_at",
        Field::OccurredAt => "occurred_at",
        _ => "created_at",
    }
}

/// A metadata value or one element of it.
#[derive(Clone, Copy)]
enum Elem<'p> {
    /// The value at this path (SQL NULL when missing).
    Path(&'p [String]),
    /// The current element of the enclosing `jsonb_array_elements`.
    Item,
}

/// `metadata -> $1 -> $2 ...`: text keys only, so arrays are never indexed
/// into (unlike `#>`), as in the evaluator.
fn push_path(qb: &mut Qb<'_>, path: &[String]) {
    qb.push("(metadata");
    for key in path {
        qb.push(" -> ").push_bind(key.clone()).push("::text");
    }
    qb.push(")");
}

fn push_elem(qb: &mut Qb<'_>, e: Elem<'_>) {
    match e {
        Elem::Path(p) => push_path(qb, p),
        Elem::Item => {
            qb.push("_el._v");
        }
    }
}

/// Some value of the metadata field at `path` satisfies `pred`: an element
/// of it when it is an array, otherwise the value itself. `pred` must be
/// FALSE (not NULL) for a missing value.
fn push_any_value(qb: &mut Qb<'_>, path: &[String], pred: &dyn Fn(&mut Qb<'_>, Elem<'_>)) {
    qb.push("COALESCE(CASE jsonb_typeof(");
    push_path(qb, path);
    qb.push(") WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements(");
    push_path(qb, path);
    qb.push(") AS _el(_v) WHERE ");
    pred(qb, Elem::Item);
    qb.push(") ELSE ");
    pred(qb, Elem::Path(path));
    qb.push(" END, FALSE)");
}

/// The JSON value `e` is a string that parses as RFC 3339 (chrono's rules)
/// and compares `c` with the instant `(secs, nanos)` (nanos may exceed 10^9
/// for a leap second, as chrono represents it).
fn push_time_string_cmp(qb: &mut Qb<'_>, e: Elem<'_>, c: CmpOp, secs: i64, nanos: i64) {
    const R: &str = "_tm._r";
    let g = |i: usize| format!("{R}[{i}]::int");
    let (year, month, day) = (g(1), g(2), g(3));
    let (hour, minute, second) = (g(4), g(5), g(6));
    let days_in_month = format!(
        "CASE WHEN {month} = 2 THEN CASE WHEN ({year} % 4 = 0 AND {year} % 100 <> 0) OR {year} % 400 = 0 \
         THEN 29 ELSE 28 END WHEN {month} IN (4, 6, 9, 11) THEN 30 ELSE 31 END"
    );
    let valid = format!(
        "{month} BETWEEN 1 AND 12 AND {day} >= 1 AND {day} <= ({days_in_month}) AND {hour} <= 23 \
         AND {minute} <= 59 AND {second} <= 60 AND COALESCE({R}[9]::int, 0) <= 23"
    );
    // Astronomical year 0 is 1 BC for make_date. A leap second (:60) is
    // second 59 plus 10^9 ns, as chrono has it; the offset is whole minutes.
    let epoch_secs = format!(
        "(make_date(CASE WHEN {year} = 0 THEN -1 ELSE {year} END, {month}, {day}) - DATE '1970-01-01')::int8 * 86400 \
         + {hour} * 3600 + {minute} * 60 + LEAST({second}, 59) \
         - COALESCE(CASE WHEN {R}[8] = '+' THEN 1 ELSE -1 END * ({R}[9]::int8 * 3600 + {R}[10]::int8 * 60), 0)"
    );
    let epoch_nanos = format!(
        "COALESCE(rpad(left({R}[7], 9), 9, '0')::int8, 0) + CASE WHEN {second} = 60 THEN 1000000000 ELSE 0 END"
    );
    qb.push("CASE WHEN jsonb_typeof(");
    push_elem(qb, e);
    qb.push(") = 'string' THEN COALESCE((SELECT CASE WHEN ")
        .push(R)
        .push(" IS NULL THEN FALSE WHEN ")
        .push(valid)
        .push(" THEN ROW(")
        .push(epoch_secs)
        .push(", ")
        .push(epoch_nanos)
        .push(") ")
        .push(cmp_sql(c))
        .push(" ROW(")
        .push_bind(secs)
        .push("::int8, ")
        .push_bind(nanos)
        .push("::int8) ELSE FALSE END FROM regexp_match(");
    push_elem(qb, e);
    qb.push(" #>> '{}', '")
        .push(RFC3339_RE)
        .push("') AS _tm(_r)), FALSE) ELSE FALSE END");
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `t` as microseconds since the epoch rounded down, and whether anything
/// was rounded off. A leap second (chrono's nanos >= 10^9) sorts after every
/// microsecond of its second and before the next second: it becomes the
/// last microsecond of the second, plus a remainder.
fn split_micros(t: DateTime<Utc>) -> (i64, bool) {
    let secs = t.timestamp();
    let nanos = i64::from(t.timestamp_subsec_nanos());
    let base = secs.saturating_mul(1_000_000);
    if nanos >= 1_000_000_000 {
        (base.saturating_add(999_999), true)
    } else {
        (base.saturating_add(nanos / 1000), nanos % 1000 != 0)
    }
}

/// A microsecond instant PostgreSQL can store, as a value sqlx binds exactly.
fn micros_to_time(us: i64) -> Option<DateTime<Utc>> {
    if us < PG_MIN_MICROS {
        return None;
    }
    DateTime::from_timestamp_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_split_rounds_down_and_flags_remainders() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(
            split_micros(t("1970-01-01T00:00:01.000001Z")),
            (1_000_001, false)
        );
        assert_eq!(
            split_micros(t("1970-01-01T00:00:01.0000015Z")),
            (1_000_001, true)
        );
        assert_eq!(split_micros(t("1969-12-31T23:59:59.9999995Z")), (-1, true));
        assert_eq!(split_micros(t("1970-01-01T00:00:59.5Z")).0, 59_500_000);
        let leap = t("1970-01-01T00:00:60.5Z");
        assert_eq!(split_micros(leap), (59_999_999, true));
    }

    #[test]
    fn nest_builds_the_path() {
        let p = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            nest(&p, Value::from("x")),
            serde_json::json!({"a": {"b": "x"}})
        );
    }
}
