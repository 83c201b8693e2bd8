//! The metadata filter language used by search and list.
//!
//! A filter is a JSON object, Mongo/Chroma style:
//!
//! ```json
//! {"$and": [
//!   {"metadata.topic": "billing"},
//!   {"metadata.priority": {"$gte": 2}},
//!   {"tags": {"$in": ["urgent", "vip"]}},
//!   {"created_at": {"$gt": "2026-01-01T00:00:00Z"}},
//!   {"$not": {"kind": "message"}}
//! ]}
//! ```
//!
//! * Logical: `$and` / `$or` (non-empty arrays), `$not` (one filter). Several
//!   keys in one object are an implicit `$and`.
//! * Fields: `metadata.<path>` (dots descend into objects), `tags`, `kind`,
//!   `namespace`, `created_at`, `updated_at`, `occurred_at` (the event time)
//!   and `session` (a message's session id; missing on other memories).
//! * Conditions: a bare value means `$eq`; otherwise an object with one or
//!   more of `$eq $ne $in $nin $gt $gte $lt $lte $exists`.
//! * Ordering operators take a number or an RFC 3339 time; a time operand
//!   compares against RFC 3339 strings in metadata.
//! * On an array-valued field (like `tags`), `$eq` / `$in` match when any
//!   element matches; `$ne` / `$nin` match when none does. A missing field
//!   matches only `$ne`, `$nin` and `$exists: false`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::types::DocAttrs;

const MAX_DEPTH: usize = 16;
const MAX_NODES: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cond(Field, Op),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Metadata(Vec<String>),
    Tags,
    Kind,
    Namespace,
    CreatedAt,
    UpdatedAt,
    OccurredAt,
    Session,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Cmp(CmpOp, Bound),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The operand of an ordering comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Number(f64),
    Time(DateTime<Utc>),
}

impl Filter {
    /// Parse a filter from JSON, with a clear error for anything malformed.
    pub fn parse(v: &Value) -> Result<Filter> {
        let mut nodes = 0;
        parse_node(v, 0, &mut nodes)
    }

    /// Serialise back to the JSON form (`parse(to_json(f)) == f`).
    pub fn to_json(&self) -> Value {
        match self {
            Filter::And(fs) => json_obj(
                "$and",
                Value::Array(fs.iter().map(|f| f.to_json()).collect()),
            ),
            Filter::Or(fs) => json_obj(
                "$or",
                Value::Array(fs.iter().map(|f| f.to_json()).collect()),
            ),
            Filter::Not(f) => json_obj("$not", f.to_json()),
            Filter::Cond(field, op) => {
                let (name, operand) = match op {
                    Op::Eq(v) => ("$eq", v.clone()),
                    Op::Ne(v) => ("$ne", v.clone()),
                    Op::In(vs) => ("$in", Value::Array(vs.clone())),
                    Op::Nin(vs) => ("$nin", Value::Array(vs.clone())),
                    Op::Exists(b) => ("$exists", Value::Bool(*b)),
                    Op::Cmp(c, b) => {
                        let name = match c {
                            CmpOp::Gt => "$gt",
                            CmpOp::Gte => "$gte",
                            CmpOp::Lt => "$lt",
                            CmpOp::Lte => "$lte",
                        };
                        let operand = match b {
                            Bound::Number(n) => serde_json::Number::from_f64(*n)
                                .map(Value::Number)
                                .unwrap_or(Value::Null),
                            Bound::Time(t) => Value::String(
                                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                            ),
                        };
                        (name, operand)
                    }
                };
                json_obj(&field.name(), json_obj(name, operand))
            }
        }
    }

    /// Whether a memory with these attributes passes the filter.
    pub fn matches(&self, a: &DocAttrs) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(a)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(a)),
            Filter::Not(f) => !f.matches(a),
            Filter::Cond(field, op) => eval(field, op, a),
        }
    }
}

fn json_obj(k: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(k.to_string(), v);
    Value::Object(m)
}

impl Field {
    fn parse(name: &str) -> Result<Field> {
        Ok(match name {
            "tags" => Field::Tags,
            "kind" => Field::Kind,
            "namespace" => Field::Namespace,
            "created_at" => Field::CreatedAt,
            "updated_at" => Field::UpdatedAt,
            "occurred_at" => Field::OccurredAt,
            "session" => Field::Session,
            _ => match name.strip_prefix("metadata.") {
                Some(path) => {
                    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                    if parts.iter().any(|p| p.is_empty()) {
                        return Err(Error::InvalidFilter(format!(
                            "field {name:?} has an empty path segment"
                        )));
                    }
                    Field::Metadata(parts)
                }
                None => {
                    return Err(Error::InvalidFilter(format!(
                        "unknown field {name:?}: use metadata.<key>, tags, kind, namespace, session, created_at, updated_at or occurred_at"
                    )))
                }
            },
        })
    }

    fn name(&self) -> String {
        match self {
            Field::Metadata(p) => format!("metadata.{}", p.join(".")),
            Field::Tags => "tags".into(),
            Field::Kind => "kind".into(),
            Field::Namespace => "namespace".into(),
            Field::CreatedAt => "created_at".into(),
            Field::UpdatedAt => "updated_at".into(),
            Field::OccurredAt => "occurred_at".into(),
            Field::Session => "session".into(),
        }
    }

    fn is_time(&self) -> bool {
        matches!(
            self,
            Field::CreatedAt | Field::UpdatedAt | Field::OccurredAt
        )
    }
}

fn parse_node(v: &Value, depth: usize, nodes: &mut usize) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidFilter(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(Error::InvalidFilter(format!(
            "more than {MAX_NODES} clauses"
        )));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| Error::InvalidFilter(format!("expected an object, got {}", type_name(v))))?;
    if obj.is_empty() {
        return Err(Error::InvalidFilter("empty filter object".into()));
    }
    let mut parts = Vec::with_capacity(obj.len());
    for (key, val) in obj {
        let f = match key.as_str() {
            "$and" | "$or" => {
                let arr = val.as_array().ok_or_else(|| {
                    Error::InvalidFilter(format!("{key} takes an array of filters"))
                })?;
                if arr.is_empty() {
                    return Err(Error::InvalidFilter(format!(
                        "{key} needs at least one filter"
                    )));
                }
                let fs = arr
                    .iter()
                    .map(|x| parse_node(x, depth + 1, nodes))
                    .collect::<Result<Vec<_>>>()?;
                if key == "$and" {
                    Filter::And(fs)
                } else {
                    Filter::Or(fs)
                }
            }
            "$not" => Filter::Not(Box::new(parse_node(val, depth + 1, nodes)?)),
            k if k.starts_with('$') => {
                return Err(Error::InvalidFilter(format!(
                    "unknown operator {k:?} at filter level: use $and, $or or $not"
                )))
            }
            field => {
                let field = Field::parse(field)?;
                parse_condition(field, val, nodes)?
            }
        };
        parts.push(f);
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Filter::And(parts)
    })
}

fn parse_condition(field: Field, v: &Value, nodes: &mut usize) -> Result<Filter> {
    let ops = match v {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
        Value::Object(_) => {
            return Err(Error::InvalidFilter(format!(
                "condition on {} must be a scalar or an object of $-operators",
                field.name()
            )))
        }
        Value::Array(_) => {
            return Err(Error::InvalidFilter(format!(
                "condition on {} is an array: use {{\"$in\": [...]}}",
                field.name()
            )))
        }
        scalar => return Ok(Filter::Cond(field.clone(), check_eq(&field, scalar)?)),
    };
    let mut conds = Vec::with_capacity(ops.len());
    for (name, operand) in ops {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(Error::InvalidFilter(format!(
                "more than {MAX_NODES} clauses"
            )));
        }
        let op = match name.as_str() {
            "$eq" => check_eq(&field, operand)?,
            "$ne" => match check_eq(&field, operand)? {
                Op::Eq(v) => Op::Ne(v),
                _ => unreachable!("check_eq returns Eq"),
            },
            "$in" | "$nin" => {
                let arr = operand.as_array().ok_or_else(|| {
                    Error::InvalidFilter(format!("{name} on {} takes an array", field.name()))
                })?;
                for x in arr {
                    check_eq(&field, x)?;
                }
                if name == "$in" {
                    Op::In(arr.clone())
                } else {
                    Op::Nin(arr.clone())
                }
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let c = match name.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Op::Cmp(c, parse_bound(&field, name, operand)?)
            }
            "$exists" => match operand {
                Value::Bool(b) => Op::Exists(*b),
                other => {
                    return Err(Error::InvalidFilter(format!(
                        "$exists takes true or false, got {}",
                        type_name(other)
                    )))
                }
            },
            other => {
                return Err(Error::InvalidFilter(format!(
                "unknown operator {other:?} on {}: use $eq $ne $in $nin $gt $gte $lt $lte $exists",
                field.name()
            )))
            }
        };
        conds.push(Filter::Cond(field.clone(), op));
    }
    Ok(if conds.len() == 1 {
        conds.pop().expect("one condition")
    } else {
        Filter::And(conds)
    })
}

/// Validate an equality operand for a field.
fn check_eq(field: &Field, v: &Value) -> Result<Op> {
    match field {
        Field::Metadata(_) => match v {
            Value::Array(_) | Value::Object(_) => Err(Error::InvalidFilter(format!(
                "{} can only be compared with a scalar, got {}",
                field.name(),
                type_name(v)
            ))),
            _ => Ok(Op::Eq(v.clone())),
        },
        Field::Tags | Field::Namespace | Field::Session => match v {
            Value::String(_) => Ok(Op::Eq(v.clone())),
            _ => Err(Error::InvalidFilter(format!(
                "{} takes strings, got {}",
                field.name(),
                type_name(v)
            ))),
        },
        Field::Kind => match v.as_str().and_then(crate::types::Kind::parse) {
            Some(_) => Ok(Op::Eq(v.clone())),
            None => Err(Error::InvalidFilter(format!(
                "kind must be one of fact, message, document_chunk, summary; got {v}"
            ))),
        },
        Field::CreatedAt | Field::UpdatedAt | Field::OccurredAt => {
            match v.as_str().and_then(parse_time) {
                Some(_) => Ok(Op::Eq(v.clone())),
                None => Err(Error::InvalidFilter(format!(
                    "{} takes an RFC 3339 time, got {v}",
                    field.name()
                ))),
            }
        }
    }
}

fn parse_bound(field: &Field, op: &str, v: &Value) -> Result<Bound> {
    let bound = match v {
        Value::Number(n) => n.as_f64().map(Bound::Number),
        Value::String(s) => parse_time(s).map(Bound::Time),
        _ => None,
    };
    match (bound, field) {
        (Some(Bound::Number(_)), f) if f.is_time() => Err(Error::InvalidFilter(format!(
            "{op} on {} takes an RFC 3339 time, got a number",
            f.name()
        ))),
        (Some(b), Field::Metadata(_) | Field::CreatedAt | Field::UpdatedAt | Field::OccurredAt) => {
            Ok(b)
        }
        (Some(_), f) => Err(Error::InvalidFilter(format!(
            "{op} is not supported on {}",
            f.name()
        ))),
        (None, f) => Err(Error::InvalidFilter(format!(
            "{op} on {} takes a number or an RFC 3339 time, got {v}",
            f.name()
        ))),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The values a field has on a document: none (missing), one, or several (arrays).
fn field_values<'a>(field: &Field, a: &'a DocAttrs) -> Vec<FieldValue<'a>> {
    match field {
        Field::Tags => a.tags.iter().map(|t| FieldValue::Str(t)).collect(),
        Field::Kind => vec![FieldValue::Str(a.kind.as_str())],
        Field::Namespace => vec![FieldValue::Str(&a.namespace)],
        Field::CreatedAt => vec![FieldValue::Time(a.created_at)],
        Field::UpdatedAt => vec![FieldValue::Time(a.updated_at)],
        Field::OccurredAt => vec![FieldValue::Time(a.occurred_at)],
        Field::Session => a.session.iter().map(|s| FieldValue::Str(&s.id)).collect(),
        Field::Metadata(path) => {
            let mut cur = a.metadata.get(&path[0]);
            for p in &path[1..] {
                cur = cur.and_then(|v| v.as_object()).and_then(|o| o.get(p));
            }
            match cur {
                None => vec![],
                Some(Value::Array(xs)) => xs.iter().map(FieldValue::Json).collect(),
                Some(v) => vec![FieldValue::Json(v)],
            }
        }
    }
}

enum FieldValue<'a> {
    Str(&'a str),
    Time(DateTime<Utc>),
    Json(&'a Value),
}

impl FieldValue<'_> {
    fn equals(&self, operand: &Value) -> bool {
        match (self, operand) {
            (FieldValue::Str(s), Value::String(o)) => *s == o,
            (FieldValue::Time(t), Value::String(o)) => parse_time(o) == Some(*t),
            (FieldValue::Json(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (FieldValue::Json(v), o) => *v == o,
            _ => false,
        }
    }

    fn compare(&self, b: &Bound) -> Option<Ordering> {
        match (self, b) {
            (FieldValue::Json(Value::Number(n)), Bound::Number(x)) => n.as_f64()?.partial_cmp(x),
            (FieldValue::Json(Value::String(s)), Bound::Time(t)) => Some(parse_time(s)?.cmp(t)),
            (FieldValue::Time(v), Bound::Time(t)) => Some(v.cmp(t)),
            _ => None,
        }
    }
}

fn eval(field: &Field, op: &Op, a: &DocAttrs) -> bool {
    let values = field_values(field, a);
    match op {
        Op::Eq(v) => values.iter().any(|x| x.equals(v)),
        Op::Ne(v) => !values.iter().any(|x| x.equals(v)),
        Op::In(vs) => values.iter().any(|x| vs.iter().any(|v| x.equals(v))),
        Op::Nin(vs) => !values.iter().any(|x| vs.iter().any(|v| x.equals(v))),
        Op::Exists(b) => values.is_empty() != *b,
        Op::Cmp(c, bound) => values.iter().any(|x| match x.compare(bound) {
            Some(ord) => match c {
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Gte => ord != Ordering::Less,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Lte => ord != Ordering::Greater,
            },
            None => false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc(meta: Value, tags: &[&str]) -> DocAttrs {
        DocAttrs {
            tenant: "t".into(),
            namespace: "ns".into(),
            kind: Kind::Fact,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            metadata: meta.as_object().cloned().unwrap_or_default(),
            created_at: "2026-03-01T10:00:00Z".parse().unwrap(),
            updated_at: "2026-03-02T10:00:00Z".parse().unwrap(),
            expires_at: None,
            occurred_at: "2023-05-08T13:56:00Z".parse().unwrap(),
            session: None,
        }
    }

    fn m(f: Value, d: &DocAttrs) -> bool {
        Filter::parse(&f).unwrap().matches(d)
    }

    #[test]
    fn scalar_and_operator_conditions() {
        let d = doc(
            json!({"topic": "billing", "n": 3, "nested": {"x": "y"}, "when": "2026-05-01T00:00:00Z"}),
            &["a", "b"],
        );
        assert!(m(json!({"metadata.topic": "billing"}), &d));
        assert!(!m(json!({"metadata.topic": "other"}), &d));
        assert!(m(json!({"metadata.n": {"$gte": 3, "$lt": 4}}), &d));
        assert!(!m(json!({"metadata.n": {"$gt": 3}}), &d));
        assert!(
            m(json!({"metadata.n": 3.0}), &d),
            "numbers compare by value"
        );
        assert!(m(json!({"metadata.nested.x": "y"}), &d));
        assert!(m(
            json!({"metadata.when": {"$gt": "2026-04-30T23:00:00Z"}}),
            &d
        ));
        // 00:30+01:00 is 23:30Z the day before: offsets are honoured.
        assert!(!m(
            json!({"metadata.when": {"$lt": "2026-05-01T00:30:00+01:00"}}),
            &d
        ));
        assert!(m(
            json!({"metadata.when": {"$lt": "2026-05-01T02:00:00+01:00"}}),
            &d
        ));
        assert!(m(json!({"tags": "a"}), &d));
        assert!(m(json!({"tags": {"$in": ["z", "b"]}}), &d));
        assert!(m(json!({"tags": {"$nin": ["z"]}}), &d));
        assert!(!m(json!({"tags": {"$nin": ["a"]}}), &d));
        assert!(m(json!({"kind": "fact"}), &d));
        assert!(m(
            json!({"created_at": {"$lt": "2026-03-01T10:00:01Z"}}),
            &d
        ));
        assert!(!m(
            json!({"created_at": {"$gt": "2026-03-01T10:00:00Z"}}),
            &d
        ));
        assert!(m(
            json!({"occurred_at": {"$gte": "2023-05-01T00:00:00Z", "$lt": "2023-06-01T00:00:00Z"}}),
            &d
        ));
        assert!(!m(
            json!({"occurred_at": {"$gt": "2023-05-08T13:56:00Z"}}),
            &d
        ));
        assert!(m(json!({"session": {"$exists": false}}), &d));
        let mut msg = d.clone();
        msg.session = Some(crate::types::SessionRef {
            id: "s1".into(),
            position: 3,
            speaker: None,
        });
        assert!(m(json!({"session": "s1"}), &msg));
        assert!(!m(json!({"session": "s2"}), &msg));
        assert!(!m(json!({"session": "s1"}), &d));
        assert!(m(json!({"metadata.missing": {"$exists": false}}), &d));
        assert!(m(json!({"metadata.missing": {"$ne": 1}}), &d));
        assert!(!m(json!({"metadata.missing": {"$lt": 1}}), &d));
        assert!(m(
            json!({"$or": [{"metadata.n": 1}, {"metadata.n": 3}]}),
            &d
        ));
        assert!(m(json!({"$not": {"metadata.n": 1}}), &d));
        assert!(
            !m(json!({"metadata.topic": "billing", "metadata.n": 1}), &d),
            "implicit and"
        );
    }

    #[test]
    fn array_metadata_matches_any_element() {
        let d = doc(json!({"people": ["ann", "bob"], "scores": [1, 5]}), &[]);
        assert!(m(json!({"metadata.people": "bob"}), &d));
        assert!(!m(json!({"metadata.people": {"$ne": "bob"}}), &d));
        assert!(m(json!({"metadata.scores": {"$gt": 4}}), &d));
    }

    #[test]
    fn bad_filters_are_rejected_with_a_reason() {
        for (f, needle) in [
            (json!([]), "expected an object"),
            (json!({}), "empty"),
            (json!({"topic": "x"}), "unknown field"),
            (json!({"metadata.": "x"}), "empty path"),
            (json!({"$and": []}), "at least one"),
            (json!({"$and": {}}), "array"),
            (json!({"$xor": []}), "unknown operator"),
            (json!({"metadata.a": {"$foo": 1}}), "unknown operator"),
            (json!({"metadata.a": {"$gt": "yesterday"}}), "RFC 3339"),
            (json!({"metadata.a": {"$in": 1}}), "array"),
            (json!({"metadata.a": [1, 2]}), "$in"),
            (json!({"metadata.a": {"$eq": {"b": 1}}}), "scalar"),
            (json!({"tags": 1}), "strings"),
            (json!({"kind": "poem"}), "kind must be"),
            (json!({"created_at": {"$gt": 5}}), "RFC 3339"),
            (json!({"tags": {"$gt": 1}}), "not supported"),
            (json!({"metadata.a": {"$exists": 1}}), "true or false"),
        ] {
            match Filter::parse(&f) {
                Err(Error::InvalidFilter(msg)) => {
                    assert!(msg.contains(needle), "{f}: {msg:?} lacks {needle:?}")
                }
                other => panic!("{f} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut f = json!({"metadata.a": 1});
        for _ in 0..40 {
            f = json!({ "$not": f });
        }
        assert!(matches!(Filter::parse(&f), Err(Error::InvalidFilter(_))));
    }

    fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z$.]{0,12}".prop_map(Value::String),
            Just(json!("2026-01-01T00:00:00Z")),
        ];
        leaf.prop_recursive(depth, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("$and".to_string()),
                        Just("$or".to_string()),
                        Just("$not".to_string()),
                        Just("$in".to_string()),
                        Just("$gt".to_string()),
                        Just("$exists".to_string()),
                        Just("metadata.a".to_string()),
                        Just("tags".to_string()),
                        Just("kind".to_string()),
                        Just("created_at".to_string()),
                        "[a-z$.]{0,8}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let field = prop_oneof![
            Just(Field::Metadata(vec!["a".into()])),
            Just(Field::Metadata(vec!["b".into(), "c".into()])),
            Just(Field::Tags),
        ];
        let scalar = prop_oneof![
            (-5i32..5).prop_map(|n| json!(n)),
            "[xyz]".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
        ];
        let op = prop_oneof![
            scalar.clone().prop_map(Op::Eq),
            scalar.clone().prop_map(Op::Ne),
            prop::collection::vec(scalar.clone(), 0..3).prop_map(Op::In),
            prop::collection::vec(scalar, 0..3).prop_map(Op::Nin),
            (-5i32..5).prop_map(|n| Op::Cmp(CmpOp::Gte, Bound::Number(n as f64))),
            (-5i32..5).prop_map(|n| Op::Cmp(CmpOp::Lt, Bound::Number(n as f64))),
            any::<bool>().prop_map(Op::Exists),
        ];
        let leaf = (field, op).prop_filter_map("tags take strings", |(f, o)| {
            let ok = match (&f, &o) {
                (Field::Tags, Op::Eq(v) | Op::Ne(v)) => v.is_string(),
                (Field::Tags, Op::In(vs) | Op::Nin(vs)) => vs.iter().all(Value::is_string),
                (Field::Tags, Op::Cmp(..)) => false,
                _ => true,
            };
            ok.then_some(Filter::Cond(f, o))
        });
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
                prop::collection::vec(inner.clone(), 1..4).prop_map(Filter::Or),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    fn arb_doc() -> impl Strategy<Value = DocAttrs> {
        let v = prop_oneof![
            (-5i32..5).prop_map(|n| json!(n)),
            "[xyz]".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            prop::collection::vec((-5i32..5).prop_map(|n| json!(n)), 0..3).prop_map(Value::Array),
        ];
        (
            prop::option::of(v.clone()),
            prop::option::of(v),
            prop::collection::vec("[xyz]", 0..3),
        )
            .prop_map(|(a, c, tags)| {
                let mut meta = serde_json::Map::new();
                if let Some(a) = a {
                    meta.insert("a".into(), a);
                }
                if let Some(c) = c {
                    meta.insert("b".into(), json!({ "c": c }));
                }
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                doc(Value::Object(meta), &tags)
            })
    }

    proptest! {
        #[test]
        fn parser_never_panics(v in arb_json(4)) {
            let _ = Filter::parse(&v);
        }

        #[test]
        fn json_roundtrip(f in arb_filter()) {
            let back = Filter::parse(&f.to_json()).unwrap();
            prop_assert_eq!(back, f);
        }

        #[test]
        fn logic_laws_hold(f in arb_filter(), g in arb_filter(), d in arb_doc()) {
            let not_f = Filter::Not(Box::new(f.clone()));
            prop_assert_eq!(not_f.matches(&d), !f.matches(&d));
            let and = Filter::And(vec![f.clone(), g.clone()]);
            prop_assert_eq!(and.matches(&d), f.matches(&d) && g.matches(&d));
            let or = Filter::Or(vec![f.clone(), g.clone()]);
            prop_assert_eq!(or.matches(&d), f.matches(&d) || g.matches(&d));
        }

        #[test]
        fn negated_operators_are_complements(v in (-5i32..5), d in arb_doc()) {
            let field = Field::Metadata(vec!["a".into()]);
            let eq = Filter::Cond(field.clone(), Op::Eq(json!(v)));
            let ne = Filter::Cond(field.clone(), Op::Ne(json!(v)));
            prop_assert_eq!(eq.matches(&d), !ne.matches(&d));
            let inn = Filter::Cond(field.clone(), Op::In(vec![json!(v), json!("x")]));
            let nin = Filter::Cond(field, Op::Nin(vec![json!(v), json!("x")]));
            prop_assert_eq!(inn.matches(&d), !nin.matches(&d));
        }
    }
}
