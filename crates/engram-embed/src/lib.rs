//! Local sentence embedder: `all-MiniLM-L6-v2` running on [candle] on the CPU.
//!
//! [`LocalEmbedder`] implements [`engram_core::Embedder`]. It reproduces the
//! sentence-transformers pipeline of the model exactly:
//!
//! 1. tokenize with the model's `tokenizer.json`, truncating at
//!    `max_seq_length` (256, from `sentence_bert_config.json`);
//! 2. pad each sub-batch to its longest sequence, token type ids all zero;
//! 3. run the BERT encoder with the attention mask;
//! 4. mean-pool the last hidden state over the non-padding tokens;
//! 5. L2-normalise.
//!
//! The model directory must hold `config.json`, `tokenizer.json`,
//! `model.safetensors`, `1_Pooling/config.json` and
//! `sentence_bert_config.json` (as fetched by `scripts/fetch-model.sh`).
//!
//! The model version recorded with every vector is content-addressed:
//! `"sha256:"` followed by the first 16 hex digits of the SHA-256 of
//! `model.safetensors`, so different weights are a different version.
//!
//! Inference runs on Tokio's blocking pool. Inputs are sorted by token count
//! and split into sub-batches so that padding stays small; the vectors are
//! returned in input order.
//!
//! Matrix products use candle's CPU backend (`gemm`, no MKL) and run on the
//! Rayon global pool, one thread per core unless `RAYON_NUM_THREADS` says
//! otherwise. One core manages roughly 100 short sentences per second.
//!
//! [candle]: https://github.com/huggingface/candle

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use engram_core::{Embedder, ModelInfo};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Name recorded in [`ModelInfo::name`].
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Default number of texts per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Default cap on `texts × padded length` per forward pass, which bounds the
/// memory of the attention matrices for long inputs.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 4096;

/// Sequence length used when `sentence_bert_config.json` does not set one.
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

const FETCH_HINT: &str = "run scripts/fetch-model.sh to download the model";

/// Errors of loading or running the local embedder.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not exist.
    #[error("model directory {} not found: {FETCH_HINT}", path.display())]
    MissingDir { path: PathBuf },
    /// A required file of the model directory does not exist.
    #[error("model file {} not found: {FETCH_HINT}", path.display())]
    MissingFile { path: PathBuf },
    /// A model file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is malformed or describes an unsupported model.
    #[error("invalid model config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// `tokenizer.json` could not be loaded or configured.
    #[error("cannot load tokenizer {}: {message}", path.display())]
    TokenizerLoad { path: PathBuf, message: String },
    /// The weights could not be loaded into the model.
    #[error("cannot load model weights {}: {source}", path.display())]
    ModelLoad {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// An input could not be tokenized.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// The forward pass or pooling failed.
    #[error("model inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    /// The blocking inference task panicked or was cancelled.
    #[error("embedding task failed: {0}")]
    Task(String),
}

impl From<EmbedError> for engram_core::Error {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Tokenize(_) | EmbedError::Inference(_) => {
                engram_core::Error::Embedding(e.to_string())
            }
            EmbedError::MissingDir { .. }
            | EmbedError::MissingFile { .. }
            | EmbedError::Io { .. }
            | EmbedError::Config { .. }
            | EmbedError::TokenizerLoad { .. }
            | EmbedError::ModelLoad { .. }
            | EmbedError::Task(_) => engram_core::Error::Internal(e.to_string()),
        }
    }
}

/// Batching knobs of [`LocalEmbedder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Maximum number of texts per forward pass (at least 1).
    pub batch_size: usize,
    /// Maximum `texts × padded length` per forward pass; a single text is
    /// always allowed whatever its length.
    pub max_batch_tokens: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
        }
    }
}

/// `all-MiniLM-L6-v2` on candle, CPU, f32.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Inner>,
    info: ModelInfo,
    options: EmbedOptions,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("info", &self.info)
            .field("max_seq_length", &self.inner.max_seq_length)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    max_seq_length: usize,
    dims: usize,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

impl LocalEmbedder {
    /// Load the model from `dir` with the default [`EmbedOptions`].
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let started = Instant::now();
        if !dir.is_dir() {
            return Err(EmbedError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        let config_path = require(dir, "config.json")?;
        let tokenizer_path = require(dir, "tokenizer.json")?;
        let weights_path = require(dir, "model.safetensors")?;
        let pooling_path = require(dir, "1_Pooling/config.json")?;
        let st_path = require(dir, "sentence_bert_config.json")?;

        let config: BertConfig = read_json(&config_path)?;
        let dims = config.hidden_size;

        let pooling: PoolingConfig = read_json(&pooling_path)?;
        if !pooling.pooling_mode_mean_tokens
            || pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(EmbedError::Config {
                path: pooling_path,
                message: "only mean pooling is supported".into(),
            });
        }
        if let Some(d) = pooling.word_embedding_dimension {
            if d != dims {
                return Err(EmbedError::Config {
                    path: pooling_path,
                    message: format!(
                        "word_embedding_dimension {d} does not match hidden_size {dims}"
                    ),
                });
            }
        }

        let st: SentenceBertConfig = read_json(&st_path)?;
        let max_seq_length = st
            .max_seq_length
            .unwrap_or(DEFAULT_MAX_SEQ_LENGTH)
            .min(config.max_position_embeddings);
        if max_seq_length < 2 {
            return Err(EmbedError::Config {
                path: st_path,
                message: format!("max_seq_length {max_seq_length} is too small"),
            });
        }

        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| EmbedError::TokenizerLoad {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        // tokenizer.json ships with truncation at 128 and fixed padding to 128;
        // sentence-transformers uses max_seq_length and pads per batch, which
        // we do ourselves after sorting by length.
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(config.pad_token_id as u32);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EmbedError::TokenizerLoad {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;

        let version = format!("sha256:{}", &sha256_file(&weights_path)?[..16]);

        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped only while the tensors are
        // copied into CPU memory by `BertModel::load`; it must not be modified
        // during that time, which holds for a model directory that is only
        // ever replaced as a whole by the fetch script.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&weights_path),
                DType::F32,
                &device,
            )
        }
        .map_err(|source| EmbedError::ModelLoad {
            path: weights_path.clone(),
            source,
        })?;
        let model = BertModel::load(vb, &config).map_err(|source| EmbedError::ModelLoad {
            path: weights_path.clone(),
            source,
        })?;

        let info = ModelInfo {
            name: MODEL_NAME.to_string(),
            version,
            dims,
        };
        tracing::info!(
            model = %info.name,
            version = %info.version,
            dims,
            max_seq_length,
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded local embedding model"
        );
        Ok(LocalEmbedder {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                device,
                pad_id,
                max_seq_length,
                dims,
            }),
            info,
            options: EmbedOptions::default(),
        })
    }

    /// Replace the batching options (values below 1 are raised to 1).
    pub fn with_options(mut self, options: EmbedOptions) -> Self {
        self.options = EmbedOptions {
            batch_size: options.batch_size.max(1),
            max_batch_tokens: options.max_batch_tokens.max(1),
        };
        self
    }

    /// The batching options in use.
    pub fn options(&self) -> EmbedOptions {
        self.options
    }

    /// Maximum number of tokens (including `[CLS]` and `[SEP]`) of an input;
    /// longer inputs are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length
    }

    /// Embed on the current thread. Prefer [`Embedder::embed`] from async code.
    pub fn embed_blocking<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts, self.options)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> engram_core::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let options = self.options;
        // The blocking task needs 'static data, hence the one copy of the texts.
        let texts = texts.to_vec();
        let vectors = tokio::task::spawn_blocking(move || inner.embed(&texts, options))
            .await
            .map_err(|e| EmbedError::Task(e.to_string()))??;
        Ok(vectors)
    }
}

impl Inner {
    fn embed<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: EmbedOptions,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;

        // Sort by token count so each sub-batch pads to a similar length.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let batches = plan_batches(&order, |i| encodings[i].get_ids().len(), options);
        let batch_count = batches.len();
        for batch in batches {
            let seq_len = batch
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(1)
                .clamp(1, self.max_seq_length);
            let rows = batch.len();
            let mut ids = Vec::with_capacity(rows * seq_len);
            let mut mask = Vec::with_capacity(rows * seq_len);
            for &i in batch {
                let tok = encodings[i].get_ids();
                let tok = &tok[..tok.len().min(seq_len)];
                ids.extend_from_slice(tok);
                ids.resize(ids.len() + seq_len - tok.len(), self.pad_id);
                mask.resize(mask.len() + tok.len(), 1f32);
                mask.resize(mask.len() + seq_len - tok.len(), 0f32);
            }
            let ids = Tensor::from_vec(ids, (rows, seq_len), &self.device)?;
            let mask = Tensor::from_vec(mask, (rows, seq_len), &self.device)?;
            let type_ids = Tensor::zeros((rows, seq_len), DType::U32, &self.device)?;
            let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
            let pooled = mean_pool_normalize(&hidden, &mask)?;
            let vectors = pooled.to_vec2::<f32>()?;
            for (&i, v) in batch.iter().zip(vectors) {
                debug_assert_eq!(v.len(), self.dims);
                out[i] = v;
            }
        }
        tracing::debug!(
            texts = texts.len(),
            batches = batch_count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedded"
        );
        Ok(out)
    }
}

/// Split `order` (indices sorted by ascending length) into consecutive
/// sub-batches of at most `batch_size` items and, unless a single item,
/// at most `max_batch_tokens` padded tokens.
fn plan_batches(
    order: &[usize],
    len_of: impl Fn(usize) -> usize,
    options: EmbedOptions,
) -> Vec<&[usize]> {
    let batch_size = options.batch_size.max(1);
    let mut batches = Vec::new();
    let mut start = 0;
    let mut max_len = 0;
    for (pos, &i) in order.iter().enumerate() {
        let len = len_of(i).max(1);
        let count = pos - start;
        let new_max = max_len.max(len);
        if count > 0 && (count >= batch_size || (count + 1) * new_max > options.max_batch_tokens) {
            batches.push(&order[start..pos]);
            start = pos;
            max_len = len;
        } else {
            max_len = new_max;
        }
    }
    if start < order.len() {
        batches.push(&order[start..]);
    }
    batches
}

/// Mean of `hidden` (`batch × seq × dims`) over the positions where `mask`
/// (`batch × seq`, 1 for tokens and 0 for padding) is set, then L2-normalised
/// per row. Returns `batch × dims`.
fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    // (batch, 1, seq) × (batch, seq, dims) → (batch, 1, dims): the masked sum.
    let summed = mask.unsqueeze(1)?.matmul(hidden)?.squeeze(1)?;
    let counts = mask.sum_keepdim(1)?.maximum(1e-9)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    mean.broadcast_div(&norms)
}

fn require(dir: &Path, file: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(EmbedError::MissingFile { path })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn sha256_file(path: &Path) -> Result<String, EmbedError> {
    let io_err = |source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_padding_and_normalises() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Two rows, three positions, two dims. Row 0 has one padding position
        // holding garbage that must be ignored; row 1 has no padding.
        let hidden = Tensor::from_vec(
            vec![
                1f32, 0., 3., 4., 100., -100., // row 0
                2., 0., 0., 2., 1., 1., // row 1
            ],
            (2, 3, 2),
            &dev,
        )?;
        let mask = Tensor::from_vec(vec![1f32, 1., 0., 1., 1., 1.], (2, 3), &dev)?;
        let out = mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()?;
        // Row 0: mean (2, 2) → (1/√2, 1/√2). Row 1: mean (1, 1) → same.
        let h = std::f32::consts::FRAC_1_SQRT_2;
        for row in &out {
            assert_eq!(row.len(), 2);
            assert!((row[0] - h).abs() < 1e-6, "{row:?}");
            assert!((row[1] - h).abs() < 1e-6, "{row:?}");
        }

        // A non-symmetric case: mean (3, 4) → (0.6, 0.8).
        let hidden = Tensor::from_vec(vec![3f32, 4., 3., 4.], (1, 2, 2), &dev)?;
        let mask = Tensor::from_vec(vec![1u32, 1], (1, 2), &dev)?;
        let out = mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()?;
        assert!((out[0][0] - 0.6).abs() < 1e-6 && (out[0][1] - 0.8).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn batches_respect_size_and_token_budget() {
        let lens = [2usize, 2, 3, 3, 10, 10, 10, 50];
        let order: Vec<usize> = (0..lens.len()).collect();
        let opts = EmbedOptions {
            batch_size: 3,
            max_batch_tokens: 25,
        };
        let batches = plan_batches(&order, |i| lens[i], opts);
        let flat: Vec<usize> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(flat, order);
        for b in &batches {
            let max = b.iter().map(|&i| lens[i]).max().unwrap();
            assert!(b.len() <= 3);
            assert!(b.len() == 1 || b.len() * max <= 25, "{b:?}");
        }
        assert_eq!(batches.last().unwrap(), &[7]);
        assert!(plan_batches(&[], |i| lens[i], opts).is_empty());
    }
}
