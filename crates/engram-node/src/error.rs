//! The node's one error type. Messages read like the operator's checklist
//! ("cannot reach PostgreSQL at ...: <why>"): the step and its cause in one
//! line, so any printer shows both (no chain walking needed).

use std::fmt::Display;

/// Any error of a back-end or library, kept as the source of a node error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What starting, running or maintaining a node fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid or incomplete (found at start-up).
    #[error("{0}")]
    Config(String),
    /// The operation's preconditions do not hold (e.g. a restore into a
    /// data directory that already holds a database).
    #[error("{0}")]
    Refused(String),
    /// A step failed; `what` says which, `cause` why.
    #[error("{what}: {}", chain(cause.as_ref()))]
    Failed { what: String, cause: BoxError },
    #[error(transparent)]
    Engine(#[from] engram_core::Error),
    #[error(transparent)]
    Backup(#[from] engram_backup::BackupError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        // Many errors repeat their source in their own message.
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

/// `return Err(Error::$kind(format!(...)))`.
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::$kind(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// Name the failed step, as `anyhow::Context` would, but into [`Error`].
pub(crate) trait Context<T> {
    fn context(self, what: impl Display) -> Result<T>;
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<BoxError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| Error::Failed {
            what: what.to_string(),
            cause: e.into(),
        })
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::Failed {
            what: what().to_string(),
            cause: e.into(),
        })
    }
}

/// A missing optional setting is a configuration error.
impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Display) -> Result<T> {
        self.ok_or_else(|| Error::Config(what.to_string()))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| Error::Config(what().to_string()))
    }
}
