//! How a batch of new memories resolves against the live memories and
//! against itself (idempotent writes), decided once for every store.
//!
//! A store looks up the live memories that share an item's client id or text
//! checksum in its namespace (in SQL, one statement per kind of probe), then
//! [`InsertPlan::new`] resolves the batch in input order as if the items were
//! inserted one by one: a client-id match wins over a checksum match, and
//! earlier items of the batch count. The store inserts the plan's
//! [`fresh`](InsertPlan::fresh) items with their jobs and the plan's audit
//! events, and [`InsertPlan::outcome`] answers every item.

use serde_json::json;
use std::collections::HashMap;

use crate::audit::{AuditAction, AuditEntry};
use crate::error::{Error, Result};
use crate::types::{Inserted, Key, NewMemory, State};

/// What an input item turned out to be.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// A live memory that was already stored.
    Existing(Inserted),
    /// New: the `n`th fresh row of this batch.
    New(usize),
    /// A duplicate of the `n`th fresh row of this batch.
    SameAs(usize),
}

/// The resolution of one batch (see the module docs).
#[derive(Debug, Clone)]
pub struct InsertPlan {
    slots: Vec<Slot>,
    fresh: Vec<usize>,
}

type Probe<'a> = (&'a str, &'a str, &'a str);

impl InsertPlan {
    /// Resolve `items` given the live memories found for them, by item
    /// index: `by_client_id` (same tenant, namespace and client id) and
    /// `by_checksum` (same tenant, namespace and text checksum).
    pub fn new(
        items: &[NewMemory],
        by_client_id: &HashMap<usize, Inserted>,
        by_checksum: &HashMap<usize, Inserted>,
    ) -> InsertPlan {
        let mut batch_checksum: HashMap<Probe, usize> = HashMap::new();
        let mut batch_client: HashMap<Probe, usize> = HashMap::new();
        let mut fresh = Vec::new();
        let mut slots = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let client: Option<Probe> = item
                .client_id
                .as_deref()
                .map(|c| (item.tenant.as_str(), item.namespace.as_str(), c));
            let checksum: Probe = (&item.tenant, &item.namespace, &item.checksum);
            let by_client = client.and_then(|c| match by_client_id.get(&i) {
                Some(e) => Some(Slot::Existing(e.clone())),
                None => batch_client.get(&c).map(|&f| Slot::SameAs(f)),
            });
            let slot = match by_client {
                Some(s) => s,
                None => match by_checksum.get(&i) {
                    Some(e) => Slot::Existing(e.clone()),
                    None => match batch_checksum.get(&checksum) {
                        Some(&f) => Slot::SameAs(f),
                        None => {
                            let f = fresh.len();
                            fresh.push(i);
                            batch_checksum.insert(checksum, f);
                            if let Some(c) = client {
                                batch_client.insert(c, f);
                            }
                            Slot::New(f)
                        }
                    },
                },
            };
            slots.push(slot);
        }
        InsertPlan { slots, fresh }
    }

    /// Indexes of the items to insert, in input order. Their seqs must
    /// increase in this order.
    pub fn fresh(&self) -> &[usize] {
        &self.fresh
    }

    /// The `create` audit event of every fresh item, in order.
    pub fn audit_entries(&self, items: &[NewMemory]) -> Vec<AuditEntry> {
        self.fresh
            .iter()
            .map(|&i| {
                let m = &items[i];
                AuditEntry {
                    tenant: m.tenant.clone(),
                    action: AuditAction::Create,
                    target: m.id.to_string(),
                    details: json!({
                        "namespace": m.namespace,
                        "checksum": m.checksum,
                        "client_id": m.client_id,
                    }),
                }
            })
            .collect()
    }

    /// Every item's outcome, given the `(key, seq)` each fresh item was
    /// stored with (in [`fresh`](Self::fresh) order).
    pub fn outcome(self, items: &[NewMemory], stored: &[(Key, u64)]) -> Result<Vec<Inserted>> {
        if stored.len() != self.fresh.len() {
            return Err(Error::Internal(format!(
                "{} new memories planned, {} stored",
                self.fresh.len(),
                stored.len()
            )));
        }
        let fresh = |f: usize, created: bool| {
            let (key, seq) = stored[f];
            Inserted {
                id: items[self.fresh[f]].id,
                key,
                created,
                state: State::Pending,
                seq,
            }
        };
        Ok(self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Existing(e) => e.clone(),
                Slot::New(f) => fresh(*f, true),
                Slot::SameAs(f) => fresh(*f, false),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn item(ns: &str, checksum: &str, client_id: Option<&str>) -> NewMemory {
        let now = Utc::now();
        NewMemory {
            id: Uuid::now_v7(),
            tenant: "t".into(),
            namespace: ns.into(),
            text: checksum.into(),
            kind: Default::default(),
            metadata: Default::default(),
            tags: vec![],
            provenance: None,
            client_id: client_id.map(Into::into),
            checksum: checksum.into(),
            created_at: now,
            occurred_at: now,
            session: None,
            expires_at: None,
            pii: vec![],
        }
    }

    fn stored(key: Key) -> Inserted {
        Inserted {
            id: Uuid::now_v7(),
            key,
            created: false,
            state: State::Ready,
            seq: key,
        }
    }

    #[test]
    fn a_batch_resolves_as_if_inserted_one_by_one() {
        let items = vec![
            item("ns", "a", None),        // 0: new
            item("ns", "a", None),        // 1: same text as 0
            item("other", "a", None),     // 2: another namespace: new
            item("ns", "b", Some("k1")),  // 3: new
            item("ns", "c", Some("k1")),  // 4: same client id as 3, other text
            item("ns", "d", None),        // 5: stored already (checksum)
            item("ns", "e", Some("old")), // 6: stored already (client id)
        ];
        let by_checksum = HashMap::from([(5, stored(50))]);
        let by_client = HashMap::from([(6, stored(60))]);
        let plan = InsertPlan::new(&items, &by_client, &by_checksum);
        assert_eq!(plan.fresh(), [0, 2, 3]);
        let events = plan.audit_entries(&items);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].details["client_id"], "k1");
        assert_eq!(events[1].target, items[2].id.to_string());

        let out = plan
            .outcome(&items, &[(10, 100), (11, 101), (12, 102)])
            .unwrap();
        let keys: Vec<Key> = out.iter().map(|o| o.key).collect();
        assert_eq!(keys, [10, 10, 11, 12, 12, 50, 60]);
        let created: Vec<bool> = out.iter().map(|o| o.created).collect();
        assert_eq!(created, [true, false, true, true, false, false, false]);
        assert_eq!(out[1].id, items[0].id, "a duplicate answers the first's id");
        assert_eq!(
            out[5].state,
            State::Ready,
            "a stored memory keeps its state"
        );
    }

    #[test]
    fn a_client_id_match_wins_over_a_checksum_match() {
        let items = vec![item("ns", "same text", Some("mine"))];
        let by_checksum = HashMap::from([(0, stored(1))]);
        let by_client = HashMap::from([(0, stored(2))]);
        let plan = InsertPlan::new(&items, &by_client, &by_checksum);
        assert!(plan.fresh().is_empty());
        assert_eq!(plan.outcome(&items, &[]).unwrap()[0].key, 2);
    }

    #[test]
    fn an_outcome_needs_a_row_for_every_fresh_item() {
        let items = vec![item("ns", "a", None), item("ns", "b", None)];
        let plan = InsertPlan::new(&items, &HashMap::new(), &HashMap::new());
        assert!(plan.outcome(&items, &[(1, 1)]).is_err());
    }
}
