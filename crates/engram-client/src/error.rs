use std::time::Duration;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// engram answered with its error document (`{"error":{"code","message"}}`).
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        /// engram's stable error code (see docs/errors.md).
        code: String,
        message: String,
        /// The server's `Retry-After`, when it sent one (503, 429).
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, timeout, TLS failure.
    #[error("cannot reach engram at {url}: {message}")]
    Transport { url: String, message: String },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    /// A streamed answer (`ask`) reported an error after it started.
    #[error("{code}: {message}")]
    Stream { code: String, message: String },
    /// Another server read from (Chroma, for an import) answered an error.
    #[error("{0}")]
    Source(String),
    /// The client was set up wrong (bad URL, API key not valid header text).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// engram's error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } | Error::Stream { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth retrying the same request: the server said so (503 back-end
    /// fault, 429 rate limit) or did not answer at all.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status == 503 || *status == 429,
            Error::Transport { .. } => true,
            _ => false,
        }
    }
}

/// An error with its causes on one line (reqwest keeps the useful part,
/// such as "connection refused", in its sources).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
