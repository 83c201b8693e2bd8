//! Reading a ChromaDB collection, for `engram import --from-chroma`.
//!
//! Talks to Chroma's HTTP API (v2, what `chroma run` serves): the collection
//! is looked up by name, counted, and read page by page with `offset` and
//! `limit` (Chroma answers in its own stable order). Each record becomes a
//! [`NewMemory`] whose `client_id` is the Chroma id, so a re-run (or the
//! rest of an interrupted run) returns the stored memories instead of adding
//! them again. Chroma's metadata (strings, numbers, booleans, lists of them)
//! is JSON already and is kept as the memory's metadata (keys with dots
//! nest, see [`ChromaRecord::into_memory`]); a record without a document has
//! no text to remember and is reported, not imported.

use crate::{error::chain, Client, Error, NewMemory, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// One collection of a Chroma server.
#[derive(Debug, Clone)]
pub struct ChromaCollection {
    http: reqwest::Client,
    /// `{url}/api/v2/tenants/{tenant}/databases/{database}/collections`.
    collections: String,
    pub id: String,
    pub name: String,
    /// The stored vectors' dimension, when Chroma knows it.
    pub dimension: Option<u64>,
}

/// One record read from Chroma.
#[derive(Debug, Clone, PartialEq)]
pub struct ChromaRecord {
    pub id: String,
    pub document: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct CollectionBody {
    id: String,
    name: String,
    #[serde(default)]
    dimension: Option<u64>,
}

#[derive(Deserialize)]
struct GetBody {
    ids: Vec<String>,
    #[serde(default)]
    documents: Option<Vec<Option<String>>>,
    #[serde(default)]
    metadatas: Option<Vec<Option<Map<String, Value>>>>,
}

impl ChromaCollection {
    /// The collection `name` of `database` under `tenant` (Chroma's
    /// defaults are `default_tenant` and `default_database`).
    pub async fn open(url: &str, tenant: &str, database: &str, name: &str) -> Result<Self> {
        let base = reqwest::Url::parse(url.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("the Chroma URL {url:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {}", chain(&e))))?;
        let seg = |s: &str| {
            // Path segments from the command line, percent-encoded.
            let mut u = reqwest::Url::parse("http://x/").expect("static URL");
            u.path_segments_mut().expect("base URL").push(s);
            u.path().trim_start_matches('/').to_owned()
        };
        let collections = format!(
            "{}/api/v2/tenants/{}/databases/{}/collections",
            base.as_str().trim_end_matches('/'),
            seg(tenant),
            seg(database)
        );
        let mut c = ChromaCollection {
            http,
            collections,
            id: String::new(),
            name: name.to_owned(),
            dimension: None,
        };
        let body: CollectionBody = c
            .call(reqwest::Method::GET, &format!("/{}", seg(name)), None)
            .await?;
        c.id = body.id;
        c.name = body.name;
        c.dimension = body.dimension;
        Ok(c)
    }

    /// How many records the collection holds.
    pub async fn count(&self) -> Result<u64> {
        self.call(reqwest::Method::GET, &format!("/{}/count", self.id), None)
            .await
    }

    /// Up to `limit` records from position `offset`, with their documents
    /// and metadata.
    pub async fn page(&self, offset: u64, limit: u32) -> Result<Vec<ChromaRecord>> {
        let body = json!({"offset": offset, "limit": limit, "include": ["documents", "metadatas"]});
        let got: GetBody = self
            .call(
                reqwest::Method::POST,
                &format!("/{}/get", self.id),
                Some(body),
            )
            .await?;
        let n = got.ids.len();
        let mut documents = got.documents.unwrap_or_default().into_iter();
        let mut metadatas = got.metadatas.unwrap_or_default().into_iter();
        let records = got
            .ids
            .into_iter()
            .map(|id| ChromaRecord {
                id,
                document: documents.next().flatten(),
                metadata: metadatas.next().flatten(),
            })
            .collect::<Vec<_>>();
        debug_assert_eq!(records.len(), n);
        Ok(records)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.collections);
        let mut req = self.http.request(method, &url);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| {
            Error::Source(format!("cannot reach Chroma at {url}: {}", chain(&e)))
        };
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status();
        let text = res.text().await.map_err(unreachable)?;
        if !status.is_success() {
            // Chroma's errors are `{"error": "NotFoundError", "message": "..."}`.
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(Error::Source(format!(
                "Chroma answered {status} to {url}: {message}"
            )));
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode {
            url,
            message: format!("not a Chroma answer: {e}"),
        })
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Records read from Chroma.
    pub read: u64,
    /// Memories stored by this run.
    pub created: u64,
    /// Records already in engram (same Chroma id or same text).
    pub duplicates: u64,
    /// Ids of the records without a document: no text to remember.
    pub without_document: Vec<String>,
    /// Records not imported, with the reason: engram refused them (metadata
    /// over its limits, say) or their metadata keys cannot be engram's.
    pub rejected: Vec<(String, Error)>,
}

impl ChromaCollection {
    /// Copy the whole collection into `namespace` of engram through `c`,
    /// `batch` records at a time; `progress(read, total)` after each page. A
    /// page engram refuses (400, 413, 422) is sent again one record at a
    /// time, so only the records at fault are left out (in `rejected`);
    /// anything else engram or Chroma fails with stops the import, and
    /// running it again carries on where it stopped.
    pub async fn import_into(
        &self,
        c: &Client,
        namespace: &str,
        batch: u32,
        wait: bool,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Imported> {
        let total = self.count().await?;
        let refused = |e: &Error| matches!(e.status(), Some(400 | 413 | 422));
        let mut out = Imported::default();
        loop {
            let page = self.page(out.read, batch).await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.read += page.len() as u64;
            let mut memories = Vec::with_capacity(page.len());
            for record in page {
                let id = record.id.clone();
                match record.into_memory() {
                    Ok(Some(m)) => memories.push(m),
                    Ok(None) => out.without_document.push(id),
                    Err(e) => out.rejected.push((id, Error::Source(e))),
                }
            }
            if !memories.is_empty() {
                match c.add(namespace, memories.clone(), wait).await {
                    Ok(created) => out.tally(&created),
                    Err(e) if refused(&e) => {
                        for m in memories {
                            let id = m.client_id.clone().unwrap_or_default();
                            match c.add(namespace, vec![m], wait).await {
                                Ok(created) => out.tally(&created),
                                Err(e) if refused(&e) => out.rejected.push((id, e)),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            progress(out.read, total);
        }
    }
}

impl Imported {
    fn tally(&mut self, created: &[crate::Created]) {
        for m in created {
            if m.is_new() {
                self.created += 1;
            } else {
                self.duplicates += 1;
            }
        }
    }
}

impl ChromaRecord {
    /// The memory to store: the document as text, the metadata, the Chroma
    /// id as `client_id`; `Ok(None)` for a record without a document.
    ///
    /// Chroma's metadata is flat, and its keys may hold dots; engram's keys
    /// may not (a dot separates the parts of a filter path), so `"a.b": 1`
    /// becomes `{"a": {"b": 1}}`, which engram's filter `metadata.a.b` then
    /// finds. A key that cannot nest (an empty part, or a part that is also a
    /// value, as `"a"` beside `"a.b"`) is an error naming it.
    pub fn into_memory(self) -> Result<Option<NewMemory>, String> {
        let Some(text) = self.document.filter(|d| !d.trim().is_empty()) else {
            return Ok(None);
        };
        let metadata = match self.metadata {
            Some(m) if !m.is_empty() => Some(nest_dotted_keys(m)?),
            _ => None,
        };
        Ok(Some(NewMemory {
            metadata,
            client_id: Some(self.id),
            ..NewMemory::text(text)
        }))
    }
}

fn nest_dotted_keys(flat: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    // Plain keys first, so that a clash is reported the same whatever the
    // order Chroma answers the keys in.
    let (plain, dotted): (Vec<_>, Vec<_>) = flat.into_iter().partition(|(k, _)| !k.contains('.'));
    for (k, v) in plain {
        if k.is_empty() {
            return Err("metadata has an empty key".into());
        }
        out.insert(k, v);
    }
    for (key, v) in dotted {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("metadata key {key:?} has an empty part"));
        }
        let (last, path) = parts.split_last().expect("split yields a part");
        let mut node = &mut out;
        for part in path {
            let child = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match child {
                Value::Object(m) => m,
                _ => {
                    return Err(format!(
                        "metadata key {key:?} clashes with the value of {part:?}"
                    ))
                }
            };
        }
        if node.contains_key(*last) {
            return Err(format!("metadata key {key:?} clashes with another key"));
        }
        node.insert(last.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_id_as_client_id_and_its_metadata() {
        let mut metadata = Map::new();
        metadata.insert("page".into(), json!(3));
        metadata.insert("score".into(), json!(0.5));
        metadata.insert("draft".into(), json!(false));
        let m = ChromaRecord {
            id: "doc-1".into(),
            document: Some("The launch moved to May".into()),
            metadata: Some(metadata.clone()),
        }
        .into_memory()
        .unwrap()
        .unwrap();
        assert_eq!(m.text, "The launch moved to May");
        assert_eq!(m.client_id.as_deref(), Some("doc-1"));
        assert_eq!(m.metadata, Some(metadata));
    }

    #[test]
    fn a_record_without_a_document_is_not_a_memory() {
        for document in [None, Some(String::new()), Some("  \n".into())] {
            let r = ChromaRecord {
                id: "x".into(),
                document,
                metadata: None,
            };
            assert!(matches!(r.into_memory(), Ok(None)));
        }
    }

    fn flat(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn dotted_keys_nest_so_that_filter_paths_find_them() {
        let m = nest_dotted_keys(flat(json!({"a.b": 1.5, "a.c.d": "x", "e": true}))).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"a": {"b": 1.5, "c": {"d": "x"}}, "e": true})
        );
    }

    #[test]
    fn keys_that_cannot_nest_are_named() {
        for (metadata, named) in [
            (json!({"a": 1, "a.b": 2}), "\"a.b\""),
            (json!({"a.b": 1, "a.b.c": 2}), "\"a.b"),
            (json!({"a..b": 1}), "\"a..b\""),
            (json!({".a": 1}), "\".a\""),
            (json!({"": 1}), "empty key"),
        ] {
            let e = nest_dotted_keys(flat(metadata.clone())).unwrap_err();
            assert!(e.contains(named), "{metadata}: {e}");
        }
    }
}
