//! Configuration: one struct, layered defaults < file < `ENGRAM_*` env < CLI
//! flags, validated at start-up.

use crate::error::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Where the embedded store and indexes live (unused when `store = "postgres"`).
    pub data_dir: PathBuf,
    /// The authoritative store and its search indexes: `sqlite` (embedded:
    /// SQLite + usearch + tantivy under `data_dir`) or `postgres`
    /// (PostgreSQL + pgvector + full-text search; nothing on local disk).
    pub store: StoreKind,
    /// Who hands embedding jobs to workers: `local` (the store's job table,
    /// polled) or `nats` (NATS JetStream; the store stays authoritative).
    pub queue: QueueKind,
    /// Query-embedding and search-result cache: `memory` (per process) or
    /// `redis` (shared by every node).
    pub cache: CacheKind,
    /// Where `engram backup` writes and `engram restore` reads: `fs` (the
    /// directory `objects_dir`) or `s3` (the bucket of `[s3]`).
    pub objects: ObjectsKind,
    pub objects_dir: PathBuf,
    pub s3: S3Config,
    pub postgres: PostgresConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    /// Folder with the all-MiniLM-L6-v2 files (see scripts/fetch-model.sh),
    /// used when `embedder.kind = "local"`.
    pub model_dir: PathBuf,
    pub embedder: EmbedderConfig,
    /// The OpenAI-compatible chat server of `/v1/ask`.
    pub llm: LlmConfig,
    /// The tenant of unauthenticated requests when `auth.enabled = false`, and
    /// the default tenant of `engram keys` and `engram audit`.
    pub tenant: String,
    /// Embedding workers run inside `serve` (0: run `engram worker` separately).
    pub workers: usize,
    /// `engram worker` serves `/healthz`, `/readyz` and `/metrics` here
    /// (unset: no listener).
    pub worker_listen: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// OpenTelemetry traces (off unless `otlp_endpoint` is set).
    pub traces: TracesConfig,
    pub max_body_bytes: usize,
    pub max_text_bytes: usize,
    pub max_batch: usize,
    pub wait_timeout_secs: u64,
    /// A request body that stops arriving for this long gets 408; a client
    /// that does not finish its request head in this long is disconnected.
    pub request_timeout_secs: u64,
    pub persist_interval_secs: u64,
    pub worker_batch: usize,
    /// A claimed job returns to the queue if its worker has not finished it in
    /// this time (a killed worker's jobs are picked up after it); a worker
    /// still embedding renews it every third of it.
    pub job_lease_secs: u64,
    pub retry_max_attempts: u32,
    pub retry_base_delay_ms: u64,
    pub vector: VectorConfig,
    pub auth: AuthConfig,
    /// HTTPS (and optionally mutual TLS); plain HTTP when absent.
    pub tls: Option<engram_server::TlsConfig>,
    pub audit: AuditConfig,
    pub pii: PiiConfig,
    pub retention: RetentionConfig,
    /// When `/readyz` (and `engram probe`) report the node as failing.
    pub readiness: ReadinessConfig,
    pub search: SearchConfig,
    /// The MCP tools (`/mcp` and `engram mcp`).
    pub mcp: McpConfig,
    /// The OpenAI-compatible memory proxy (`/v1/chat/completions`).
    pub proxy: ProxyConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The namespace whose memories are added when a request names none
    /// (neither the `X-Engram-Namespace` header nor `user`).
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// The namespace MCP tools use when neither the call nor the URL
    /// (`/mcp?namespace=`) names one; none: writes must name one and
    /// searches cover every namespace the caller can read.
    pub default_namespace: Option<String>,
}

/// How memories are indexed and searched.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Live messages on each side of a conversation message that its keyword
    /// representation carries (0 to 8). Changing it rebuilds the keyword
    /// index from the store when the node starts.
    pub context_window: usize,
    /// How long a search ranking (keys and scores, never contents) may be
    /// served from the cache, in process or Redis (0: rankings are not
    /// cached). Every write a search can see makes older rankings obsolete.
    pub result_cache_ttl_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            context_window: engram_core::context::Recipe::default().window,
            result_cache_ttl_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// Failing when the indexer has made no progress for this long while
    /// changes wait in the store.
    pub index_stall_secs: u64,
    /// Failing when more stored rows than this cannot be decoded and are
    /// quarantined (see `/v1/quarantine`). Every node reads the same
    /// quarantine, so a quarantined row takes every node out of a load
    /// balancer's rotation: raise this to keep serving while it is repaired.
    pub max_quarantined: usize,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            index_stall_secs: 60,
            max_quarantined: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Local,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    Memory,
    Redis,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` (secret: may come from
    /// `ENGRAM_POSTGRES__URL_FILE`).
    pub url: Option<String>,
    pub max_connections: u32,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout_secs: u64,
    /// pgvector HNSW build and search parameters.
    pub hnsw_m: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    /// Full-text search: how many rows a search may rank. A query matches
    /// the OR of its rarest words while their document frequencies add up
    /// to at most this; its other words only add to the rank. 0: no bound.
    pub keyword_match_budget: u64,
    /// Full-text search: words in at least this fraction of the rows (or,
    /// from 1 up, this many rows) never match on their own, whatever the
    /// budget. 0: off (the default).
    pub keyword_common_cutoff: f64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            max_connections: 16,
            acquire_timeout_secs: 5,
            hnsw_m: 16,
            hnsw_ef_construction: 128,
            // 100 gave recall 0.89-0.93 on random 384-d vectors; 200 gives ~0.97.
            hnsw_ef_search: 200,
            // Measured at 30k memories: a keyword search ranking every row
            // took 178 ms; the budget bounds the rows ranked.
            keyword_match_budget: engram_postgres::DEFAULT_MATCH_BUDGET,
            keyword_common_cutoff: 0.0,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish_non_exhaustive()
    }
}

/// A URL with its password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsKind {
    Fs,
    S3,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// `http://minio:9000` for MinIO and other S3 servers; unset for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: Option<String>,
    /// Backups go under `<prefix>/<name>/`.
    pub prefix: String,
    /// Unset: no credentials are sent (e.g. a public test bucket).
    pub access_key_id: Option<String>,
    /// Secret: may come from `ENGRAM_S3__SECRET_ACCESS_KEY_FILE`.
    pub secret_access_key: Option<String>,
    /// Allow an `http://` endpoint (a private network's MinIO).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: "backups".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 in-process (candle), from `model_dir`.
    Local,
    /// An OpenAI-compatible `/v1/embeddings` server (vLLM, Ollama, TEI).
    Openai,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    pub kind: EmbedderKind,
    /// `kind = "openai"`: the API root, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: Option<String>,
    /// `kind = "openai"`: the model the server is asked for.
    pub model: Option<String>,
    /// Recorded with every vector; change it when the server's model changes.
    pub version: String,
    /// Vector length the server returns.
    pub dims: usize,
    /// Secret: may come from `ENGRAM_EMBEDDER__API_KEY_FILE`.
    pub api_key: Option<String>,
    pub timeout_secs: u64,
    /// `kind = "local"`: the model's files; the top-level `model_dir` if unset.
    pub model_dir: Option<PathBuf>,
    /// What a memory's vector is computed from: `"speaker"` (a message's
    /// speaker and text; the default) or `"text"` (the text alone). Part of
    /// the recorded model version: to change it on a store with vectors, set
    /// the new recipe under `[embedder.next]` and let engram re-embed.
    pub recipe: engram_core::context::VectorRecipe,
    /// The model to re-embed every memory with (same keys as `[embedder]`).
    /// The current model keeps serving until every vector has moved; then
    /// engram switches to it (see the README's "Changing the embedding model").
    pub next: Option<Box<EmbedderConfig>>,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            kind: EmbedderKind::Local,
            base_url: None,
            model: None,
            version: "1".into(),
            dims: 384,
            api_key: None,
            timeout_secs: 30,
            model_dir: None,
            recipe: Default::default(),
            next: None,
        }
    }
}

impl EmbedderConfig {
    fn validate(&self, at: &str) -> Result<()> {
        if self.kind == EmbedderKind::Openai {
            if self.base_url.is_none() || self.model.is_none() {
                bail!(
                    Config,
                    "{at}.kind = \"openai\" needs {at}.base_url and {at}.model"
                );
            }
            if self.dims == 0 || self.timeout_secs == 0 {
                bail!(Config, "{at}.dims and {at}.timeout_secs must be positive");
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for EmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("dims", &self.dims)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model_dir", &self.model_dir)
            .field("recipe", &self.recipe)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// OTLP/HTTP (protobuf) collector root, e.g. `http://otel-collector:4318`;
    /// spans go to `<root>/v1/traces`. Unset: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (`engram-worker` for `engram worker` when
    /// left at the default).
    pub service_name: String,
    /// Share of new traces sampled (0 to 1); a request that arrives with a
    /// sampled `traceparent` follows its caller's decision.
    pub sample_ratio: f64,
    /// Export timeout per batch.
    pub timeout_secs: u64,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: None,
            service_name: "engram".into(),
            sample_ratio: 1.0,
            timeout_secs: 10,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// The API root, e.g. `http://127.0.0.1:8000/v1` (vLLM, llama.cpp) or
    /// `http://127.0.0.1:11434/v1` (Ollama). Unset: `/v1/ask` answers 501.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Secret: may come from `ENGRAM_LLM__API_KEY_FILE`.
    pub api_key: Option<String>,
    pub connect_timeout_ms: u64,
    /// Until the first token (prompt processing included); then 504.
    pub first_token_timeout_secs: u64,
    /// The whole answer; then 504 (or an error event when streaming).
    pub timeout_secs: u64,
    /// Memories retrieved when a request names no `k`.
    pub default_k: usize,
    /// Budget for memory texts in the prompt.
    pub max_context_bytes: usize,
    pub max_tokens: u32,
    /// The most tokens a request may ask for (`max_tokens` of `/v1/ask`).
    pub max_tokens_limit: u32,
    pub temperature: f32,
    /// Replaces the built-in instructions (cite memories as `[n]`).
    pub system_prompt: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        let rag = engram_core::RagConfig::default();
        LlmConfig {
            base_url: None,
            model: None,
            api_key: None,
            connect_timeout_ms: 2000,
            first_token_timeout_secs: 30,
            timeout_secs: 120,
            default_k: rag.default_k,
            max_context_bytes: rag.max_context_bytes,
            max_tokens: rag.default_max_tokens,
            max_tokens_limit: rag.max_tokens_limit,
            temperature: rag.default_temperature,
            system_prompt: None,
        }
    }
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("first_token_timeout_secs", &self.first_token_timeout_secs)
            .field("timeout_secs", &self.timeout_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: Option<String>,
    /// Stream, consumer and subject names start with this.
    pub prefix: String,
    /// Deliveries of one job message before it is dead-lettered as poison.
    pub max_deliver: u32,
    /// A job announced this long ago and still not done is announced again
    /// (its message may have been lost).
    pub republish_after_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            prefix: "engram".into(),
            max_deliver: 10,
            republish_after_secs: 300,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Every key starts with this, so several deployments can share a server.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            prefix: "engram:".into(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require credentials (API key or JWT) on every API route. `false` makes
    /// requests without credentials act as an admin of `tenant`: local
    /// development only.
    pub enabled: bool,
    /// JWT verification keys and claims; API keys work without it.
    pub jwt: Option<engram_auth::JwtConfig>,
    /// Requests per second per caller (0: unlimited), and the burst above it.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Browser origins allowed by CORS; empty sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Require an admin credential on `/metrics` (open by default, like `/healthz`).
    pub metrics_require_auth: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            jwt: None,
            rate_limit_per_second: 0,
            rate_limit_burst: 50,
            cors_origins: Vec::new(),
            metrics_require_auth: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Also audit reads (get, list, search), not only writes.
    pub reads: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// Flag emails, phone and card numbers found in texts on write.
    pub detect: bool,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig { detect: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the sweeper expires memories past their TTL and purges old deletions.
    pub sweep_interval_secs: u64,
    /// Soft-deleted memories are purged (content erased) after this long.
    pub purge_after_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            sweep_interval_secs: 60,
            purge_after_secs: 30 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorConfig {
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    /// Below this many vectors, search scans exactly instead of using HNSW.
    pub exact_threshold: usize,
}

impl Default for VectorConfig {
    fn default() -> Self {
        VectorConfig {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            exact_threshold: 20_000,
        }
    }
}

/// `$ENGRAM_CACHE_DIR`, else `$XDG_CACHE_HOME/engram`, else `~/.cache/engram`.
/// (Not `ENGRAM_CACHE`: that is the `cache` key, `memory` or `redis`.)
pub fn cache_dir() -> PathBuf {
    if let Ok(c) = std::env::var("ENGRAM_CACHE_DIR") {
        return PathBuf::from(c);
    }
    if let Ok(x) = std::env::var("XDG_CACHE_HOME") {
        return Path::new(&x).join("engram");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    Path::new(&home).join(".cache/engram")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./engram-data"),
            store: StoreKind::Sqlite,
            queue: QueueKind::Local,
            cache: CacheKind::Memory,
            objects: ObjectsKind::Fs,
            objects_dir: PathBuf::from("./engram-backups"),
            s3: S3Config::default(),
            postgres: PostgresConfig::default(),
            nats: NatsConfig::default(),
            redis: RedisConfig::default(),
            model_dir: cache_dir().join("models/all-MiniLM-L6-v2"),
            embedder: EmbedderConfig::default(),
            llm: LlmConfig::default(),
            tenant: "default".into(),
            workers: 1,
            worker_listen: None,
            log_format: "text".into(),
            traces: TracesConfig::default(),
            max_body_bytes: 8 * 1024 * 1024,
            max_text_bytes: 32 * 1024,
            max_batch: 256,
            wait_timeout_secs: 30,
            request_timeout_secs: 30,
            persist_interval_secs: 30,
            worker_batch: 32,
            job_lease_secs: 30,
            retry_max_attempts: 5,
            retry_base_delay_ms: 1000,
            vector: VectorConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            audit: AuditConfig::default(),
            pii: PiiConfig::default(),
            readiness: ReadinessConfig::default(),
            search: SearchConfig::default(),
            retention: RetentionConfig::default(),
            mcp: McpConfig::default(),
            proxy: ProxyConfig::default(),
        }
    }
}

/// Whether `ENGRAM_<key>` is configuration. Not: `*_FILE` (read as secrets
/// below), `ENGRAM_TEST_*` (the test suite's servers), and the service links
/// Kubernetes injects for a Service named `engram…`
/// (`ENGRAM_SERVICE_HOST`, `ENGRAM_PORT_8080_TCP_ADDR`, …), which would
/// otherwise stop start-up as unknown keys.
fn engram_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let service_link = k == "port"
        || k.starts_with("port_")
        || k.contains("service_host")
        || k.contains("service_port")
        || k.ends_with("_port")
        || k.contains("_port_");
    !k.ends_with("_file") && !k.starts_with("test_") && !service_link
}

impl Config {
    /// Merge the layers; `overrides` are the CLI flags that were given.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, figment::value::Value)],
    ) -> Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                bail!(Config, "config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        // ENGRAM_VECTOR__EXACT_THRESHOLD sets vector.exact_threshold.
        fig = fig.merge(
            Env::prefixed("ENGRAM_")
                .ignore(&[
                    "config",
                    "cache_dir",
                    "url",
                    "log",
                    "test_threads",
                    "api_key",
                    // Read by the build (the /docs page's assets), not at run time.
                    "swagger_ui_dir",
                ])
                .filter(|k| engram_key(k.as_str()))
                .split("__"),
        );
        // Secrets from files: ENGRAM_AUTH__JWT__HS256_SECRET_FILE=/run/secrets/jwt
        // sets auth.jwt.hs256_secret to the file's content.
        for (name, path) in std::env::vars() {
            let Some(key) = name
                .strip_prefix("ENGRAM_")
                .and_then(|k| k.strip_suffix("_FILE"))
            else {
                continue;
            };
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("{name}: cannot read {path}"))?;
            let key = key.to_lowercase().replace("__", ".");
            fig = fig.merge(Serialized::default(
                &key,
                value.trim_end_matches(['\n', '\r']),
            ));
        }
        for (k, v) in overrides {
            fig = fig.merge(Serialized::default(k, v.clone()));
        }
        let cfg: Config = fig.extract().context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                Config,
                "listen = {:?} is not an address like 127.0.0.1:8080",
                self.listen
            );
        }
        if let Some(w) = &self.worker_listen {
            if w.parse::<std::net::SocketAddr>().is_err() {
                bail!(
                    Config,
                    "worker_listen = {w:?} is not an address like 0.0.0.0:9091"
                );
            }
        }
        if self.llm.max_tokens == 0 || self.llm.max_tokens > self.llm.max_tokens_limit {
            bail!(
                Config,
                "llm.max_tokens must be between 1 and llm.max_tokens_limit"
            );
        }
        if self.request_timeout_secs == 0 {
            bail!(Config, "request_timeout_secs must be positive");
        }
        if self.search.context_window > engram_core::context::MAX_WINDOW {
            bail!(
                Config,
                "search.context_window must be at most {}",
                engram_core::context::MAX_WINDOW
            );
        }
        if self.readiness.index_stall_secs == 0 {
            bail!(Config, "readiness.index_stall_secs must be positive");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                Config,
                "log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            );
        }
        if self.tenant.is_empty() {
            bail!(Config, "tenant must not be empty");
        }
        if self.max_batch == 0 || self.worker_batch == 0 {
            bail!(Config, "max_batch and worker_batch must be positive");
        }
        if self.max_text_bytes == 0 || self.max_body_bytes < self.max_text_bytes {
            bail!(
                Config,
                "max_body_bytes must be at least max_text_bytes (> 0)"
            );
        }
        if self.job_lease_secs == 0 {
            bail!(Config, "job_lease_secs must be at least 1");
        }
        if self.retry_max_attempts == 0 {
            bail!(Config, "retry_max_attempts must be at least 1");
        }
        if self.vector.connectivity < 2 || self.vector.expansion_search == 0 {
            bail!(
                Config,
                "vector.connectivity must be >= 2 and vector.expansion_search > 0"
            );
        }
        if self.auth.rate_limit_per_second > 0 && self.auth.rate_limit_burst == 0 {
            bail!(
                Config,
                "auth.rate_limit_burst must be positive when rate limiting is on"
            );
        }
        if let Some(j) = &self.auth.jwt {
            engram_auth::JwtVerifier::new(j).context("auth.jwt")?;
        }
        if let Some(t) = &self.tls {
            engram_server::server_config(t).context("tls")?;
        }
        if self.store == StoreKind::Postgres && self.postgres.url.is_none() {
            bail!(
                Config,
                "store = \"postgres\" needs postgres.url (or ENGRAM_POSTGRES__URL / _FILE)"
            );
        }
        if self.queue == QueueKind::Nats && self.nats.url.is_none() {
            bail!(
                Config,
                "queue = \"nats\" needs nats.url (or ENGRAM_NATS__URL)"
            );
        }
        if self.cache == CacheKind::Redis && self.redis.url.is_none() {
            bail!(
                Config,
                "cache = \"redis\" needs redis.url (or ENGRAM_REDIS__URL / _FILE)"
            );
        }
        if self.postgres.max_connections == 0 || self.postgres.acquire_timeout_secs == 0 {
            bail!(
                Config,
                "postgres.max_connections and postgres.acquire_timeout_secs must be positive"
            );
        }
        let cutoff = self.postgres.keyword_common_cutoff;
        if !cutoff.is_finite() || cutoff < 0.0 {
            bail!(
                Config,
                "postgres.keyword_common_cutoff must be 0 (off), a fraction below 1 or a number \
                 of rows, got {cutoff}"
            );
        }
        if self.nats.max_deliver < 2 || self.nats.republish_after_secs == 0 {
            bail!(
                Config,
                "nats.max_deliver must be at least 2 and nats.republish_after_secs positive"
            );
        }
        if self.nats.prefix.is_empty()
            || !self
                .nats
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                Config,
                "nats.prefix must be letters, digits, '_' or '-' (it names a stream)"
            );
        }
        if self.objects == ObjectsKind::S3 && self.s3.bucket.is_none() {
            bail!(
                Config,
                "objects = \"s3\" needs s3.bucket (or ENGRAM_S3__BUCKET)"
            );
        }
        if let Some(e) = &self.s3.endpoint {
            if e.starts_with("http://") && !self.s3.allow_http {
                bail!(
                    Config,
                    "s3.endpoint {e:?} is plain HTTP: set s3.allow_http = true to allow it"
                );
            }
        }
        self.embedder.validate("embedder")?;
        if let Some(next) = &self.embedder.next {
            next.validate("embedder.next")?;
            if next.next.is_some() {
                bail!(
                    Config,
                    "embedder.next.next: re-embed to one model at a time"
                );
            }
        }
        let t = &self.traces;
        if let Some(u) = &t.otlp_endpoint {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!(Config, "traces.otlp_endpoint = {u:?} must be an http(s) URL like http://otel-collector:4318");
            }
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            bail!(Config, "traces.sample_ratio must be between 0 and 1");
        }
        if t.service_name.is_empty() || t.timeout_secs == 0 {
            bail!(
                Config,
                "traces.service_name must not be empty and traces.timeout_secs must be positive"
            );
        }
        let l = &self.llm;
        if l.base_url.is_some() != l.model.is_some() {
            bail!(
                Config,
                "llm.base_url and llm.model go together: set both (or neither to turn /v1/ask off)"
            );
        }
        if let Some(u) = &l.base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!(
                    Config,
                    "llm.base_url = {u:?} must be an http(s) URL like http://127.0.0.1:8000/v1"
                );
            }
        }
        if l.first_token_timeout_secs == 0 || l.timeout_secs < l.first_token_timeout_secs {
            bail!(
                Config,
                "llm.first_token_timeout_secs must be positive and at most llm.timeout_secs"
            );
        }
        if l.default_k == 0 || l.max_context_bytes == 0 || l.max_tokens == 0 {
            bail!(
                Config,
                "llm.default_k, llm.max_context_bytes and llm.max_tokens must be positive"
            );
        }
        if !(0.0..=2.0).contains(&l.temperature) {
            bail!(Config, "llm.temperature must be between 0 and 2");
        }
        if self.retention.sweep_interval_secs == 0 {
            bail!(Config, "retention.sweep_interval_secs must be at least 1");
        }
        for (key, ns) in [
            ("mcp.default_namespace", &self.mcp.default_namespace),
            ("proxy.namespace", &self.proxy.namespace),
        ] {
            if let Some(ns) = ns {
                if engram_core::validate_namespace(ns).is_err() {
                    bail!(
                        Config,
                        "{key} = {ns:?} is not a namespace (1 to 128 letters, digits and _-:./@)"
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config loading reads the process environment: one test at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn unknown_keys_and_bad_values_fail_fast() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9\"\nbogus = 1\n").unwrap();
        let e = Config::load(Some(&f), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");

        std::fs::write(&f, "listen = \"nowhere\"\n").unwrap();
        let e = Config::load(Some(&f), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("listen"), "{e:#}");

        // The vector recipe is one of two names; anything else fails at start.
        for bad in ["\"bogus\"", "\"\"", "1", "[\"text\"]"] {
            std::fs::write(&f, format!("[embedder]\nrecipe = {bad}\n")).unwrap();
            let e = Config::load(Some(&f), &[]).unwrap_err();
            assert!(format!("{e:#}").contains("recipe"), "{bad}: {e:#}");
        }
        std::fs::write(
            &f,
            "[embedder]\nrecipe = \"text\"\n[embedder.next]\nrecipe = \"speaker\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &[]).unwrap();
        assert_eq!(c.embedder.recipe, engram_core::context::VectorRecipe::Text);
        assert_eq!(
            c.embedder.next.map(|n| n.recipe),
            Some(engram_core::context::VectorRecipe::Speaker)
        );

        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9\"\n[vector]\nexact_threshold = 5\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &[("workers", 3.into())]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.vector.exact_threshold, 5);
        assert_eq!(c.workers, 3, "CLI flags win over the file");
        assert!(Config::load(Some(&dir.path().join("missing.toml")), &[]).is_err());
    }

    #[test]
    fn scale_out_back_ends_need_their_urls() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        // The test suite's own variables are not configuration.
        std::env::set_var("ENGRAM_TEST_SOMETHING_URL", "x");
        for (toml, missing) in [
            ("store = \"postgres\"\n", "postgres.url"),
            ("queue = \"nats\"\n", "nats.url"),
            ("cache = \"redis\"\n", "redis.url"),
        ] {
            std::fs::write(&f, toml).unwrap();
            let e = format!("{:#}", Config::load(Some(&f), &[]).unwrap_err());
            assert!(e.contains(missing), "{e}");
        }
        std::fs::write(
            &f,
            "store = \"postgres\"\nqueue = \"nats\"\ncache = \"redis\"\n\
             [postgres]\nurl = \"postgres://u:hunter2@db/engram\"\n\
             [nats]\nurl = \"nats://q:4222\"\n[redis]\nurl = \"redis://c:6379\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &[]);
        std::fs::write(&f, "store = \"mysql\"\n").unwrap();
        let bad = Config::load(Some(&f), &[]);
        std::env::remove_var("ENGRAM_TEST_SOMETHING_URL");
        let c = c.unwrap();
        assert_eq!(c.store, StoreKind::Postgres);
        assert_eq!(c.queue, QueueKind::Nats);
        assert_eq!(c.cache, CacheKind::Redis);
        assert!(
            !format!("{:?}", c.postgres).contains("hunter2"),
            "password in Debug"
        );
        assert!(format!("{:#}", bad.unwrap_err()).contains("mysql"));
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("nats://q:4222"), "nats://q:4222");
    }

    #[test]
    fn env_selects_back_ends_and_ignores_kubernetes_service_links() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let vars = [
            ("ENGRAM_CACHE", "redis"),
            ("ENGRAM_REDIS__URL", "redis://c:6379"),
            ("ENGRAM_OBJECTS", "s3"),
            ("ENGRAM_S3__BUCKET", "b"),
            ("ENGRAM_LLM__BASE_URL", "http://llm:8000/v1"),
            ("ENGRAM_LLM__MODEL", "m"),
            ("ENGRAM_LLM__API_KEY", "sk-secret"),
            // What Kubernetes injects for Services `engram` and `engram-api`.
            ("ENGRAM_SERVICE_HOST", "10.0.0.1"),
            ("ENGRAM_SERVICE_PORT", "8080"),
            ("ENGRAM_SERVICE_PORT_HTTP", "8080"),
            ("ENGRAM_PORT", "tcp://10.0.0.1:8080"),
            ("ENGRAM_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("ENGRAM_API_SERVICE_HOST", "10.0.0.2"),
            ("ENGRAM_API_PORT", "tcp://10.0.0.2:8080"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let c = Config::load(None, &[]);
        std::env::remove_var("ENGRAM_LLM__MODEL");
        let half = Config::load(None, &[]);
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        let c = c.unwrap();
        assert_eq!(c.cache, CacheKind::Redis);
        assert_eq!(c.objects, ObjectsKind::S3);
        assert_eq!(c.llm.model.as_deref(), Some("m"));
        assert!(
            !format!("{:?}", c.llm).contains("sk-secret"),
            "key in Debug"
        );
        let e = format!("{:#}", half.unwrap_err());
        assert!(e.contains("llm.base_url and llm.model"), "{e}");
    }

    #[test]
    fn secrets_come_from_file_variables_and_are_validated() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secret\n").unwrap();
        std::env::set_var("ENGRAM_AUTH__JWT__HS256_SECRET_FILE", &secret);
        let c = Config::load(None, &[]);
        std::env::set_var(
            "ENGRAM_AUTH__JWT__HS256_SECRET_FILE",
            dir.path().join("nope"),
        );
        let missing = Config::load(None, &[]);
        std::env::remove_var("ENGRAM_AUTH__JWT__HS256_SECRET_FILE");
        let c = c.unwrap();
        let jwt = c.auth.jwt.expect("jwt section from the file variable");
        assert_eq!(
            jwt.hs256_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef-secret")
        );
        assert!(
            !format!("{jwt:?}").contains("0123456789abcdef"),
            "secret in Debug"
        );
        let e = format!("{:#}", missing.unwrap_err());
        assert!(e.contains("ENGRAM_AUTH__JWT__HS256_SECRET_FILE"), "{e}");

        // A JWT section that cannot verify anything fails at start-up.
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[auth.jwt]\nissuer = \"x\"\n").unwrap();
        assert!(Config::load(Some(&f), &[]).is_err());
        std::fs::write(
            &f,
            "[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/k.pem\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Config::load(Some(&f), &[]).unwrap_err());
        assert!(e.contains("nonexistent.pem"), "{e}");
    }
}
