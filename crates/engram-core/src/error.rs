//! The engine's one error type. The server maps each variant to an HTTP status
//! and a stable snake_case code in a single exhaustive match.

use std::time::Duration;

/// Result alias used across the engine and its back-end traits.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but semantically invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// A metadata filter could not be parsed.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A text, batch or body is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The addressed memory does not exist (or is deleted, or belongs to another tenant).
    #[error("memory {0} not found")]
    MemoryNotFound(String),
    /// The named namespace does not exist in the caller's tenant.
    #[error("namespace {0:?} not found")]
    NamespaceNotFound(String),
    /// The addressed API key does not exist in the caller's tenant.
    #[error("API key {0} not found")]
    KeyNotFound(String),
    /// The addressed job does not exist in the caller's tenant.
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The operation conflicts with the record's current state.
    #[error("{0}")]
    Conflict(String),
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The memory is under legal hold: it cannot be changed, expired or deleted.
    #[error("{0}")]
    LegalHold(String),
    /// The principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A back-end is (temporarily) unavailable; the caller should retry.
    #[error("{what} unavailable: {message}")]
    Unavailable {
        what: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// Waiting for something took longer than allowed.
    #[error("{0}")]
    Timeout(String),
    /// The embedding model failed on an input.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// `/v1/ask` was called but no LLM server is configured.
    #[error("no LLM is configured (set [llm] base_url and model)")]
    LlmNotConfigured,
    /// The LLM server cannot be reached (connection refused, DNS, reset).
    #[error("LLM unavailable: {message}")]
    LlmUnavailable {
        message: String,
        retry_after: Duration,
    },
    /// The LLM server did not produce its first token, or its whole answer, in time.
    #[error("LLM timed out: {0}")]
    LlmTimeout(String),
    /// The LLM server answered with an error or something that is not an
    /// OpenAI-compatible response (e.g. an unknown model).
    #[error("LLM failed: {0}")]
    LlmFailed(String),
    /// A bug or an unexpected back-end failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }

    /// A transient back-end failure; callers get 503 with `Retry-After`.
    pub fn unavailable(what: &'static str, msg: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            what,
            message: msg.to_string(),
            retry_after: Duration::from_secs(1),
        }
    }
}
