//! engram-core: the engine of engram.
//!
//! It owns the domain types, the traits every back-end implements (store,
//! vector index, keyword index, job queue, embedder), the filter language,
//! rank fusion, and the write / embed / index / search logic. It knows nothing
//! of HTTP or of any concrete database.

mod admin;
pub mod apikey;
pub mod audit;
pub mod batch;
pub mod cache;
pub mod codes;
pub mod context;
pub mod engine;
pub mod error;
pub mod filter;
pub mod fusion;
mod governance;
mod indexer;
pub mod lifecycle;
pub mod limits;
mod read;
mod validate;
mod write;
pub use governance::StoreAdmin;
pub mod pii;
pub mod probe;
pub mod proxy;
pub mod quarantine;
pub mod query;
pub mod rag;
pub mod reembed;
pub mod requests;
pub mod scope;
mod search;
pub mod sessions;
pub mod telemetry;
pub mod text;
pub mod traits;
pub mod types;
pub mod worker;

pub use apikey::{ApiKey, CreatedApiKey, MintedKey, NewApiKey};
pub use audit::{AuditAction, AuditCtx, AuditEntry, AuditEvent, AuditQuery, VerifyReport};
pub use cache::{Cache, MemoryCache};
pub use codes::Code;
pub use engine::{validate_namespace, Backends, Engine, EngineConfig, EngineStats};
pub use error::{Error, Result};
pub use lifecycle::Lifecycle;
pub use probe::{ProbeCheck, ProbeReport, ProbeStatus};
pub use rag::{Answer, AskRequest, Asking, Citation, Llm, RagConfig, Source};
pub use reembed::Embedders;
pub use scope::{AttrTable, Scope};
pub use traits::*;
pub use types::*;
pub use worker::{EmbedWorker, StoreQueue};

#[cfg(feature = "conformance")]
pub mod conformance;
