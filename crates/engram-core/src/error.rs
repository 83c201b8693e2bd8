//! The engine's one error type. Each error names its stable code
//! ([`Error::code`]); the code's HTTP status and meaning are in the one table
//! of [`crate::codes`].

use std::time::Duration;

use crate::codes::Code;

/// Result alias used across the engine and its back-end traits.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but semantically invalid; `code` says
    /// how (out of range, invalid namespace, ...).
    #[error("{message}")]
    Invalid { code: Code, message: String },
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
    /// A stored record cannot be decoded (quarantined where it was met).
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A bug or an unexpected back-end failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Invalid input without a more specific code (`invalid_request`).
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::bad(Code::InvalidRequest, msg)
    }

    /// Invalid input with a specific code.
    pub fn bad(code: Code, msg: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: msg.into(),
        }
    }

    /// A number or time outside its documented range (`out_of_range`).
    pub fn out_of_range(msg: impl Into<String>) -> Self {
        Error::bad(Code::OutOfRange, msg)
    }

    /// The stable code of this error (its status and meaning are in
    /// [`crate::codes`]).
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid { code, .. } => *code,
            Error::InvalidFilter(_) => Code::InvalidFilter,
            Error::TooLarge(_) => Code::LimitExceeded,
            Error::MemoryNotFound(_) => Code::MemoryNotFound,
            Error::NamespaceNotFound(_) => Code::NamespaceNotFound,
            Error::KeyNotFound(_) => Code::KeyNotFound,
            Error::JobNotFound(_) => Code::JobNotFound,
            Error::Conflict(_) => Code::Conflict,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::LegalHold(_) => Code::LegalHold,
            Error::Forbidden(_) => Code::Forbidden,
            Error::Unavailable { .. } => Code::BackendUnavailable,
            Error::Timeout(_) => Code::Timeout,
            Error::Embedding(_) => Code::EmbeddingFailed,
            Error::LlmNotConfigured => Code::LlmNotConfigured,
            Error::LlmUnavailable { .. } => Code::LlmUnavailable,
            Error::LlmTimeout(_) => Code::LlmTimeout,
            Error::LlmFailed(_) => Code::LlmError,
            Error::Corrupt(_) => Code::CorruptRecord,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// How long a caller should wait before retrying, for errors that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } | Error::LlmUnavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
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
