//! engram-llmops: tools for operating the OpenAI-compatible LLM servers
//! engram talks to (vLLM, Ollama, llama.cpp), kept out of the binary:
//!
//! - [`models`]: the model env file (Ollama style) parsed, with line numbers,
//!   and checked: pinned references, per-model variables naming listed
//!   models, and, against a server, every listed model served;
//! - [`smoke`]: streamed chats per model with first-token and total latency.
//!
//! The binary reads its configuration, builds the chat client and prints;
//! everything decided about a file or a run is here.

pub mod models;
pub mod smoke;

use std::path::Path;

/// What the tools fail with before any report exists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 text: {source}")]
    NotUtf8 {
        path: String,
        source: std::string::FromUtf8Error,
    },
    /// The env file does not give a usable model list.
    #[error("{0}")]
    ModelList(String),
}

/// Read and parse a model env file.
pub fn read_env_file(path: &Path) -> Result<models::EnvFile, Error> {
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: shown(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|source| Error::NotUtf8 {
        path: shown(),
        source,
    })?;
    Ok(models::parse(&text))
}

/// The models an env file lists in `list_var`, in order, without repeats.
pub fn listed_models(path: &Path, list_var: &str) -> Result<Vec<String>, Error> {
    let file = read_env_file(path)?;
    if !file.errors.is_empty() {
        let lines: Vec<String> = file
            .errors
            .iter()
            .map(|e| format!("line {}: {}", e.line.unwrap_or(0), e.message))
            .collect();
        return Err(Error::ModelList(format!(
            "{} has errors:\n{}",
            path.display(),
            lines.join("\n")
        )));
    }
    let Some(var) = file.get(list_var) else {
        return Err(Error::ModelList(format!(
            "{} does not set {list_var}",
            path.display()
        )));
    };
    let mut items = models::list_items(&var.value);
    let mut seen = std::collections::HashSet::new();
    items.retain(|m| seen.insert(m.clone()));
    if items.is_empty() {
        return Err(Error::ModelList(format!(
            "{list_var} in {} lists no model",
            path.display()
        )));
    }
    Ok(items)
}
