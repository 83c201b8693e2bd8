//! engram-node: one engram node, from configuration to shutdown.
//!
//! - [`config`]: the one configuration struct, layered defaults < file <
//!   `ENGRAM_*` env (secrets from `*_FILE`) < flags, validated at start-up;
//! - [`open`]: the only place that picks concrete back-ends (embedded:
//!   SQLite, usearch, tantivy, local MiniLM; scale-out: PostgreSQL +
//!   pgvector, NATS JetStream, Redis) and opens the engine on them;
//! - [`run`]: the lifecycle of `serve`, `worker`, `rebuild` and `migrate`;
//! - [`admin`]: local key and audit commands on the node's own store;
//! - [`backup`]: backup and restore of the embedded store;
//! - [`telemetry`] and [`progress`]: logs, traces and long-job progress.
//!
//! The `engram` binary parses the command line, calls one function here and
//! prints the result; nothing here parses arguments or decides exit codes.

pub mod admin;
pub mod backup;
pub mod config;
mod error;
pub mod open;
pub mod progress;
pub mod run;
pub mod telemetry;

pub use config::Config;
pub use error::{BoxError, Error, Result};
