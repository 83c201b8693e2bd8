//! The OpenAI-compatible memory proxy (`POST /v1/chat/completions`): an
//! application that already talks to an OpenAI-compatible LLM server (Open
//! WebUI, an agent framework) points at engram instead and gets memory
//! without changing a line. For the request's namespace, engram retrieves
//! the memories relevant to the latest user message with the caller's
//! rights, adds them, numbered with their ids, to the system prompt,
//! forwards the request to the configured LLM server and hands its answer
//! back unchanged (JSON or server-sent events). With a session, the user
//! message and the answer are then appended to that conversation.
//!
//! Everything else in the request (tools, stop, top_p, ...) is forwarded
//! untouched; only `model` (default: the configured one), `max_tokens`
//! (default and limit as for `/v1/ask`) and the system prompt are set here.

use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::{info_span, Instrument};
use uuid::Uuid;

use crate::engine::{validate_namespace, Engine};
use crate::error::{Error, Result};
use crate::rag::{self, Forwarded};
use crate::requests::SearchRequest;
use crate::sessions::{AppendMessages, MessageInput};
use crate::types::{Action, Principal};

/// The longest answer kept for recording (the rest still streams through).
const MAX_RECORDED_ANSWER: usize = 256 * 1024;

/// Where a proxied chat's memories come from and go to.
#[derive(Debug, Clone, Default)]
pub struct ChatTarget {
    /// The namespace (a header, say); else the request's `user`, else the
    /// configured default.
    pub namespace: Option<String>,
    /// Append the user message and the answer to this session.
    pub session: Option<String>,
}

/// A proxied answer: the memories added to the prompt, and the LLM
/// server's answer as it sent it.
pub struct Proxied {
    pub namespace: String,
    pub memories: Vec<Uuid>,
    pub answer: Forwarded,
}

/// The text of an OpenAI message's `content`: a string, or the text parts
/// of a list of parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// The latest user message's text.
pub fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| content_text(&m["content"]))
        .filter(|t| !t.trim().is_empty())
}

/// Add `block` to the system prompt: appended to a leading system message
/// with text content, else as a new first system message.
pub fn add_to_system_prompt(messages: &mut Vec<Value>, block: &str) {
    if let Some(first) = messages.first_mut() {
        if first["role"] == "system" {
            if let Some(text) = content_text(&first["content"]) {
                first["content"] = json!(format!("{text}\n\n{block}"));
                return;
            }
        }
    }
    messages.insert(0, json!({"role": "system", "content": block}));
}

/// The assistant's text in an answer: the `delta.content` pieces of a
/// server-sent event stream, or `choices[0].message.content` of a JSON one.
pub fn answer_text(body: &[u8], streamed: bool) -> String {
    if !streamed {
        return serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
    }
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
            if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                out.push_str(piece);
            }
        }
    }
    out
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

impl Engine {
    /// Proxy one OpenAI chat-completions request with memory (see the
    /// module docs). Bad input is refused before any search or LLM call.
    #[tracing::instrument(name = "engine.chat_completion", skip_all, fields(tenant = %p.tenant))]
    pub async fn chat_completion(
        self: &Arc<Self>,
        p: &Principal,
        target: ChatTarget,
        body: Value,
    ) -> Result<Proxied> {
        p.authorize(Action::Read)?;
        if target.session.is_some() {
            // Recording writes: refuse up front rather than after the answer.
            p.authorize(Action::Write)?;
        }
        let Value::Object(mut body) = body else {
            return Err(bad("the body must be a JSON object"));
        };
        let namespace = target
            .namespace
            .or_else(|| body.get("user").and_then(Value::as_str).map(str::to_string))
            .or_else(|| self.cfg.proxy_namespace.clone())
            .ok_or_else(|| {
                bad("no namespace: send the X-Engram-Namespace header or `user`, or configure [proxy] namespace")
            })?;
        validate_namespace(&namespace)?;
        let mut messages = match body.remove("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            _ => return Err(bad("`messages` must be a non-empty list of messages")),
        };
        for m in &messages {
            let role_ok = matches!(
                m["role"].as_str(),
                Some("system" | "developer" | "user" | "assistant" | "tool")
            );
            let content_ok = matches!(
                m.get("content"),
                None | Some(Value::String(_) | Value::Array(_) | Value::Null)
            );
            if !m.is_object() || !role_ok || !content_ok {
                return Err(bad(
                    "every message must be an object with a `role` (system, developer, user, assistant or tool) and a text `content`",
                ));
            }
        }
        let rc = &self.cfg.rag;
        let max_tokens = match body.get("max_tokens") {
            None | Some(Value::Null) => rc.default_max_tokens as u64,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=rc.max_tokens_limit as u64).contains(n))
                .ok_or_else(|| {
                    Error::out_of_range(format!(
                        "max_tokens must be an integer from 1 to {}",
                        rc.max_tokens_limit
                    ))
                })?,
        };
        body.insert("max_tokens".into(), json!(max_tokens));
        if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
            if !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
                return Err(Error::out_of_range("temperature must be between 0 and 2"));
            }
        }
        let streamed = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`stream` must be true or false")),
        };
        if body
            .get("model")
            .is_some_and(|m| !m.is_string() && !m.is_null())
        {
            return Err(bad("`model` must be a string"));
        }
        // Bad input is refused first, whether or not an LLM is configured.
        let llm = self.llm.as_ref().ok_or(Error::LlmNotConfigured)?.clone();
        if body.get("model").is_none_or(Value::is_null) {
            body.insert("model".into(), json!(llm.model()));
        }
        let question = last_user_text(&messages);
        let mut ids = Vec::new();
        if let Some(q) = &question {
            let found = self
                .search(
                    p,
                    SearchRequest {
                        // A long message is still a question: its start.
                        query: crate::text::truncate_bytes(q, self.cfg.max_text_bytes).to_string(),
                        namespaces: vec![namespace.clone()],
                        k: Some(rc.default_k),
                        ..Default::default()
                    },
                )
                .await?;
            let (lines, sources) = rag::memory_lines(rc, found.hits);
            ids = sources.iter().map(|s| s.hit.id).collect();
            let block =
                format!("Memories (from engram; cite them as [n] where they help):\n{lines}");
            add_to_system_prompt(&mut messages, &block);
        }
        body.insert("messages".into(), Value::Array(messages));
        let mut answer = llm
            .forward(Value::Object(body))
            .instrument(info_span!("llm.forward", model = llm.model()))
            .await
            .inspect_err(rag::record_llm_error)?;
        if let (Some(session), Some(question), true) = (
            target.session,
            question,
            (200..300).contains(&answer.status),
        ) {
            answer.body = self.recording(p, &namespace, session, question, streamed, answer.body);
        }
        Ok(Proxied {
            namespace,
            memories: ids,
            answer,
        })
    }

    /// `body`, passed through. A task reads the LLM's answer to its end
    /// (a client may stop reading at `[DONE]`, or hang up: the answer is
    /// bounded by `max_tokens`) and then appends the question and the
    /// answer's text to `session`.
    fn recording(
        self: &Arc<Self>,
        p: &Principal,
        namespace: &str,
        session: String,
        question: String,
        streamed: bool,
        mut body: futures::stream::BoxStream<'static, Result<Vec<u8>>>,
    ) -> futures::stream::BoxStream<'static, Result<Vec<u8>>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>>>(16);
        let (engine, p, namespace) = (self.clone(), p.clone(), namespace.to_string());
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(chunk) = body.next().await {
                if let Ok(c) = &chunk {
                    if kept.len() + c.len() <= MAX_RECORDED_ANSWER {
                        kept.extend_from_slice(c);
                    }
                }
                // A client that left still gets its exchange recorded.
                let _ = tx.send(chunk).await;
            }
            drop(tx);
            let text = answer_text(&kept, streamed);
            let said = |speaker: &str, text: String| MessageInput {
                speaker: Some(speaker.into()),
                text,
                occurred_at: None,
                position: None,
                metadata: None,
                tags: Vec::new(),
                client_id: None,
            };
            let mut messages = vec![said("user", question)];
            if !text.trim().is_empty() {
                messages.push(said("assistant", text));
            }
            let req = AppendMessages {
                namespace,
                messages,
            };
            if let Err(e) = engine.append_messages(&p, &session, req).await {
                // The answer was delivered; losing its record is logged.
                tracing::warn!(error = %e, session = %session, "recording the proxied chat failed");
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_is_the_latest_user_text() {
        let m = vec![
            json!({"role": "user", "content": "first"}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]}),
            json!({"role": "tool", "content": "result"}),
        ];
        assert_eq!(last_user_text(&m).as_deref(), Some("second"));
        assert_eq!(
            last_user_text(&[json!({"role": "user", "content": "  "})]),
            None
        );
        assert_eq!(
            last_user_text(&[json!({"role": "system", "content": "x"})]),
            None
        );
    }

    #[test]
    fn memories_join_the_system_prompt_or_lead_a_new_one() {
        let mut m = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "q"}),
        ];
        add_to_system_prompt(&mut m, "Memories: [1] x");
        assert_eq!(m[0]["content"], "Be brief.\n\nMemories: [1] x");
        assert_eq!(m.len(), 2);
        let mut m = vec![json!({"role": "user", "content": "q"})];
        add_to_system_prompt(&mut m, "Memories: [1] x");
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "Memories: [1] x"})
        );
        assert_eq!(m[1]["role"], "user");
    }

    #[test]
    fn answers_are_read_from_json_and_from_event_streams() {
        let json_answer = br#"{"choices":[{"message":{"role":"assistant","content":"Tea."}}]}"#;
        assert_eq!(answer_text(json_answer, false), "Tea.");
        let sse = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"Te\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"a.\"}}]}\n\n\
                    data: [DONE]\n\n";
        assert_eq!(answer_text(sse, true), "Tea.");
        assert_eq!(answer_text(b"not json", false), "");
    }
}
