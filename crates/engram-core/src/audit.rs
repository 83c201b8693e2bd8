//! The audit log: an append-only, hash-chained list of events per tenant.
//!
//! Every write (create, update, delete, restore, purge, expiry, legal hold,
//! key change, job retry, namespace settings, and reads when configured)
//! appends an event in the same store transaction as the change. Event `n` of
//! a tenant holds the hash of event `n - 1` (the first holds [`GENESIS`]), and
//! its own hash covers every field, so [`Verifier`] detects an edited, removed,
//! inserted or reordered event. Removing events from the *end* of the chain is
//! only detectable against a head hash kept elsewhere (the store keeps one per
//! tenant, and an exported proof bundle carries it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::types::Principal;

/// `prev_hash` of a tenant's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditAction {
    Create,
    Update,
    Delete,
    Restore,
    Purge,
    Expire,
    LegalHold,
    LegalRelease,
    KeyCreate,
    KeyRevoke,
    JobRetry,
    NamespaceUpdate,
    Read,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Restore => "restore",
            AuditAction::Purge => "purge",
            AuditAction::Expire => "expire",
            AuditAction::LegalHold => "legal_hold",
            AuditAction::LegalRelease => "legal_release",
            AuditAction::KeyCreate => "key_create",
            AuditAction::KeyRevoke => "key_revoke",
            AuditAction::JobRetry => "job_retry",
            AuditAction::NamespaceUpdate => "namespace_update",
            AuditAction::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// Who acts, on behalf of which request: taken from the caller's principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCtx {
    pub actor: String,
    pub request_id: Option<String>,
    /// The request's W3C `traceparent` when traces are exported; stores keep
    /// it with the jobs the write enqueues so the worker's span links back
    /// (see [`crate::telemetry`]). Not part of the audit event.
    pub traceparent: Option<String>,
}

impl AuditCtx {
    pub fn of(p: &Principal) -> Self {
        AuditCtx {
            actor: p.subject.clone(),
            request_id: p.request_id.clone(),
            traceparent: crate::telemetry::current_traceparent(),
        }
    }

    /// Changes engram makes by itself (TTL expiry, retention purge).
    pub fn system(what: &str) -> Self {
        AuditCtx {
            actor: format!("system:{what}"),
            request_id: None,
            traceparent: None,
        }
    }
}

/// One event to append; the store adds position, time, chain and actor.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub tenant: String,
    pub action: AuditAction,
    pub target: String,
    pub details: Value,
}

impl AuditEntry {
    /// `key_create`: the new key's name, role and scope (never its secret).
    pub fn key_created(key: &crate::apikey::ApiKey) -> AuditEntry {
        let permissions: Vec<&str> = key.permissions.iter().map(|p| p.as_str()).collect();
        AuditEntry {
            tenant: key.tenant.clone(),
            action: AuditAction::KeyCreate,
            target: format!("key:{}", key.id),
            details: serde_json::json!({
                "name": key.name,
                "role": key.role.as_str(),
                "namespaces": key.namespaces,
                "permissions": permissions,
            }),
        }
    }

    /// `key_revoke` of a tenant's key `id` named `name`.
    pub fn key_revoked(tenant: &str, id: &str, name: &str) -> AuditEntry {
        AuditEntry {
            tenant: tenant.to_string(),
            action: AuditAction::KeyRevoke,
            target: format!("key:{id}"),
            details: serde_json::json!({ "name": name }),
        }
    }

    /// `job_retry` of a dead job, naming its memory.
    pub fn job_retried(tenant: &str, job_id: u64, memory_id: uuid::Uuid) -> AuditEntry {
        AuditEntry {
            tenant: tenant.to_string(),
            action: AuditAction::JobRetry,
            target: format!("job:{job_id}"),
            details: serde_json::json!({ "memory_id": memory_id }),
        }
    }
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub tenant: String,
    /// Position in the tenant's chain, from 1, without gaps.
    pub n: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: AuditAction,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEvent {
    /// Build event `n` after `prev_hash`, computing its hash.
    pub fn chain(
        entry: AuditEntry,
        ctx: &AuditCtx,
        n: u64,
        at: DateTime<Utc>,
        prev_hash: String,
    ) -> AuditEvent {
        let mut e = AuditEvent {
            tenant: entry.tenant,
            n,
            at,
            actor: ctx.actor.clone(),
            action: entry.action,
            target: entry.target,
            request_id: ctx.request_id.clone(),
            details: entry.details,
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    /// SHA-256 over a canonical JSON array of every field but `hash`. Times
    /// are integer microseconds (what the stores keep) and object keys are
    /// sorted, so the bytes do not depend on who serialises them.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            "engram-audit-v1",
            self.tenant,
            self.n,
            self.at.timestamp_micros(),
            self.actor,
            self.action.as_str(),
            self.target,
            self.request_id,
            canonical(&self.details),
            self.prev_hash,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// `v` with every object's keys in sorted order, whatever serde_json's map
/// type is (a dependency may enable `preserve_order`).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Filters for listing audit events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct AuditQuery {
    /// Events with `n` greater than this (a cursor).
    #[serde(default)]
    pub after: Option<u64>,
    /// Page size (default 100).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
    #[serde(default)]
    pub action: Option<AuditAction>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// Outcome of verifying a tenant's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    pub ok: bool,
    /// Events checked.
    pub events: u64,
    /// Hash of the last good event (the head when `ok`).
    pub head: String,
    /// The first event found broken (`n` where the chain expected it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Checks a chain fed in `n` order, page by page.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_n: u64,
    prev: String,
    checked: u64,
    broken: Option<(u64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            next_n: 1,
            prev: GENESIS.to_string(),
            checked: 0,
            broken: None,
        }
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next events. Returns false once the chain is broken (further
    /// events are ignored).
    pub fn feed(&mut self, events: &[AuditEvent]) -> bool {
        for e in events {
            if self.broken.is_some() {
                return false;
            }
            let n = self.next_n;
            let problem = if e.n != n {
                Some(format!(
                    "expected event {n}, found event {} (an event was removed, inserted or reordered)",
                    e.n
                ))
            } else if e.prev_hash != self.prev {
                Some(format!(
                    "event {n} does not follow event {} (prev_hash mismatch)",
                    n - 1
                ))
            } else if e.compute_hash() != e.hash {
                Some(format!("event {n} was modified (hash mismatch)"))
            } else {
                None
            };
            match problem {
                Some(reason) => self.broken = Some((n, reason)),
                None => {
                    self.prev = e.hash.clone();
                    self.next_n += 1;
                    self.checked += 1;
                }
            }
        }
        self.broken.is_none()
    }

    /// Compare the end of the chain with a head recorded elsewhere: events
    /// removed from the end leave the chain consistent but shorter.
    pub fn expect_head(&mut self, n: u64, hash: &str) {
        if self.broken.is_some() {
            return;
        }
        if self.checked != n || self.prev != hash {
            self.broken = Some((
                self.checked + 1,
                format!(
                    "the chain ends at event {} but the recorded head is event {n} (events were removed from the end, or the head was altered)",
                    self.checked
                ),
            ));
        }
    }

    pub fn report(self) -> VerifyReport {
        let (broken_at, reason) = match self.broken {
            Some((n, r)) => (Some(n), Some(r)),
            None => (None, None),
        };
        VerifyReport {
            ok: broken_at.is_none(),
            events: self.checked,
            head: self.prev,
            broken_at,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(len: u64) -> Vec<AuditEvent> {
        let ctx = AuditCtx {
            actor: "alice".into(),
            request_id: Some("r1".into()),
            traceparent: None,
        };
        let mut prev = GENESIS.to_string();
        (1..=len)
            .map(|n| {
                let e = AuditEvent::chain(
                    AuditEntry {
                        tenant: "acme".into(),
                        action: AuditAction::Create,
                        target: format!("m{n}"),
                        details: json!({"namespace": "ns", "n": n}),
                    },
                    &ctx,
                    n,
                    DateTime::from_timestamp_micros(1_700_000_000_000_000 + n as i64).unwrap(),
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> VerifyReport {
        let mut v = Verifier::new();
        v.feed(events);
        v.report()
    }

    #[test]
    fn an_intact_chain_verifies_page_by_page() {
        let events = chain(10);
        let mut v = Verifier::new();
        assert!(v.feed(&events[..4]));
        assert!(v.feed(&events[4..]));
        v.expect_head(10, &events[9].hash);
        let r = v.report();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.events, r.head.as_str()), (10, events[9].hash.as_str()));
    }

    #[test]
    fn edits_removals_insertions_and_reorders_are_caught_at_the_right_event() {
        let events = chain(6);
        let mut edited = events.clone();
        edited[3].target = "other".into();
        assert_eq!(verify(&edited).broken_at, Some(4));

        let mut details = events.clone();
        details[1].details = json!({"namespace": "ns", "n": 99});
        assert_eq!(verify(&details).broken_at, Some(2));

        let mut removed = events.clone();
        removed.remove(2);
        assert_eq!(verify(&removed).broken_at, Some(3));

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        assert_eq!(verify(&swapped).broken_at, Some(2));

        // Renumbering after a removal keeps n contiguous but breaks the links.
        let mut renumbered = events.clone();
        renumbered.remove(2);
        for (i, e) in renumbered.iter_mut().enumerate() {
            e.n = i as u64 + 1;
            e.hash = e.compute_hash();
        }
        assert_eq!(verify(&renumbered).broken_at, Some(3));

        // A fully re-hashed forgery is consistent: only the recorded head exposes it.
        let mut truncated = Verifier::new();
        assert!(truncated.feed(&events[..5]));
        truncated.expect_head(6, &events[5].hash);
        assert_eq!(truncated.report().broken_at, Some(6));
    }

    #[test]
    fn hash_covers_time_and_request_id() {
        let e = chain(1).remove(0);
        let mut t = e.clone();
        t.at += chrono::Duration::microseconds(1);
        assert_ne!(t.compute_hash(), e.hash);
        let mut r = e.clone();
        r.request_id = None;
        assert_ne!(r.compute_hash(), e.hash);
        assert_eq!(e.compute_hash(), e.hash);
    }
}
