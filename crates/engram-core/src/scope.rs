//! What a search may see: tenant, namespaces, metadata filter and time.
//!
//! Embedded indexes evaluate a [`Scope`] per candidate key inside their search
//! (usearch's filtered search, a tantivy filter collector) using the
//! [`AttrTable`] the engine keeps in step with the change feed. Indexes that
//! live in a database translate the public fields to their query language.

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use crate::filter::Filter;
use crate::types::{DocAttrs, Key};

/// Filter attributes of every indexed memory, by key. Derived state: loaded
/// from the store on start and updated by the indexer.
#[derive(Default)]
pub struct AttrTable {
    map: RwLock<HashMap<Key, Arc<DocAttrs>>>,
    /// Seq of the last versioned change per key, so that a change the indexer
    /// applies late cannot undo a newer one the engine applied directly (for
    /// example a delete, which must hide the memory at once).
    versions: RwLock<HashMap<Key, u64>>,
}

impl AttrTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, key: Key, attrs: Arc<DocAttrs>) {
        self.map.write().insert(key, attrs);
    }

    pub fn remove(&self, key: Key) {
        self.map.write().remove(&key);
    }

    /// Apply the state of `key` as of change `seq`, unless a newer one was
    /// applied already. `None` hides the key.
    pub fn apply_versioned(&self, key: Key, seq: u64, attrs: Option<Arc<DocAttrs>>) {
        let mut versions = self.versions.write();
        let v = versions.entry(key).or_insert(0);
        if *v > seq {
            return;
        }
        *v = seq;
        let mut map = self.map.write();
        match attrs {
            Some(a) => {
                map.insert(key, a);
            }
            None => {
                map.remove(&key);
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<Arc<DocAttrs>> {
        self.map.read().get(&key).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.versions.write().clear();
        self.map.write().clear();
    }

    /// Keys whose attributes satisfy `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(&DocAttrs) -> bool) -> Vec<Key> {
        self.map
            .read()
            .iter()
            .filter(|(_, a)| pred(a))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The visibility rules of one search.
pub struct Scope<'a> {
    pub tenant: &'a str,
    /// Empty means every namespace of the tenant.
    pub namespaces: &'a [String],
    pub filter: Option<&'a Filter>,
    pub now: DateTime<Utc>,
    attrs: &'a AttrTable,
}

impl<'a> Scope<'a> {
    pub fn new(
        tenant: &'a str,
        namespaces: &'a [String],
        filter: Option<&'a Filter>,
        now: DateTime<Utc>,
        attrs: &'a AttrTable,
    ) -> Self {
        Scope {
            tenant,
            namespaces,
            filter,
            now,
            attrs,
        }
    }

    /// Whether these attributes are visible in this scope.
    pub fn matches(&self, a: &DocAttrs) -> bool {
        a.tenant == self.tenant
            && (self.namespaces.is_empty() || self.namespaces.contains(&a.namespace))
            && a.expires_at.is_none_or(|t| t > self.now)
            && self.filter.is_none_or(|f| f.matches(a))
    }

    /// Whether the memory with this key is visible. Unknown keys (deleted, not
    /// yet ready) are not.
    pub fn allows(&self, key: Key) -> bool {
        self.attrs.get(key).is_some_and(|a| self.matches(&a))
    }

    /// Every visible key, for exact (brute-force) search.
    pub fn allowed_keys(&self) -> Vec<Key> {
        self.attrs.keys_where(|a| self.matches(a))
    }

    /// Total number of indexed memories (all tenants).
    pub fn indexed(&self) -> usize {
        self.attrs.len()
    }
}
