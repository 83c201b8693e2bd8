//! engram-index: the embedded derived indexes.
//!
//! - [`UsearchIndex`]: approximate nearest-neighbour search over embeddings
//!   (usearch HNSW, f32, cosine), with an exact scan for small indexes and for
//!   very selective scopes. Implements [`engram_core::VectorIndex`].
//! - [`TantivyIndex`]: BM25 keyword search (tantivy, English stemming).
//!   Implements [`engram_core::KeywordIndex`].
//!
//! Both are derived state: they are fed from the store's change feed, record
//! the highest change `seq` they have made durable, and may be thrown away and
//! rebuilt at any time. A missing, corrupt or mismatched index on disk is
//! therefore never fatal: it is logged and replaced by an empty index whose
//! persisted position is 0, and the engine replays the feed.
//!
//! Both apply a search's [`engram_core::Scope`] *inside* the search (usearch's
//! filtered graph traversal, a filtering top-k collector over tantivy's BM25
//! scorer), so `k` hits come back whenever `k` visible documents match.
//!
//! Heavy work never runs on an async worker thread as-is: `apply`, `persist`
//! and `clear` move to tokio's blocking pool; searches (which borrow the
//! caller's scope and so cannot be moved to another task) run under
//! `block_in_place` on a multi-thread runtime and inline otherwise.

use std::path::{Path, PathBuf};

mod keyword;
mod vector;

pub use keyword::TantivyIndex;
pub use vector::{UsearchIndex, VectorOptions};

/// Everything that can go wrong in this crate. Every variant names the index
/// and its directory, so a log line is enough to find the files involved.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{index} index at {}: I/O error while {op}: {source}", path.display())]
    Io {
        index: &'static str,
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{index} index at {}: usearch failed while {op}: {message}", path.display())]
    Usearch {
        index: &'static str,
        path: PathBuf,
        op: &'static str,
        message: String,
    },
    #[error("{index} index at {}: tantivy failed while {op}: {source}", path.display())]
    Tantivy {
        index: &'static str,
        path: PathBuf,
        op: &'static str,
        #[source]
        source: tantivy::TantivyError,
    },
    #[error(
        "{index} index at {}: expected a {expected}-dimensional vector, got {got}{}",
        path.display(),
        key.map(|k| format!(" (key {k})")).unwrap_or_default()
    )]
    Dimensions {
        index: &'static str,
        path: PathBuf,
        expected: usize,
        got: usize,
        key: Option<u64>,
    },
    #[error("{index} index at {}: {message}", path.display())]
    Invalid {
        index: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{index} index at {}: background task failed: {message}", path.display())]
    Task {
        index: &'static str,
        path: PathBuf,
        message: String,
    },
}

impl IndexError {
    /// Name of the index the error comes from (`"usearch"` or `"tantivy"`).
    pub fn index(&self) -> &'static str {
        match self {
            IndexError::Io { index, .. }
            | IndexError::Usearch { index, .. }
            | IndexError::Tantivy { index, .. }
            | IndexError::Dimensions { index, .. }
            | IndexError::Invalid { index, .. }
            | IndexError::Task { index, .. } => index,
        }
    }

    /// Directory of the index the error comes from.
    pub fn path(&self) -> &Path {
        match self {
            IndexError::Io { path, .. }
            | IndexError::Usearch { path, .. }
            | IndexError::Tantivy { path, .. }
            | IndexError::Dimensions { path, .. }
            | IndexError::Invalid { path, .. }
            | IndexError::Task { path, .. } => path,
        }
    }
}

impl From<IndexError> for engram_core::Error {
    fn from(e: IndexError) -> Self {
        engram_core::Error::Internal(e.to_string())
    }
}

/// Run `f` on tokio's blocking pool (when inside a runtime), so that long
/// index mutations never stall an async worker thread.
async fn offload<R, F>(index: &'static str, path: &Path, f: F) -> Result<R, IndexError>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R, IndexError> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(IndexError::Task {
            index,
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Run blocking work that borrows from the caller (a search and its scope):
/// under `block_in_place` on a multi-thread runtime, so the worker's other
/// tasks move elsewhere meanwhile, and inline anywhere else (current-thread
/// runtime, no runtime), where `block_in_place` is not available.
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
