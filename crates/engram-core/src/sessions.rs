//! Conversations: sessions of ordered messages, and the indexer's contextual
//! representation of them.
//!
//! A message is a memory of kind `message` with a [`SessionRef`] (session id,
//! position, speaker) as real columns. Appending assigns the next positions
//! unless the caller gives them; the checksum of a message covers its session,
//! position, speaker and text, so a retried append with positions (or with
//! client ids) returns the stored messages instead of adding new ones, while
//! the same words said twice in a conversation stay two messages.
//!
//! The indexer turns a feed batch into the keyword index's changes here
//! ([`Engine::keyword_changes`]): each message's text with its speaker, its
//! context (date and neighbouring turns, see [`crate::context`]), and a
//! re-index of the neighbours of every message that arrived, changed or went.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::audit::AuditCtx;
use crate::codes::Code;
use crate::context::{self, Turn};
use crate::engine::{redact_memory, validate_namespace, Engine};
use crate::error::{Error, Result};
use crate::lifecycle::Lifecycle;
use crate::limits;
use crate::quarantine;
use crate::requests::Neighbor;
use crate::text;
use crate::types::*;

/// One message to append.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageInput {
    /// Who said it: a name, or a role such as `user` or `assistant`.
    #[serde(default, alias = "role")]
    pub speaker: Option<String>,
    pub text: String,
    /// When it was said (default: now).
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Its place in the session (default: after the last message). Give
    /// positions (or client ids) to make a retried append idempotent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub position: Option<u64>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Caller-chosen idempotency key, unique per namespace.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// Messages to append to a session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendMessages {
    pub namespace: String,
    pub messages: Vec<MessageInput>,
}

/// Outcome of appending one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appended {
    pub id: Uuid,
    pub position: u64,
    /// `created`, or `duplicate` when the stored message was returned.
    pub status: &'static str,
    pub state: State,
    #[serde(skip)]
    pub seq: u64,
}

/// A page of a session's messages in order.
#[derive(Debug, Clone)]
pub struct SessionPage {
    pub messages: Vec<Memory>,
    /// The position to pass as `after` for the next page.
    pub next_after: Option<u64>,
}

/// What deleting a session did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionDeleted {
    /// Messages deleted (soft: restorable until purged).
    pub deleted: usize,
    /// Messages under legal hold, left in place.
    pub held: usize,
}

/// The checksum of a message: its namespace, session, position, speaker and
/// normalised text.
pub fn message_checksum(namespace: &str, s: &SessionRef, text: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        "message",
        namespace,
        &s.id,
        &s.position.to_string(),
        s.speaker.as_deref().unwrap_or(""),
        &text::normalize(text),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// A session id or speaker: 1 to 256 bytes, no control characters.
fn check_name(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(Error::bad(
            Code::InvalidSession,
            format!("{field} must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Most messages one read of a session's stretch returns while indexing
/// (a batch touching positions further apart reads them in pieces).
const MAX_STRETCH: usize = 4096;

impl Engine {
    /// Append messages to a session (created by its first message).
    #[tracing::instrument(name = "engine.append_messages", skip_all, fields(tenant = %p.tenant, session))]
    pub async fn append_messages(
        &self,
        p: &Principal,
        session: &str,
        req: AppendMessages,
    ) -> Result<Vec<Appended>> {
        let namespace = req.namespace.as_str();
        validate_namespace(namespace)?;
        p.authorize_in(Action::Write, namespace)?;
        check_name("session id", session, limits::MAX_SESSION_ID_BYTES)?;
        if req.messages.is_empty() {
            return Err(Error::invalid("no messages given"));
        }
        if req.messages.len() > self.config().max_batch {
            return Err(Error::TooLarge(format!(
                "{} messages in one batch; the limit is {}",
                req.messages.len(),
                self.config().max_batch
            )));
        }
        let last = self
            .store
            .session_messages(
                &p.tenant,
                namespace,
                session,
                &SessionRange::backward(None, 1),
            )
            .await?
            .into_iter()
            .next();
        // The last row cannot be read: messages that give their position can
        // still be appended, the others cannot be placed.
        let (mut next, unreadable) = match last {
            Some(Ok(m)) => (m.session.map_or(0, |s| s.position.saturating_add(1)), None),
            Some(Err(c)) => (
                0,
                Some(format!(
                    "the session's last message (key {}) cannot be read; give positions: {}",
                    c.key, c.error
                )),
            ),
            None => (0, None),
        };
        let now = Utc::now();
        let mut news = Vec::with_capacity(req.messages.len());
        let mut prev: Option<u64> = None;
        for (i, m) in req.messages.into_iter().enumerate() {
            let item = |e: Error| crate::engine::prefix_item(e, i);
            let position = match m.position {
                Some(pos) => {
                    if pos > limits::MAX_POSITION {
                        return Err(item(Error::bad(
                            Code::InvalidPosition,
                            format!("position must be at most {}", limits::MAX_POSITION),
                        )));
                    }
                    if prev.is_some_and(|q| pos <= q) {
                        return Err(item(Error::bad(
                            Code::InvalidPosition,
                            "positions in one append must strictly increase",
                        )));
                    }
                    pos
                }
                None => match &unreadable {
                    Some(msg) => return Err(Error::Corrupt(msg.clone())),
                    None => next,
                },
            };
            if position > limits::MAX_POSITION {
                return Err(item(Error::bad(
                    Code::InvalidPosition,
                    "the session has no position left",
                )));
            }
            prev = Some(position);
            next = next.max(position.saturating_add(1));
            if let Some(s) = &m.speaker {
                check_name("speaker", s, limits::MAX_SPEAKER_BYTES).map_err(item)?;
            }
            let input = crate::requests::MemoryInput {
                text: m.text,
                kind: Some(Kind::Message),
                metadata: m.metadata,
                tags: m.tags,
                provenance: None,
                client_id: m.client_id,
                occurred_at: m.occurred_at,
                expires_at: None,
                ttl_seconds: None,
                pii: None,
            };
            let mut n = self.new_memory(p, namespace, input, now).map_err(item)?;
            let s = SessionRef {
                id: session.to_string(),
                position,
                speaker: m.speaker,
            };
            n.checksum = message_checksum(namespace, &s, &n.text);
            n.session = Some(s);
            news.push(n);
        }
        // A position taken by another message is a conflict; the same
        // message again (a retry) is returned as a duplicate by the store.
        self.check_positions(p, namespace, session, &news).await?;
        let positions: Vec<u64> = news
            .iter()
            .map(|n| n.session.as_ref().map_or(0, |s| s.position))
            .collect();
        let inserted = self
            .store
            .insert(news, &AuditCtx::of(p))
            .instrument(info_span!("store.insert"))
            .await?;
        if inserted.iter().any(|i| i.created) {
            self.queue.enqueued().await?;
        }
        Ok(inserted
            .into_iter()
            .zip(positions)
            .map(|(ins, position)| Appended {
                id: ins.id,
                position,
                status: if ins.created { "created" } else { "duplicate" },
                state: ins.state,
                seq: ins.seq,
            })
            .collect())
    }

    /// Refuse messages whose position another live message holds.
    async fn check_positions(
        &self,
        p: &Principal,
        namespace: &str,
        session: &str,
        news: &[NewMemory],
    ) -> Result<()> {
        let (Some(first), Some(last)) = (
            news.first().and_then(|n| n.session.as_ref()),
            news.last().and_then(|n| n.session.as_ref()),
        ) else {
            return Ok(());
        };
        let stored = self
            .store
            .session_messages(
                &p.tenant,
                namespace,
                session,
                &SessionRange::forward(
                    first.position.checked_sub(1),
                    last.position.checked_add(1),
                    news.len(),
                ),
            )
            .await?;
        let by_position: HashMap<u64, &str> = stored
            .iter()
            .filter_map(|m| m.as_ref().ok())
            .filter_map(|m| {
                m.session
                    .as_ref()
                    .map(|s| (s.position, m.checksum.as_str()))
            })
            .collect();
        for (i, n) in news.iter().enumerate() {
            let pos = n.session.as_ref().map_or(0, |s| s.position);
            if let Some(ck) = by_position.get(&pos) {
                let same_client = n.client_id.is_some()
                    && stored.iter().filter_map(|m| m.as_ref().ok()).any(|m| {
                        m.client_id == n.client_id
                            && m.session.as_ref().is_some_and(|s| s.position == pos)
                    });
                if *ck != n.checksum && !same_client {
                    return Err(crate::engine::prefix_item(
                        Error::bad(
                            Code::PositionConflict,
                            format!("position {pos} of session {session:?} holds another message"),
                        ),
                        i,
                    ));
                }
            }
        }
        Ok(())
    }

    /// A page of a session's live messages in order, after position `after`.
    pub async fn session_messages(
        &self,
        p: &Principal,
        namespace: &str,
        session: &str,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<SessionPage> {
        p.authorize(Action::Read)?;
        validate_namespace(namespace)?;
        check_name("session id", session, limits::MAX_SESSION_ID_BYTES)?;
        if !p.sees_namespace(namespace) {
            return Err(self.no_session(session));
        }
        let limit = limit.unwrap_or(100);
        limits::check_count("limit", limit, self.config().max_list_limit)?;
        limits::check_cursor("after", after)?;
        let rows = self
            .store
            .session_messages(
                &p.tenant,
                namespace,
                session,
                &SessionRange::forward(after, None, limit + 1),
            )
            .await?;
        let (mut rows, corrupt) = quarantine::split(rows, QuarantineSource::Read);
        self.quarantine(corrupt).await?;
        if rows.is_empty() && after.is_none() {
            return Err(self.no_session(session));
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let now = Utc::now();
        let next_after = if more {
            rows.last()
                .and_then(|m| m.session.as_ref())
                .map(|s| s.position)
        } else {
            None
        };
        let messages: Vec<Memory> = rows
            .into_iter()
            .filter(|m| !m.is_expired(now))
            .map(|m| redact_memory(p, m))
            .collect();
        self.audit_read(p, "session", messages.iter().map(|m| m.id).collect())
            .await?;
        Ok(SessionPage {
            messages,
            next_after,
        })
    }

    /// Delete every live message of a session (soft, as `DELETE
    /// /v1/memories/{id}`); messages under legal hold stay.
    /// The `n` live, unexpired messages on each side of a message hit in its
    /// session, in position order, redacted for the caller. A memory that
    /// is not a message has none. The hit's namespace is one the caller
    /// may read (the search scoped it), and a neighbour shares it.
    pub(crate) async fn neighbors(
        &self,
        p: &Principal,
        namespace: &str,
        session: Option<&SessionRef>,
        n: usize,
    ) -> Result<Vec<Neighbor>> {
        let Some(s) = session else {
            return Ok(Vec::new());
        };
        let before = self
            .store
            .session_messages(
                &p.tenant,
                namespace,
                &s.id,
                &SessionRange::backward(Some(s.position), n),
            )
            .await?;
        let after = self
            .store
            .session_messages(
                &p.tenant,
                namespace,
                &s.id,
                &SessionRange::forward(Some(s.position), None, n),
            )
            .await?;
        let (mut rows, corrupt) = quarantine::split(
            before.into_iter().rev().chain(after).collect(),
            QuarantineSource::Read,
        );
        self.quarantine(corrupt).await?;
        let now = Utc::now();
        rows.retain(|m| !m.is_expired(now));
        Ok(rows
            .into_iter()
            .filter_map(|m| {
                let m = redact_memory(p, m);
                Some(Neighbor {
                    id: m.id,
                    session: m.session?,
                    text: m.text,
                    metadata: m.metadata,
                    tags: m.tags,
                    occurred_at: m.occurred_at,
                })
            })
            .collect())
    }

    pub async fn delete_session(
        &self,
        p: &Principal,
        namespace: &str,
        session: &str,
    ) -> Result<SessionDeleted> {
        p.authorize_in(Action::Write, namespace)?;
        validate_namespace(namespace)?;
        check_name("session id", session, limits::MAX_SESSION_ID_BYTES)?;
        // Read the session, then delete it in one transaction: all of it
        // (but what a hold keeps) or nothing.
        let now = Utc::now();
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let rows = self
                .store
                .session_messages(
                    &p.tenant,
                    namespace,
                    session,
                    &SessionRange::forward(after, None, 500),
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(match last {
                Ok(m) => m.session.as_ref().map_or(0, |s| s.position),
                Err(c) => {
                    return Err(Error::Corrupt(format!(
                        "a message of the session (key {}) cannot be read: {}",
                        c.key, c.error
                    )))
                }
            });
            // Expired messages are already gone for readers; the sweeper
            // records their expiry.
            ids.extend(
                rows.into_iter()
                    .flatten()
                    .filter(|m| !m.is_expired(now))
                    .map(|m| m.id),
            );
        }
        let done = self
            .store
            .soft_delete_many(&p.tenant, &ids, now, &AuditCtx::of(p))
            .await?;
        self.forget(&p.tenant, &done.deleted).await;
        let out = SessionDeleted {
            deleted: done.deleted.len(),
            held: done.held.len(),
        };
        if out.deleted == 0 && out.held == 0 {
            return Err(self.no_session(session));
        }
        Ok(out)
    }

    fn no_session(&self, session: &str) -> Error {
        Error::bad(
            Code::SessionNotFound,
            format!("session {session:?} not found"),
        )
    }

    /// The keyword index's share of a feed batch (already past the index's
    /// position): messages get their speaker and context, and the indexed
    /// neighbours of every message that arrived, changed or went are
    /// re-indexed with their new context (as changes at the batch's last
    /// seq). `old` holds the attributes the batch's keys had before it.
    pub(crate) async fn keyword_changes(
        &self,
        changes: Vec<Change>,
        old: &HashMap<Key, Arc<DocAttrs>>,
    ) -> Result<Vec<Change>> {
        // The sessions the batch touches, and where.
        let mut touched: BTreeMap<(String, String, String), Vec<u64>> = BTreeMap::new();
        for c in &changes {
            let attrs = match &c.op {
                ChangeOp::Upsert(d) => Some(&d.attrs),
                _ => old.get(&c.key),
            };
            if let Some(a) = attrs {
                if let Some(s) = &a.session {
                    touched
                        .entry((a.tenant.clone(), a.namespace.clone(), s.id.clone()))
                        .or_default()
                        .push(s.position);
                }
            }
        }
        if touched.is_empty() {
            return Ok(changes);
        }
        let window = self.config().context.window;
        let in_batch: HashSet<Key> = changes.iter().map(|c| c.key).collect();
        let last_seq = changes.last().map_or(0, |c| c.seq);
        let mut stretches: HashMap<(String, String, String), Vec<Memory>> = HashMap::new();
        for ((tenant, namespace, session), positions) in &touched {
            let lo = positions.iter().copied().min().unwrap_or(0);
            let hi = positions.iter().copied().max().unwrap_or(0);
            let turns = self
                .stretch(tenant, namespace, session, lo, hi, 2 * window)
                .await?;
            stretches.insert((tenant.clone(), namespace.clone(), session.clone()), turns);
        }
        let mut out = Vec::with_capacity(changes.len());
        let mut refresh: BTreeMap<Key, ()> = BTreeMap::new();
        for c in changes {
            let attrs = match &c.op {
                ChangeOp::Upsert(d) => Some(d.attrs.clone()),
                _ => old.get(&c.key).cloned(),
            };
            let Some((a, s)) = attrs.and_then(|a| a.session.clone().map(|s| (a, s))) else {
                out.push(c);
                continue;
            };
            let turns = &stretches[&(a.tenant.clone(), a.namespace.clone(), s.id.clone())];
            // Where the message is (or would be) in the stretch.
            let at = turns
                .partition_point(|m| m.session.as_ref().is_some_and(|t| t.position < s.position));
            let here = turns
                .get(at)
                .is_some_and(|m| m.session.as_ref().is_some_and(|t| t.position == s.position));
            let (before, after) = if here { (at, at + 1) } else { (at, at) };
            for m in turns[before.saturating_sub(window)..before]
                .iter()
                .chain(turns[after..(after + window).min(turns.len())].iter())
            {
                if !in_batch.contains(&m.key) {
                    refresh.insert(m.key, ());
                }
            }
            if let ChangeOp::Upsert(d) = &c.op {
                let doc = IndexDoc {
                    key: d.key,
                    text: context::keyword_text(&d.text, Some(&s)),
                    context: if here {
                        message_context(turns, at, window, a.occurred_at)
                    } else {
                        context::date_words(a.occurred_at)
                    },
                    vector: d.vector.clone(),
                    target_vector: d.target_vector.clone(),
                    attrs: d.attrs.clone(),
                };
                out.push(Change {
                    op: ChangeOp::Upsert(Arc::new(doc)),
                    ..c
                });
            } else {
                out.push(c);
            }
        }
        // Neighbours that are indexed (live, ready) get their new context.
        for key in refresh.into_keys() {
            let Some(attrs) = self.attrs.get(key) else {
                continue;
            };
            let Some(s) = attrs.session.clone() else {
                continue;
            };
            let turns = &stretches[&(attrs.tenant.clone(), attrs.namespace.clone(), s.id.clone())];
            let Some(at) = turns.iter().position(|m| m.key == key) else {
                continue;
            };
            let m = &turns[at];
            out.push(Change {
                seq: last_seq,
                key,
                op: ChangeOp::Upsert(Arc::new(IndexDoc {
                    key,
                    text: context::keyword_text(&m.text, m.session.as_ref()),
                    context: message_context(turns, at, window, m.occurred_at),
                    vector: Vec::new(),
                    target_vector: None,
                    attrs,
                })),
            });
        }
        Ok(out)
    }

    /// A session's live messages from `reach` before position `lo` to
    /// `reach` after `hi`, in order (rows that cannot be read are left out:
    /// the feed quarantines them).
    async fn stretch(
        &self,
        tenant: &str,
        namespace: &str,
        session: &str,
        lo: u64,
        hi: u64,
        reach: usize,
    ) -> Result<Vec<Memory>> {
        let read = |range: SessionRange| async move {
            self.store
                .session_messages(tenant, namespace, session, &range)
                .await
        };
        let mut turns: Vec<Memory> = Vec::new();
        if reach > 0 {
            let mut before = read(SessionRange::backward(Some(lo), reach)).await?;
            before.reverse();
            turns.extend(before.into_iter().flatten());
        }
        let mut after = lo.checked_sub(1);
        loop {
            let page = read(SessionRange::forward(after, hi.checked_add(1), MAX_STRETCH)).await?;
            let n = page.len();
            let last = page
                .iter()
                .rev()
                .find_map(|m| m.as_ref().ok())
                .and_then(|m| m.session.as_ref())
                .map(|s| s.position);
            turns.extend(page.into_iter().flatten());
            match last {
                Some(p) if n == MAX_STRETCH => after = Some(p),
                _ => break,
            }
        }
        if reach > 0 {
            let next = read(SessionRange::forward(Some(hi), None, reach)).await?;
            turns.extend(next.into_iter().flatten());
        }
        Ok(turns)
    }
}

/// The keyword context of `turns[at]`.
fn message_context(turns: &[Memory], at: usize, window: usize, when: DateTime<Utc>) -> String {
    let from = at.saturating_sub(window);
    let to = (at + window + 1).min(turns.len());
    let view: Vec<Turn<'_>> = turns[from..to]
        .iter()
        .map(|m| Turn {
            speaker: m.session.as_ref().and_then(|s| s.speaker.as_deref()),
            text: &m.text,
        })
        .collect();
    context::keyword_context(when, &view, at - from, window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pos: u64, speaker: &str) -> SessionRef {
        SessionRef {
            id: "s".into(),
            position: pos,
            speaker: Some(speaker.into()),
        }
    }

    #[test]
    fn a_message_checksum_tells_positions_and_speakers_apart() {
        let a = message_checksum("ns", &s(1, "A"), "thanks!");
        assert_eq!(a, message_checksum("ns", &s(1, "A"), " thanks! "));
        assert_ne!(a, message_checksum("ns", &s(2, "A"), "thanks!"));
        assert_ne!(a, message_checksum("ns", &s(1, "B"), "thanks!"));
        assert_ne!(a, message_checksum("other", &s(1, "A"), "thanks!"));
        assert_ne!(a, text::checksum("ns", "thanks!"));
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(check_name("session id", "2024-05-01/chat 7", 256).is_ok());
        for bad in ["", "a\nb", &"x".repeat(257)] {
            let e = check_name("session id", bad, 256).unwrap_err();
            assert_eq!(e.code(), Code::InvalidSession);
        }
    }
}
