//! Remote embeddings over `POST {base}/embeddings` (vLLM, Ollama, TEI, or
//! another engram).

use async_trait::async_trait;
use engram_core::{Embedder, Error, ModelInfo, Result};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use crate::{endpoint, excerpt, http_client, retry_after};

#[derive(Clone)]
pub struct OpenAiEmbedderOptions {
    pub base_url: String,
    /// The model the server is asked for; recorded on every vector with
    /// `version`.
    pub model: String,
    /// Recorded on every vector: bump it when the server's model changes so a
    /// re-embedding job can find the old vectors.
    pub version: String,
    /// Vector length the server must return (the index is built for it).
    pub dims: usize,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for OpenAiEmbedderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedderOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("dims", &self.dims)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An [`Embedder`] on an OpenAI-compatible embeddings server. Vectors are
/// L2-normalised here, whatever the server does.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    opts: OpenAiEmbedderOptions,
    info: ModelInfo,
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingEntry>,
}

#[derive(Deserialize)]
struct EmbeddingEntry {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    pub fn new(opts: OpenAiEmbedderOptions) -> Result<Self> {
        if opts.dims == 0 {
            return Err(Error::invalid("remote embedder dims must be > 0"));
        }
        reqwest::Url::parse(&opts.base_url)
            .map_err(|e| Error::invalid(format!("embedder base URL {:?}: {e}", opts.base_url)))?;
        Ok(OpenAiEmbedder {
            client: http_client(opts.connect_timeout)?,
            info: ModelInfo {
                name: opts.model.clone(),
                version: opts.version.clone(),
                dims: opts.dims,
            },
            opts,
        })
    }
}

fn unavailable(message: String, retry_after: Duration) -> Error {
    Error::Unavailable {
        what: "embedder",
        message,
        retry_after,
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut rb = self
            .client
            .post(endpoint(&self.opts.base_url, "embeddings"))
            .timeout(self.opts.timeout)
            .json(&json!({"model": self.opts.model, "input": texts}));
        if let Some(k) = &self.opts.api_key {
            rb = rb.bearer_auth(k);
        }
        let resp = rb.send().await.map_err(|e| {
            unavailable(
                format!("cannot reach the embedding server: {e}"),
                Duration::from_secs(1),
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            let message = format!(
                "embedding server answered HTTP {status}: {}",
                excerpt(&body)
            );
            // A 4xx is about these inputs (too long, bad model): the job fails
            // and is retried/dead-lettered; 429/5xx are the server's state.
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                unavailable(message, wait)
            } else {
                Error::Embedding(message)
            });
        }
        let list: EmbeddingList = resp.json().await.map_err(|e| {
            unavailable(
                format!("embedding server sent an unreadable answer: {e}"),
                Duration::from_secs(1),
            )
        })?;
        if list.data.len() != texts.len() {
            return Err(Error::Embedding(format!(
                "embedding server returned {} vectors for {} inputs",
                list.data.len(),
                texts.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (pos, e) in list.data.into_iter().enumerate() {
            let i = e.index.unwrap_or(pos);
            if i >= out.len() || out[i].is_some() {
                return Err(Error::Embedding(format!(
                    "embedding server returned a bad index {i}"
                )));
            }
            if e.embedding.len() != self.info.dims {
                return Err(Error::Embedding(format!(
                    "embedding server returned {} dimensions; engram is configured for {}",
                    e.embedding.len(),
                    self.info.dims
                )));
            }
            out[i] = Some(normalise(e.embedding)?);
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every index filled"))
            .collect())
    }
}

fn normalise(mut v: Vec<f32>) -> Result<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(Error::Embedding(
            "embedding server returned a zero or non-finite vector".into(),
        ));
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_makes_unit_vectors_and_rejects_zero() {
        let v = normalise(vec![3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(normalise(vec![0.0, 0.0]).is_err());
        assert!(normalise(vec![f32::NAN, 1.0]).is_err());
    }
}
