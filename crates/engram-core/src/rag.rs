//! Retrieval-augmented answers (`/v1/ask`): the LLM contract, the prompt built
//! from retrieved memories, and the citations read back out of the answer.
//!
//! The engine retrieves with the caller's principal (so tenant isolation,
//! namespace scopes and PII redaction apply to what the LLM sees), numbers the
//! memories `[1]..[n]` in the prompt and asks the model to cite them. An
//! [`Asking`] then relays the model's tokens; when it ends, the `[n]` markers
//! in the answer become [`Citation`]s naming memory ids. A marker that names
//! no source is ignored: a citation always points at a memory that was in the
//! prompt.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::requests::{SearchHit, SearchMode, Weights};

/// One message of an OpenAI-style chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A chat completion request, model-agnostic (the [`Llm`] knows its model).
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
}

/// Text deltas of a completion, in order. An error ends the stream.
pub type TokenStream = BoxStream<'static, Result<String>>;

/// An OpenAI-compatible chat server (vLLM, Ollama, llama.cpp).
///
/// Errors: [`Error::LlmUnavailable`] when the server cannot be reached,
/// [`Error::LlmTimeout`] when it is too slow, [`Error::LlmFailed`] when it
/// answers with an error.
#[async_trait]
pub trait Llm: Send + Sync + 'static {
    /// The model every request names.
    fn model(&self) -> &str;

    /// Starts a streamed completion. Resolves once the server accepted the
    /// request; the stream yields the answer's text deltas.
    async fn chat(&self, req: ChatRequest) -> Result<TokenStream>;

    /// The model ids the server offers (`GET /models`).
    async fn models(&self) -> Result<Vec<String>>;

    /// Send an OpenAI chat-completions request body as it is, for the
    /// memory proxy; the answer comes back as the server sent it (JSON, or
    /// server-sent events when the body asks to stream). The server's own
    /// 4xx verdicts come back too; being unreachable, overloaded or too slow
    /// are errors as in [`Llm::chat`].
    async fn forward(&self, body: Value) -> Result<Forwarded> {
        let _ = body;
        Err(Error::LlmFailed(
            "this LLM client cannot forward chat requests".into(),
        ))
    }
}

/// A chat-completions answer as the LLM server sent it.
pub struct Forwarded {
    pub status: u16,
    pub content_type: String,
    pub body: BoxStream<'static, Result<Vec<u8>>>,
}

/// `POST /v1/ask`: retrieval options as in search, plus generation options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AskRequest {
    pub question: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    /// How many memories to retrieve (the prompt may hold fewer, see
    /// [`RagConfig::max_context_bytes`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: SearchMode,
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Stream tokens as server-sent events.
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4096))]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2))]
    pub temperature: Option<f32>,
}

/// Tunables of `/v1/ask`.
#[derive(Debug, Clone)]
pub struct RagConfig {
    /// Memories retrieved when the request names no `k`.
    pub default_k: usize,
    /// Budget for the memories' texts in the prompt; the lowest-ranked ones
    /// that do not fit are left out (and are not sources).
    pub max_context_bytes: usize,
    pub default_max_tokens: u32,
    pub max_tokens_limit: u32,
    pub default_temperature: f32,
    pub system_prompt: String,
}

pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You answer questions from an AI agent's long-term memory. \
Use only the numbered memories given with the question. Cite the memory that supports each \
statement with its number in brackets, like [1] or [2]. If the memories do not contain the \
answer, say that you do not know.";

impl Default for RagConfig {
    fn default() -> Self {
        RagConfig {
            default_k: 8,
            max_context_bytes: 6000,
            default_max_tokens: 256,
            max_tokens_limit: 4096,
            default_temperature: 0.2,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
        }
    }
}

/// A memory that was put in the prompt as `[index]`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    pub index: usize,
    #[serde(flatten)]
    pub hit: SearchHit,
}

/// A `[index]` marker in the answer, resolved to the memory it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Citation {
    pub index: usize,
    pub id: Uuid,
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timings {
    pub retrieval_ms: f64,
    /// Absent when the model produced no token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    pub total_ms: f64,
}

/// The complete answer of `/v1/ask`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Answer {
    pub answer: String,
    pub model: String,
    pub citations: Vec<Citation>,
    pub sources: Vec<Source>,
    pub timings: Timings,
}

/// Builds the chat messages: the system prompt, then the numbered memories
/// and the question. Returns the sources that fit in `max_context_bytes`
/// (a memory longer than the whole budget is cut to it rather than dropped
/// when it is the best hit, so the top memory always reaches the model).
pub fn build_prompt(
    cfg: &RagConfig,
    question: &str,
    hits: Vec<SearchHit>,
) -> (Vec<ChatMessage>, Vec<Source>) {
    let (context, sources) = memory_lines(cfg, hits);
    let user = format!("Memories:\n{context}\nQuestion: {}", question.trim());
    (
        vec![
            ChatMessage::new("system", cfg.system_prompt.clone()),
            ChatMessage::new("user", user),
        ],
        sources,
    )
}

/// The numbered memory lines of a prompt, `[n] (date, namespace) text`,
/// within `cfg.max_context_bytes` (a first memory longer than that is cut),
/// and the memories they number; "(no memories were found)" when none.
pub fn memory_lines(cfg: &RagConfig, hits: Vec<SearchHit>) -> (String, Vec<Source>) {
    let mut context = String::new();
    let mut sources = Vec::new();
    let mut used = 0usize;
    for hit in hits {
        let index = sources.len() + 1;
        let text = hit.text.trim();
        let room = cfg.max_context_bytes.saturating_sub(used);
        let text = if text.len() <= room {
            text
        } else if sources.is_empty() {
            crate::text::truncate_bytes(text, room)
        } else {
            break;
        };
        if text.is_empty() {
            continue;
        }
        used += text.len();
        // One line per memory: newlines inside a memory would blur where the
        // next numbered memory starts.
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        context.push_str(&format!(
            "[{index}] ({}, {}) {one_line}\n",
            hit.created_at.format("%Y-%m-%d"),
            hit.namespace
        ));
        sources.push(Source { index, hit });
    }
    if sources.is_empty() {
        context.push_str("(no memories were found)\n");
    }
    (context, sources)
}

/// The `[n]` and `[n, m]` markers of `answer` that name a source, each once,
/// in order of first appearance.
pub fn citations(answer: &str, sources: &[Source]) -> Vec<Citation> {
    let mut out: Vec<Citation> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        // Only a list of numbers is a marker; "[see above]" is text.
        let numbers: Option<Vec<usize>> = inside
            .split(',')
            .map(|n| n.trim().parse::<usize>().ok())
            .collect();
        if let Some(numbers) = numbers {
            for n in numbers {
                let Some(s) = sources.iter().find(|s| s.index == n) else {
                    continue;
                };
                if !out.iter().any(|c| c.index == n) {
                    out.push(Citation {
                        index: n,
                        id: s.hit.id,
                        namespace: s.hit.namespace.clone(),
                    });
                }
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// An answer being generated: the sources, and the model's tokens as they
/// come. Records the LLM latency metrics; [`Asking::finish`] (or
/// [`Asking::collect`]) turns it into an [`Answer`].
pub struct Asking {
    pub sources: Vec<Source>,
    pub model: String,
    tokens: TokenStream,
    text: String,
    started: Instant,
    retrieval: Duration,
    first_token: Option<Duration>,
}

impl Asking {
    pub(crate) fn new(
        sources: Vec<Source>,
        model: String,
        tokens: TokenStream,
        started: Instant,
        retrieval: Duration,
    ) -> Self {
        Asking {
            sources,
            model,
            tokens,
            text: String::new(),
            started,
            retrieval,
            first_token: None,
        }
    }

    /// The next text delta, `None` at the end. After an error, stop.
    pub async fn next_token(&mut self) -> Option<Result<String>> {
        let item = self.tokens.next().await?;
        match &item {
            Ok(delta) => {
                if self.first_token.is_none() && !delta.is_empty() {
                    let t = self.started.elapsed();
                    self.first_token = Some(t);
                    metrics::histogram!("engram_llm_first_token_seconds", "model" => self.model.clone())
                        .record(t.as_secs_f64());
                }
                self.text.push_str(delta);
            }
            Err(e) => record_llm_error(e),
        }
        Some(item)
    }

    /// The answer so far, with its citations. Call after the last token.
    pub fn finish(self) -> Answer {
        let total = self.started.elapsed();
        metrics::histogram!("engram_llm_duration_seconds", "model" => self.model.clone())
            .record(total.as_secs_f64());
        let answer = self.text.trim().to_string();
        let citations = citations(&answer, &self.sources);
        Answer {
            answer,
            model: self.model,
            citations,
            sources: self.sources,
            timings: Timings {
                retrieval_ms: ms(self.retrieval),
                first_token_ms: self.first_token.map(ms),
                total_ms: ms(total),
            },
        }
    }

    /// Reads every token and returns the answer (the non-streaming `/v1/ask`).
    pub async fn collect(mut self) -> Result<Answer> {
        while let Some(t) = self.next_token().await {
            t?;
        }
        Ok(self.finish())
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn record_llm_error(e: &Error) {
    let kind = match e {
        Error::LlmUnavailable { .. } => "unavailable",
        Error::LlmTimeout(_) => "timeout",
        _ => "failed",
    };
    metrics::counter!("engram_llm_errors_total", "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::Fused;
    use crate::types::Kind;
    use proptest::prelude::*;

    fn hit(text: &str) -> SearchHit {
        SearchHit {
            id: Uuid::now_v7(),
            namespace: "ns".into(),
            text: text.into(),
            kind: Kind::default(),
            metadata: Default::default(),
            tags: vec![],
            occurred_at: chrono::Utc::now(),
            session: None,
            created_at: chrono::Utc::now(),
            scores: Fused {
                key: 1,
                vector: None,
                keyword: None,
                vector_rank: None,
                keyword_rank: None,
                recency: None,
                fused: 0.0,
            },
            neighbors: None,
        }
    }

    fn sources(n: usize) -> Vec<Source> {
        (1..=n)
            .map(|index| Source {
                index,
                hit: hit(&format!("memory {index}")),
            })
            .collect()
    }

    #[test]
    fn markers_resolve_to_sources_once_in_order() {
        let s = sources(3);
        let c = citations(
            "Paris [2]. Also [1, 3] and again [2]; [9] and [x] are not.",
            &s,
        );
        let idx: Vec<usize> = c.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![2, 1, 3]);
        assert_eq!(c[0].id, s[1].hit.id);
    }

    #[test]
    fn prompt_numbers_memories_and_respects_the_budget() {
        let cfg = RagConfig {
            max_context_bytes: 25,
            ..RagConfig::default()
        };
        let (msgs, src) = build_prompt(
            &cfg,
            " where? ",
            vec![
                hit("first\nmemory"),
                hit("second one"),
                hit("third is too long"),
            ],
        );
        assert_eq!(src.len(), 2, "the third does not fit in 25 bytes");
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[1].content.contains(") first memory\n[2] ("));
        assert!(msgs[1].content.ends_with("Question: where?"));
        // The best hit is cut, not dropped, when it alone exceeds the budget.
        let (_, src) = build_prompt(&cfg, "q", vec![hit(&"é".repeat(40))]);
        assert_eq!(src.len(), 1);
        let (msgs, src) = build_prompt(&cfg, "q", vec![]);
        assert!(src.is_empty());
        assert!(msgs[1].content.contains("no memories were found"));
    }

    proptest! {
        /// Whatever the model writes, every citation names a source, at most once.
        #[test]
        fn citations_only_name_sources(answer in ".{0,200}", n in 0usize..6) {
            let s = sources(n);
            let c = citations(&answer, &s);
            for (i, a) in c.iter().enumerate() {
                let src = s.iter().find(|s| s.index == a.index).expect("cited index is a source");
                prop_assert_eq!(a.id, src.hit.id);
                prop_assert!(c[i + 1..].iter().all(|b| b.index != a.index));
            }
        }

        /// Markers put in a text are found again, in first-appearance order.
        #[test]
        fn planted_markers_are_found(
            picks in proptest::collection::vec(1usize..6, 0..8),
            filler in "[a-z .]{0,12}",
        ) {
            let s = sources(5);
            let mut answer = String::new();
            for p in &picks {
                answer.push_str(&filler);
                answer.push_str(&format!("[{p}]"));
            }
            let mut want: Vec<usize> = Vec::new();
            for p in picks {
                if !want.contains(&p) {
                    want.push(p);
                }
            }
            let got: Vec<usize> = citations(&answer, &s).iter().map(|c| c.index).collect();
            prop_assert_eq!(got, want);
        }
    }
}
