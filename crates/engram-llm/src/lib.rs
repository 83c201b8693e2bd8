//! engram-llm: clients of OpenAI-compatible servers (vLLM, Ollama,
//! llama.cpp, TEI).
//!
//! - [`OpenAiChat`] implements [`engram_core::Llm`] over `POST /chat/completions`
//!   with `"stream": true` (server-sent events) and `GET /models`.
//! - [`OpenAiEmbedder`] implements [`engram_core::Embedder`] over
//!   `POST /embeddings`, for users who embed on their GPU server instead of
//!   with the local model.
//!
//! Failures map to the engine's errors so the API answers with a stable code:
//! a server that cannot be reached (or says it is overloaded) is
//! `LlmUnavailable` (503 + Retry-After), one that is too slow is `LlmTimeout`
//! (504), one that answers with an error is `LlmFailed` (502). The embedder
//! reports an unreachable server as `Unavailable { what: "embedder" }`, so
//! embedding jobs are retried like any other back-end fault.

mod chat;
mod embed;

pub use chat::{OpenAiChat, OpenAiChatOptions};
pub use embed::{OpenAiEmbedder, OpenAiEmbedderOptions};

use std::time::Duration;

/// `base` with exactly one `/` before `path` (`http://h:8000/v1` + `models`).
fn endpoint(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

fn http_client(connect_timeout: Duration) -> engram_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        // Idle pooled connections to a restarted server fail fast on reuse;
        // keep them short-lived.
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(engram_core::Error::internal)
}

/// The `Retry-After` of a 429/503, in seconds, else one second.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 300)))
        .unwrap_or(Duration::from_secs(1))
}

/// A short, single-line excerpt of an error body (servers may return HTML).
fn excerpt(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    engram_core::text::truncate_bytes(&one, 300).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_with_one_slash() {
        assert_eq!(endpoint("http://h/v1/", "models"), "http://h/v1/models");
        assert_eq!(endpoint("http://h/v1", "models"), "http://h/v1/models");
    }

    #[test]
    fn retry_after_is_read_and_clamped() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        h.insert(reqwest::header::RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }
}
