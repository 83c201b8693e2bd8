//! Streamed chat completions over `POST {base}/chat/completions`.

use async_trait::async_trait;
use engram_core::rag::{ChatRequest, Forwarded, TokenStream};
use engram_core::{Error, Llm, Result};
use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::{endpoint, excerpt, http_client, retry_after};

/// Where the chat server is and how long to wait for it.
#[derive(Clone)]
pub struct OpenAiChatOptions {
    /// The API root, e.g. `http://127.0.0.1:8000/v1` (vLLM, llama.cpp) or
    /// `http://127.0.0.1:11434/v1` (Ollama).
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer`; never logged.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// From sending the request to the first token of the answer (prompt
    /// processing included).
    pub first_token_timeout: Duration,
    /// The whole completion.
    pub timeout: Duration,
}

impl std::fmt::Debug for OpenAiChatOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiChatOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OpenAiChatOptions {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiChatOptions {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(120),
        }
    }
}

/// An [`Llm`] on an OpenAI-compatible chat server.
pub struct OpenAiChat {
    client: reqwest::Client,
    opts: OpenAiChatOptions,
}

impl OpenAiChat {
    pub fn new(opts: OpenAiChatOptions) -> Result<Self> {
        if opts.model.trim().is_empty() {
            return Err(Error::invalid("the LLM model name is empty"));
        }
        reqwest::Url::parse(&opts.base_url)
            .map_err(|e| Error::invalid(format!("LLM base URL {:?}: {e}", opts.base_url)))?;
        Ok(OpenAiChat {
            client: http_client(opts.connect_timeout)?,
            opts,
        })
    }

    /// `POST chat/completions` with `body`; the response head must arrive
    /// by `deadline`.
    async fn post_chat(
        &self,
        body: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<reqwest::Response> {
        let rb = self
            .request(
                self.client
                    .post(endpoint(&self.opts.base_url, "chat/completions")),
            )
            .timeout(self.opts.timeout)
            .json(body);
        match tokio::time::timeout_at(deadline, rb.send()).await {
            Ok(r) => r.map_err(transport),
            Err(_) => Err(Error::LlmTimeout(format!(
                "no response from the LLM within {:?}",
                self.opts.first_token_timeout
            ))),
        }
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.opts.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    /// Some servers report a failure inside the stream.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Transport failures: unreachable and dropped connections are transient
/// (503), timeouts are 504.
fn transport(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::LlmTimeout(format!("the LLM server did not finish in time ({e})"))
    } else {
        Error::LlmUnavailable {
            message: format!("cannot reach the LLM server: {e}"),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// A non-2xx answer: overload and gateway errors are transient, the rest
/// (unknown model, bad key, bad request) are the server's verdict.
async fn status_error(resp: reqwest::Response) -> Error {
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let message = format!("the LLM server answered HTTP {status}: {}", excerpt(&body));
    match status.as_u16() {
        429 | 502 | 503 | 504 => Error::LlmUnavailable {
            message,
            retry_after: wait,
        },
        // The prompt (question and memories) does not fit the model's
        // context: the caller can fix that (a shorter question, a smaller
        // `k`), so it is the caller's 413, not a gateway error.
        400 | 413 | 422 if context_overflow(&body) => Error::TooLarge(format!(
            "the question and its memories do not fit the model's context: {}",
            excerpt(&body)
        )),
        _ => Error::LlmFailed(message),
    }
}

/// How llama.cpp, vLLM, Ollama and OpenAI word a prompt over the context.
fn context_overflow(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("context_length_exceeded")
        || b.contains("maximum context length")
        || (b.contains("exceed") && b.contains("context"))
        || b.contains("too many tokens")
}

struct Relay {
    events: BoxStream<
        'static,
        std::result::Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>,
    >,
    /// Until the first token: when to give up waiting for it.
    first_deadline: Option<tokio::time::Instant>,
    first_timeout: Duration,
    done: bool,
}

impl Relay {
    /// The next text delta; skips role-only and finish chunks.
    async fn next(&mut self) -> Option<Result<String>> {
        loop {
            if self.done {
                return None;
            }
            let next = match self.first_deadline {
                Some(d) => match tokio::time::timeout_at(d, self.events.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.done = true;
                        return Some(Err(Error::LlmTimeout(format!(
                            "no token from the LLM within {:?}",
                            self.first_timeout
                        ))));
                    }
                },
                None => self.events.next().await,
            };
            let ev = match next {
                // A server that closes without `[DONE]` has still finished.
                None => return None,
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(match e {
                        EventStreamError::Transport(e) => transport(e),
                        other => Error::LlmFailed(format!("malformed event stream: {other}")),
                    }));
                }
            };
            let data = ev.data.trim();
            if data == "[DONE]" {
                self.done = true;
                return None;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: Chunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::LlmFailed(format!(
                        "not an OpenAI chat chunk ({e}): {}",
                        excerpt(data)
                    ))));
                }
            };
            if let Some(err) = chunk.error {
                self.done = true;
                return Some(Err(Error::LlmFailed(format!(
                    "the LLM server reported: {}",
                    excerpt(&err.to_string())
                ))));
            }
            let text: String = chunk
                .choices
                .into_iter()
                .filter_map(|c| c.delta.content)
                .collect();
            if !text.is_empty() {
                self.first_deadline = None;
                return Some(Ok(text));
            }
        }
    }
}

#[async_trait]
impl Llm for OpenAiChat {
    fn model(&self) -> &str {
        &self.opts.model
    }

    async fn chat(&self, req: ChatRequest) -> Result<TokenStream> {
        let started = Instant::now();
        let first_deadline =
            tokio::time::Instant::from_std(started + self.opts.first_token_timeout);
        let body = json!({
            "model": self.opts.model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "stream": true,
        });
        let resp = self.post_chat(&body, first_deadline).await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let relay = Relay {
            events: resp.bytes_stream().eventsource().boxed(),
            first_deadline: Some(first_deadline),
            first_timeout: self.opts.first_token_timeout,
            done: false,
        };
        Ok(stream::unfold(relay, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        })
        .boxed())
    }

    async fn models(&self) -> Result<Vec<String>> {
        let resp = self
            .request(self.client.get(endpoint(&self.opts.base_url, "models")))
            .timeout(self.opts.first_token_timeout.min(Duration::from_secs(10)))
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let list: ModelList = resp
            .json()
            .await
            .map_err(|e| Error::LlmFailed(format!("not an OpenAI model list: {e}")))?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    async fn forward(&self, body: serde_json::Value) -> Result<Forwarded> {
        let deadline = tokio::time::Instant::now() + self.opts.first_token_timeout;
        let resp = self.post_chat(&body, deadline).await?;
        let status = resp.status();
        if status.is_client_error() && status.as_u16() != 429 {
            // The server's verdict on the caller's request: the caller's
            // 400 (413 for a prompt over the context), in engram's shape.
            let body = resp.text().await.unwrap_or_default();
            return Err(if context_overflow(&body) {
                Error::TooLarge(format!(
                    "the messages and their memories do not fit the model's context: {}",
                    excerpt(&body)
                ))
            } else {
                Error::invalid(format!(
                    "the LLM server refused the request (HTTP {status}): {}",
                    excerpt(&body)
                ))
            });
        }
        // Overload and server failures are 503/502, as for /v1/ask.
        if !status.is_success() {
            return Err(status_error(resp).await);
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let body = resp
            .bytes_stream()
            .map(|chunk| chunk.map(|b| b.to_vec()).map_err(transport))
            .boxed();
        Ok(Forwarded {
            status: status.as_u16(),
            content_type,
            body,
        })
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::context_overflow;

    #[test]
    fn recognises_context_overflows_of_the_usual_servers() {
        for body in [
            r#"{"error":{"message":"Requested tokens (5000) exceed context window of 4096"}}"#,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens"}"#,
            r#"{"error":{"code":"context_length_exceeded"}}"#,
        ] {
            assert!(context_overflow(body), "{body}");
        }
        assert!(!context_overflow(r#"{"error":"model 'x' not found"}"#));
    }
}
