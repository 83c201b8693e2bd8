//! A memory's lifecycle transitions, decided once for every store: patch
//! (content and legal hold), soft delete, restore, purge, the retention
//! sweeps and a namespace's default TTL.
//!
//! Each transition is one store transaction ([`StoreTx`]) composed here from
//! row-level primitives, so which state allows which change, the "held"
//! refusals and the content of every audit event (which the audit hash
//! covers) cannot drift apart between the embedded and the scale-out store.
//! The stores keep only their SQL. [`Lifecycle`] is implemented for every
//! [`Store`], so callers write `store.restore(…)` as before.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashSet;
use uuid::Uuid;

use crate::audit::{AuditAction, AuditCtx, AuditEntry};
use crate::error::{Error, Result};
use crate::traits::{Due, Store, StoreTx};
use crate::types::{Key, Memory, MemoryPatch, SoftDeleted, State};

/// The transitions of [`crate::lifecycle`], on any [`Store`].
#[async_trait]
pub trait Lifecycle {
    /// Apply a patch to a live memory, all of it in one transaction with its
    /// audit events: a hold release first, then the content change (refused
    /// with `LegalHold` while a hold stays; nothing of the patch is applied
    /// then), then a hold placement. A new text resets it to `pending` and
    /// replaces its embedding job. A hold change alone keeps the seq. `None`
    /// if there is no live memory with that id. A text whose checksum equals
    /// another live memory's in the namespace is a `Conflict`.
    async fn update(
        &self,
        tenant: &str,
        id: Uuid,
        patch: MemoryPatch,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>>;

    /// Soft-delete a live memory. `None` if there is none; `LegalHold` if a
    /// hold keeps it.
    async fn soft_delete(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>>;

    /// Soft-delete the live memories among `ids` in one transaction, with
    /// their audit events; held ones are left alone and returned as such,
    /// ids without a live memory ignored.
    async fn soft_delete_many(
        &self,
        tenant: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<SoftDeleted>;

    /// Undo a soft delete (not a purge). `None` if there is no soft-deleted,
    /// unpurged memory with that id; `Conflict` if a live memory now has its
    /// text or client id. A memory deleted before it was embedded gets its
    /// embedding job back.
    async fn restore(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>>;

    /// Hard delete: erase text, metadata, tags, provenance and vector of a
    /// live or soft-deleted memory, keeping a tombstone (id, namespace, seq,
    /// times) so the change feed and the audit trail stay complete. `None` if
    /// there is no such memory or it is purged already; `LegalHold` if held.
    async fn purge(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>>;

    /// Place or release a legal hold on a live memory. `None` if there is
    /// none; a memory already in that state comes back unchanged, unaudited.
    async fn set_legal_hold(
        &self,
        tenant: &str,
        id: Uuid,
        hold: bool,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>>;

    /// Soft-delete up to `limit` live memories whose `expires_at` is at or
    /// before `now` and that are not on hold, auditing each as `expire` by
    /// `audit` at `now`. Returns how many.
    async fn expire_due(&self, now: DateTime<Utc>, limit: usize, audit: &AuditCtx)
        -> Result<usize>;

    /// Purge up to `limit` memories soft-deleted at or before `before` that
    /// are not on hold. Returns how many.
    async fn purge_deleted(
        &self,
        before: DateTime<Utc>,
        limit: usize,
        audit: &AuditCtx,
    ) -> Result<usize>;

    /// Set (or clear) a namespace's default TTL. `false` if it does not exist.
    async fn set_namespace_ttl(
        &self,
        tenant: &str,
        namespace: &str,
        ttl_seconds: Option<u64>,
        audit: &AuditCtx,
    ) -> Result<bool>;
}

/// Run one transition in a transaction of `$store`: commit what it returns,
/// or drop (roll back) the transaction on its error.
macro_rules! in_transaction {
    ($store:expr, $tx:ident => $call:expr) => {{
        let mut $tx = $store.begin().await?;
        let out = {
            let $tx = &mut *$tx;
            $call.await?
        };
        $tx.commit().await?;
        Ok(out)
    }};
}

#[async_trait]
impl<S: Store + ?Sized> Lifecycle for S {
    async fn update(
        &self,
        tenant: &str,
        id: Uuid,
        patch: MemoryPatch,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>> {
        in_transaction!(self, tx => update(tx, tenant, id, patch, now, audit))
    }

    async fn soft_delete(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>> {
        let mut out = self.soft_delete_many(tenant, &[id], now, audit).await?;
        if let Some(m) = out.held.first() {
            return Err(held(m, "deleted"));
        }
        Ok(out.deleted.pop())
    }

    async fn soft_delete_many(
        &self,
        tenant: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<SoftDeleted> {
        in_transaction!(self, tx => soft_delete_many(tx, tenant, ids, now, audit))
    }

    async fn restore(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>> {
        in_transaction!(self, tx => restore(tx, tenant, id, now, audit))
    }

    async fn purge(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>> {
        in_transaction!(self, tx => purge(tx, tenant, id, now, audit))
    }

    async fn set_legal_hold(
        &self,
        tenant: &str,
        id: Uuid,
        hold: bool,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Memory>> {
        in_transaction!(self, tx => set_legal_hold(tx, tenant, id, hold, now, audit))
    }

    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        audit: &AuditCtx,
    ) -> Result<usize> {
        if limit == 0 {
            return Ok(0);
        }
        in_transaction!(self, tx => sweep(tx, Due::Expired, now, now, limit, audit))
    }

    async fn purge_deleted(
        &self,
        before: DateTime<Utc>,
        limit: usize,
        audit: &AuditCtx,
    ) -> Result<usize> {
        if limit == 0 {
            return Ok(0);
        }
        // A purge happens now, whatever the deletion cut-off.
        in_transaction!(self, tx => sweep(tx, Due::Deleted, before, Utc::now(), limit, audit))
    }

    async fn set_namespace_ttl(
        &self,
        tenant: &str,
        namespace: &str,
        ttl_seconds: Option<u64>,
        audit: &AuditCtx,
    ) -> Result<bool> {
        in_transaction!(self, tx => set_namespace_ttl(tx, tenant, namespace, ttl_seconds, audit))
    }
}

// The transitions themselves, each inside a transaction its caller commits
// (an error drops it: nothing of the transition stays). They follow the
// call order of [`StoreTx`]: locks, jobs, audit events, then seqs.

async fn update(
    tx: &mut dyn StoreTx,
    tenant: &str,
    id: Uuid,
    patch: MemoryPatch,
    now: DateTime<Utc>,
    audit: &AuditCtx,
) -> Result<Option<Memory>> {
    let Some(mut m) = live(tx.lock_memory(tenant, id).await?) else {
        return Ok(None);
    };
    // A hold released here and a change refused later roll back together
    // (audit events too).
    let content = patch.changes_content();
    let mut events = Vec::new();
    if patch.legal_hold == Some(false) && m.legal_hold {
        events.push(hold_entry(&m, false));
        m = tx.set_hold(m.key, false, now).await?;
    }
    if content && m.legal_hold {
        return Err(held(&m, "changed"));
    }
    let place = patch.legal_hold == Some(true) && !m.legal_hold;
    if !content {
        if place {
            events.push(hold_entry(&m, true));
            m = tx.set_hold(m.key, true, now).await?;
        }
        tx.append_audit(events, audit, now).await?;
        return Ok(Some(m));
    }
    let reembed = patch.changes_text(&m);
    if let Some((_, checksum)) = patch.text.as_ref().filter(|_| reembed) {
        let other = tx
            .live_with_checksum(&m.tenant, &m.namespace, checksum, m.key)
            .await?;
        if let Some(other) = other {
            return Err(Error::Conflict(format!(
                "memory {other} in namespace {:?} already has this text",
                m.namespace
            )));
        }
    }
    let fields = patch.apply_to(&mut m);
    if reembed {
        // Replace whatever job the memory had with a fresh one for the new
        // text. A fresh id (rather than resetting the old row) keeps a late
        // completion or failure of the old job from touching it.
        tx.drop_jobs(&[m.key]).await?;
        tx.enqueue_job(&m, now, audit).await?;
    }
    events.push(entry(
        &m,
        AuditAction::Update,
        json!({"namespace": m.namespace, "fields": fields, "checksum": m.checksum}),
    ));
    if place {
        events.push(hold_entry(&m, true));
        m.legal_hold = true;
    }
    tx.append_audit(events, audit, now).await?;
    // Last: the seq, and the row that carries it (and a placed hold).
    Ok(Some(tx.write_content(&m, now).await?))
}

async fn soft_delete_many(
    tx: &mut dyn StoreTx,
    tenant: &str,
    ids: &[Uuid],
    now: DateTime<Utc>,
    audit: &AuditCtx,
) -> Result<SoftDeleted> {
    let mut out = SoftDeleted::default();
    let mut events = Vec::new();
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    for &id in ids {
        if !seen.insert(id) {
            continue;
        }
        let Some(m) = live(tx.lock_memory(tenant, id).await?) else {
            continue;
        };
        if m.legal_hold {
            out.held.push(m);
            continue;
        }
        events.push(entry(
            &m,
            AuditAction::Delete,
            json!({"namespace": m.namespace}),
        ));
        keys.push(m.key);
    }
    if keys.is_empty() {
        return Ok(out);
    }
    // Nothing is left to embed, and a dead job of a deleted memory is not
    // retryable either.
    tx.drop_jobs(&keys).await?;
    tx.append_audit(events, audit, now).await?;
    out.deleted = tx.soft_delete_rows(&keys, now).await?;
    Ok(out)
}

async fn restore(
    tx: &mut dyn StoreTx,
    tenant: &str,
    id: Uuid,
    now: DateTime<Utc>,
    audit: &AuditCtx,
) -> Result<Option<Memory>> {
    let Some(m) = tx.lock_memory(tenant, id).await? else {
        return Ok(None);
    };
    if m.deleted_at.is_none() {
        return Ok(None);
    }
    if m.state != State::Ready {
        // It was deleted before it was embedded: embed it now.
        tx.enqueue_job(&m, now, audit).await?;
    }
    tx.append_audit(
        vec![entry(
            &m,
            AuditAction::Restore,
            json!({"namespace": m.namespace}),
        )],
        audit,
        now,
    )
    .await?;
    Ok(Some(tx.undelete(m.key, now).await?))
}

async fn purge(
    tx: &mut dyn StoreTx,
    tenant: &str,
    id: Uuid,
    now: DateTime<Utc>,
    audit: &AuditCtx,
) -> Result<Option<Memory>> {
    let Some(m) = tx.lock_memory(tenant, id).await? else {
        return Ok(None);
    };
    if m.legal_hold {
        return Err(held(&m, "deleted"));
    }
    tx.drop_jobs(&[m.key]).await?;
    tx.append_audit(vec![purge_entry(&m)], audit, now).await?;
    Ok(Some(one(tx.purge_rows(&[m.key], now).await?)?))
}

async fn set_legal_hold(
    tx: &mut dyn StoreTx,
    tenant: &str,
    id: Uuid,
    hold: bool,
    now: DateTime<Utc>,
    audit: &AuditCtx,
) -> Result<Option<Memory>> {
    let Some(m) = live(tx.lock_memory(tenant, id).await?) else {
        return Ok(None);
    };
    if m.legal_hold == hold {
        return Ok(Some(m));
    }
    tx.append_audit(vec![hold_entry(&m, hold)], audit, now)
        .await?;
    Ok(Some(tx.set_hold(m.key, hold, now).await?))
}

/// One retention sweep of the memories `due` by `by`, changed at `now`.
async fn sweep(
    tx: &mut dyn StoreTx,
    due: Due,
    by: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: usize,
    audit: &AuditCtx,
) -> Result<usize> {
    let memories = tx.lock_due(due, by, limit).await?;
    if memories.is_empty() {
        return Ok(0);
    }
    let keys: Vec<Key> = memories.iter().map(|m| m.key).collect();
    tx.drop_jobs(&keys).await?;
    let entries: Vec<AuditEntry> = memories
        .iter()
        .map(|m| match due {
            Due::Expired => entry(
                m,
                AuditAction::Expire,
                json!({"namespace": m.namespace, "expires_at": m.expires_at}),
            ),
            Due::Deleted => purge_entry(m),
        })
        .collect();
    tx.append_audit(entries, audit, now).await?;
    match due {
        Due::Expired => tx.soft_delete_rows(&keys, now).await?,
        Due::Deleted => tx.purge_rows(&keys, now).await?,
    };
    Ok(keys.len())
}

async fn set_namespace_ttl(
    tx: &mut dyn StoreTx,
    tenant: &str,
    namespace: &str,
    ttl_seconds: Option<u64>,
    audit: &AuditCtx,
) -> Result<bool> {
    if !tx.set_namespace_ttl(tenant, namespace, ttl_seconds).await? {
        return Ok(false);
    }
    let event = AuditEntry {
        tenant: tenant.to_string(),
        action: AuditAction::NamespaceUpdate,
        target: format!("namespace:{namespace}"),
        details: json!({ "default_ttl_seconds": ttl_seconds }),
    };
    tx.append_audit(vec![event], audit, Utc::now()).await?;
    Ok(true)
}

/// The refusal of a change to a held memory; `what` completes "cannot be …".
pub fn held(m: &Memory, what: &str) -> Error {
    Error::LegalHold(format!(
        "memory {} is under legal hold and cannot be {what} until the hold is released",
        m.id
    ))
}

/// An audit event about memory `m`.
pub fn entry(m: &Memory, action: AuditAction, details: Value) -> AuditEntry {
    AuditEntry {
        tenant: m.tenant.clone(),
        action,
        target: m.id.to_string(),
        details,
    }
}

/// The audit event of placing (`hold`) or releasing a legal hold on `m`.
pub fn hold_entry(m: &Memory, hold: bool) -> AuditEntry {
    let action = if hold {
        AuditAction::LegalHold
    } else {
        AuditAction::LegalRelease
    };
    entry(m, action, json!({"namespace": m.namespace}))
}

/// The checksum says which content was erased, without keeping it.
fn purge_entry(m: &Memory) -> AuditEntry {
    entry(
        m,
        AuditAction::Purge,
        json!({"namespace": m.namespace, "checksum": m.checksum}),
    )
}

/// Only a live (not soft-deleted) memory.
fn live(m: Option<Memory>) -> Option<Memory> {
    m.filter(|m| m.deleted_at.is_none())
}

fn one(mut rows: Vec<Memory>) -> Result<Memory> {
    match rows.len() {
        1 => Ok(rows.remove(0)),
        n => Err(Error::Internal(format!(
            "one row changed expected, {n} were"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The transitions against a recording [`StoreTx`] (a hermetic test
    //! double: rows in a map, every call logged). The conformance suite runs
    //! the same transitions on both real stores; this checks what only the
    //! shared code decides: the call order every store's locking relies on,
    //! the refusals, and the audit events' content.
    use super::*;
    use crate::types::sample_memory;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Recording {
        rows: HashMap<Uuid, Memory>,
        /// Another live memory holding this checksum.
        taken: Option<(String, Uuid)>,
        log: Vec<String>,
        audited: Vec<AuditEntry>,
        seq_taken: bool,
    }

    impl Recording {
        fn with(memories: Vec<Memory>) -> Self {
            Recording {
                rows: memories.into_iter().map(|m| (m.id, m)).collect(),
                ..Default::default()
            }
        }

        fn row(&mut self, key: Key) -> &mut Memory {
            self.rows.values_mut().find(|m| m.key == key).unwrap()
        }

        /// A change that takes a seq: after it, no audit event may come
        /// (PostgreSQL locks the chain heads before the seq row).
        fn take_seq(&mut self, what: &str, key: Key) {
            self.seq_taken = true;
            self.log.push(format!("{what} {key}"));
        }

        fn actions(&self) -> Vec<&'static str> {
            self.audited.iter().map(|e| e.action.as_str()).collect()
        }
    }

    #[async_trait]
    impl StoreTx for Recording {
        async fn lock_memory(&mut self, tenant: &str, id: Uuid) -> Result<Option<Memory>> {
            assert!(!self.seq_taken, "rows are locked before the seq");
            self.log.push("lock".into());
            Ok(self.rows.get(&id).filter(|m| m.tenant == tenant).cloned())
        }
        async fn lock_due(&mut self, due: Due, by: DateTime<Utc>, _: usize) -> Result<Vec<Memory>> {
            self.log.push(format!("lock_due {due:?}"));
            let mut v: Vec<Memory> = self
                .rows
                .values()
                .filter(|m| !m.legal_hold)
                .filter(|m| match due {
                    Due::Expired => m.deleted_at.is_none() && m.expires_at.is_some_and(|e| e <= by),
                    Due::Deleted => m.deleted_at.is_some_and(|d| d <= by),
                })
                .cloned()
                .collect();
            v.sort_by_key(|m| m.key);
            Ok(v)
        }
        async fn enqueue_job(&mut self, m: &Memory, _: DateTime<Utc>, _: &AuditCtx) -> Result<()> {
            assert!(!self.seq_taken, "jobs change before the seq");
            self.log.push(format!("enqueue {}", m.key));
            Ok(())
        }
        async fn drop_jobs(&mut self, keys: &[Key]) -> Result<()> {
            assert!(!self.seq_taken, "jobs change before the seq");
            self.log.push(format!("drop_jobs {keys:?}"));
            Ok(())
        }
        async fn append_audit(
            &mut self,
            entries: Vec<AuditEntry>,
            _: &AuditCtx,
            _: DateTime<Utc>,
        ) -> Result<()> {
            assert!(!self.seq_taken, "audit events are appended before the seq");
            if !entries.is_empty() {
                self.log.push(format!("audit {}", entries.len()));
            }
            self.audited.extend(entries);
            Ok(())
        }
        async fn live_with_checksum(
            &mut self,
            _: &str,
            _: &str,
            checksum: &str,
            _: Key,
        ) -> Result<Option<Uuid>> {
            Ok(self
                .taken
                .as_ref()
                .filter(|(c, _)| c == checksum)
                .map(|(_, id)| *id))
        }
        async fn set_hold(&mut self, key: Key, hold: bool, _: DateTime<Utc>) -> Result<Memory> {
            self.log.push(format!("hold {hold}"));
            let m = self.row(key);
            m.legal_hold = hold;
            Ok(m.clone())
        }
        async fn write_content(&mut self, m: &Memory, _: DateTime<Utc>) -> Result<Memory> {
            self.take_seq("write", m.key);
            *self.row(m.key) = m.clone();
            Ok(m.clone())
        }
        async fn undelete(&mut self, key: Key, _: DateTime<Utc>) -> Result<Memory> {
            self.take_seq("undelete", key);
            let m = self.row(key);
            m.deleted_at = None;
            Ok(m.clone())
        }
        async fn soft_delete_rows(
            &mut self,
            keys: &[Key],
            now: DateTime<Utc>,
        ) -> Result<Vec<Memory>> {
            let mut out = Vec::new();
            for &k in keys {
                self.take_seq("delete", k);
                let m = self.row(k);
                m.deleted_at = Some(now);
                out.push(m.clone());
            }
            Ok(out)
        }
        async fn purge_rows(&mut self, keys: &[Key], now: DateTime<Utc>) -> Result<Vec<Memory>> {
            let mut out = Vec::new();
            for &k in keys {
                self.take_seq("purge", k);
                let m = self.row(k);
                m.text.clear();
                m.deleted_at = m.deleted_at.or(Some(now));
                out.push(m.clone());
            }
            Ok(out)
        }
        async fn set_namespace_ttl(&mut self, _: &str, ns: &str, _: Option<u64>) -> Result<bool> {
            Ok(ns == "ns")
        }
        async fn commit(self: Box<Self>) -> Result<()> {
            unreachable!("the transitions leave the commit to their caller")
        }
    }

    fn memory(key: Key) -> Memory {
        Memory {
            key,
            id: Uuid::now_v7(),
            ..sample_memory()
        }
    }

    fn ctx() -> AuditCtx {
        AuditCtx::system("test")
    }

    #[tokio::test]
    async fn a_refused_change_after_a_hold_release_fails_whole() {
        let mut m = memory(1);
        m.legal_hold = true;
        let mut tx = Recording::with(vec![m.clone()]);
        tx.taken = Some(("sum-new".into(), Uuid::now_v7()));
        let patch = MemoryPatch {
            text: Some(("new text".into(), "sum-new".into())),
            legal_hold: Some(false),
            ..Default::default()
        };
        let err = update(&mut tx, "t", m.id, patch, Utc::now(), &ctx())
            .await
            .unwrap_err();
        // The caller drops the transaction on this error: the release
        // (already written in it) and its event go with it.
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert_eq!(tx.log, ["lock", "hold false"]);
        assert!(
            tx.audited.is_empty(),
            "the release's event was not appended"
        );
    }

    #[tokio::test]
    async fn a_patch_releasing_changing_and_placing_audits_in_that_order_before_its_seq() {
        let mut m = memory(1);
        m.legal_hold = true;
        let mut tx = Recording::with(vec![m.clone()]);
        let patch = MemoryPatch {
            text: Some(("new text".into(), "sum-new".into())),
            legal_hold: Some(false),
            ..Default::default()
        };
        let out = update(&mut tx, "t", m.id, patch, Utc::now(), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert!(!out.legal_hold);
        assert_eq!(out.state, State::Pending, "a new text is embedded again");
        assert_eq!(tx.actions(), ["legal_release", "update"]);
        assert_eq!(
            tx.log,
            [
                "lock",
                "hold false",
                "drop_jobs [1]",
                "enqueue 1",
                "audit 2",
                "write 1"
            ]
        );
        let details = &tx.audited[1].details;
        assert_eq!(details["checksum"], "sum-new");
        assert_eq!(details["fields"], json!(["text"]));

        // Placing a hold with a change: the change's event first, the hold's
        // after it, and the hold is written with the content (one seq).
        let m = memory(2);
        let mut tx = Recording::with(vec![m.clone()]);
        let patch = MemoryPatch {
            tags: Some(vec!["x".into()]),
            legal_hold: Some(true),
            ..Default::default()
        };
        let out = update(&mut tx, "t", m.id, patch, Utc::now(), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert!(out.legal_hold);
        assert_eq!(tx.actions(), ["update", "legal_hold"]);
        assert_eq!(tx.log, ["lock", "audit 2", "write 2"]);
    }

    #[tokio::test]
    async fn held_memories_are_neither_changed_deleted_nor_purged() {
        let mut m = memory(1);
        m.legal_hold = true;
        let mut tx = Recording::with(vec![m.clone()]);
        let patch = MemoryPatch {
            tags: Some(vec!["x".into()]),
            ..Default::default()
        };
        let e = update(&mut tx, "t", m.id, patch, Utc::now(), &ctx()).await;
        assert!(matches!(e, Err(Error::LegalHold(ref s)) if s.contains("cannot be changed")));
        let e = purge(&mut tx, "t", m.id, Utc::now(), &ctx()).await;
        assert!(matches!(e, Err(Error::LegalHold(ref s)) if s.contains("cannot be deleted")));
        let out = soft_delete_many(&mut tx, "t", &[m.id], Utc::now(), &ctx())
            .await
            .unwrap();
        assert_eq!(out.held.len(), 1);
        assert!(out.deleted.is_empty());
        assert!(tx.audited.is_empty() && !tx.seq_taken, "nothing written");
    }

    #[tokio::test]
    async fn restore_re_embeds_a_memory_deleted_before_it_was_embedded() {
        let mut ready = memory(1);
        ready.deleted_at = Some(Utc::now());
        let mut pending = memory(2);
        pending.deleted_at = Some(Utc::now());
        pending.state = State::Pending;
        let live = memory(3);
        let mut tx = Recording::with(vec![ready.clone(), pending.clone(), live.clone()]);
        let now = Utc::now();
        for (tenant, m, restored) in [
            ("other", &ready, false),
            ("t", &ready, true),
            ("t", &pending, true),
            ("t", &live, false),
        ] {
            tx.seq_taken = false; // each call is its own transaction
            let out = restore(&mut tx, tenant, m.id, now, &ctx()).await.unwrap();
            assert_eq!(out.is_some(), restored, "{tenant} {}", m.key);
        }
        let enqueued: Vec<_> = tx.log.iter().filter(|l| l.starts_with("enqueue")).collect();
        assert_eq!(enqueued, ["enqueue 2"]);
        assert_eq!(tx.actions(), ["restore", "restore"]);
    }

    #[tokio::test]
    async fn purge_events_name_the_erased_checksum_not_the_text() {
        let m = memory(1);
        let mut tx = Recording::with(vec![m.clone()]);
        let purged = purge(&mut tx, "t", m.id, Utc::now(), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert!(purged.text.is_empty() && purged.deleted_at.is_some());
        assert_eq!(tx.log, ["lock", "drop_jobs [1]", "audit 1", "purge 1"]);
        assert_eq!(
            tx.audited[0].details,
            json!({"namespace": "ns", "checksum": "sum-old"})
        );
        assert!(!tx.audited[0].details.to_string().contains("Old text"));
    }

    #[tokio::test]
    async fn sweeps_skip_held_memories_and_audit_each_one() {
        let past = Utc::now() - chrono::TimeDelta::seconds(10);
        let mut due = memory(1);
        due.expires_at = Some(past);
        let mut held_due = memory(2);
        held_due.expires_at = Some(past);
        held_due.legal_hold = true;
        let later = memory(3);
        let mut tx = Recording::with(vec![due.clone(), held_due, later]);
        let n = sweep(&mut tx, Due::Expired, Utc::now(), Utc::now(), 10, &ctx())
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(tx.actions(), ["expire"]);
        assert_eq!(tx.audited[0].target, due.id.to_string());
        assert_eq!(tx.log.last().unwrap(), "delete 1");

        // Nothing due: nothing written.
        let mut tx = Recording::with(vec![memory(4)]);
        let n = sweep(&mut tx, Due::Deleted, Utc::now(), Utc::now(), 10, &ctx())
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert!(tx.audited.is_empty() && !tx.seq_taken);
    }

    #[tokio::test]
    async fn a_hold_change_to_the_state_it_has_is_not_audited() {
        let m = memory(1);
        let mut tx = Recording::with(vec![m.clone()]);
        let same = set_legal_hold(&mut tx, "t", m.id, false, Utc::now(), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert!(!same.legal_hold);
        assert!(tx.audited.is_empty());
        let placed = set_legal_hold(&mut tx, "t", m.id, true, Utc::now(), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert!(placed.legal_hold);
        assert_eq!(tx.actions(), ["legal_hold"]);
        assert!(!tx.seq_taken, "a hold is not a content change");
    }
}
