//! The crate's error type and its mapping onto [`engram_core::Error`].

use std::time::Duration;

/// What can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The options make no sense (caught before anything is sent).
    #[error("invalid NATS queue options: {0}")]
    InvalidOptions(String),
    /// The server could not be reached within the connect timeout.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// Creating or updating the JetStream stream or consumer failed
    /// (JetStream disabled, no permission, incompatible existing stream, ...).
    #[error("JetStream setup failed: {0}")]
    Setup(String),
    /// A request (publish ack, fetch, stream API call) got no answer in time.
    #[error("NATS request timed out: {0}")]
    Timeout(String),
    /// A request failed for another reason (connection lost, server error).
    #[error("NATS request failed: {0}")]
    Request(String),
}

impl NatsError {
    pub(crate) fn request(what: &str, e: impl std::fmt::Display) -> Self {
        let message = format!("{what}: {e}");
        // async-nats reports timeouts through several error kinds; their
        // display text is the one stable thing they share.
        if message.contains("timed out") || message.contains("timeout") {
            NatsError::Timeout(message)
        } else {
            NatsError::Request(message)
        }
    }
}

impl From<NatsError> for engram_core::Error {
    fn from(e: NatsError) -> Self {
        match e {
            NatsError::InvalidOptions(m) => engram_core::Error::invalid(m),
            other => engram_core::Error::Unavailable {
                what: "nats",
                message: other.to_string(),
                retry_after: Duration::from_secs(1),
            },
        }
    }
}
