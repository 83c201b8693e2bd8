//! Operator commands: `engram probe` (container health checks), `engram
//! models check` (an LLM model env file, optionally against the server) and
//! `engram smoke` (first-token and total latency per model, for nightly runs).
//!
//! Each returns the process exit code; `main` flushes stdout and exits with it.

use anyhow::{bail, Context};
use engram_core::Llm;
use engram_llm::{OpenAiChat, OpenAiChatOptions};
use engram_llmops::models;
use engram_llmops::smoke::{self, SmokeReport};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

use engram_node::Config;

/// Exit codes of `engram probe`.
pub const PROBE_OK: i32 = 0;
pub const PROBE_FAILING: i32 = 1;
pub const PROBE_UNREACHABLE: i32 = 2;

fn print_json(v: &impl Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot print the report: {e}"),
    }
}

/// `engram probe`: `GET {url}/readyz?verbose=true` within `timeout`, the
/// report on stdout. 0: ok (or degraded, unless `require_llm`); 1: failing,
/// or degraded / no LLM with `require_llm`; 2: unreachable or timed out.
/// Needs neither a config nor a data directory.
pub async fn probe(url: &str, timeout: Duration, require_llm: bool) -> i32 {
    let target = format!("{}/readyz?verbose=true", url.trim_end_matches('/'));
    let unreachable = |error: String| {
        print_json(&json!({"status": "unreachable", "url": target, "error": error}));
        PROBE_UNREACHABLE
    };
    let client = match engram_client::Client::builder(url)
        .timeout(timeout)
        .retries(0)
        .build()
    {
        Ok(c) => c,
        Err(e) => return unreachable(e.to_string()),
    };
    // The client's timeout covers the request; this bounds name resolution too.
    let (status, body) = match tokio::time::timeout(timeout, client.readiness()).await {
        Err(_) => return unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(engram_client::Error::Transport { message, .. }))
            if message == "no answer in time" =>
        {
            return unreachable(format!("no answer within {timeout:?}"))
        }
        Ok(Err(e)) => return unreachable(e.to_string()),
        Ok(Ok(r)) => r,
    };
    let report: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => {
            return unreachable(format!(
                "HTTP {status} with a body that is not a probe report: {}",
                engram_core::text::truncate_bytes(body.trim(), 200)
            ))
        }
    };
    let code = match report["status"].as_str() {
        Some("ok") if require_llm && report["checks"]["llm"]["skipped"] == true => PROBE_FAILING,
        Some("ok") => PROBE_OK,
        Some("degraded") if require_llm => PROBE_FAILING,
        Some("degraded") => PROBE_OK,
        Some("failing") => PROBE_FAILING,
        _ => {
            return unreachable(format!(
            "HTTP {status} without a probe report (an engram without /readyz?verbose=true?): {}",
            engram_core::text::truncate_bytes(body.trim(), 200)
        ))
        }
    };
    // The verdict first, then the checks (a `Value` would sort the keys).
    #[derive(Serialize)]
    struct Shown<'a> {
        status: &'a Value,
        checks: &'a Value,
    }
    print_json(&Shown {
        status: &report["status"],
        checks: &report["checks"],
    });
    if code == PROBE_FAILING && require_llm && report["status"] != "failing" {
        eprintln!("the LLM is required (--require-llm) and is not ok");
    }
    code
}

/// The LLM server: `--llm-url`, else `[llm] base_url`.
fn llm_base(cfg: &Config, llm_url: Option<String>, what: &str) -> anyhow::Result<String> {
    match llm_url.or_else(|| cfg.llm.base_url.clone()) {
        Some(u) => Ok(u),
        None => bail!(
            "{what} needs the LLM server: set [llm] base_url (or ENGRAM_LLM__BASE_URL) or pass --llm-url"
        ),
    }
}

/// A chat client for `model` with the configured key and timeouts.
fn chat_client(cfg: &Config, base_url: &str, model: &str) -> anyhow::Result<OpenAiChat> {
    let l = &cfg.llm;
    let opts = OpenAiChatOptions {
        api_key: l.api_key.clone(),
        connect_timeout: Duration::from_millis(l.connect_timeout_ms),
        first_token_timeout: Duration::from_secs(l.first_token_timeout_secs),
        timeout: Duration::from_secs(l.timeout_secs),
        ..OpenAiChatOptions::new(base_url, model)
    };
    OpenAiChat::new(opts).with_context(|| format!("LLM client for {model} at {base_url}"))
}

/// `engram models check`: the report on stdout; 1 when it has errors.
pub async fn models_check(
    config: Option<&Path>,
    env_file: &Path,
    list_var: &str,
    server: bool,
    llm_url: Option<String>,
) -> anyhow::Result<i32> {
    let file = engram_llmops::read_env_file(env_file)?;
    let mut report = models::check(&file, list_var);
    if server {
        let cfg = Config::load(config, &[])?;
        let base = llm_base(&cfg, llm_url, "--server")?;
        let model = cfg.llm.model.clone().unwrap_or_else(|| "-".into());
        match chat_client(&cfg, &base, &model)?.models().await {
            Ok(listed) => models::check_server(&mut report, &listed, &base),
            Err(e) => {
                report.errors.push(models::Issue {
                    line: None,
                    message: format!("cannot list the models of the LLM server at {base}: {e}"),
                });
                report.ok = false;
            }
        }
    }
    print_json(&report);
    Ok(if report.ok { 0 } else { 1 })
}

/// The models to smoke-test: `--models`, else the env file's list, else `[llm] model`.
fn smoke_models(
    cfg: &Config,
    models: Vec<String>,
    env_file: Option<&Path>,
    list_var: &str,
) -> anyhow::Result<Vec<String>> {
    let models: Vec<String> = models
        .into_iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if !models.is_empty() {
        return Ok(models);
    }
    if let Some(path) = env_file {
        return Ok(engram_llmops::listed_models(path, list_var)?);
    }
    match &cfg.llm.model {
        Some(m) => Ok(vec![m.clone()]),
        None => bail!("no model to test: pass --models or --env-file, or set [llm] model"),
    }
}

pub struct SmokeArgs {
    pub models: Vec<String>,
    pub env_file: Option<std::path::PathBuf>,
    pub list_var: String,
    pub runs: usize,
    pub max_tokens: u32,
    pub json: bool,
    pub llm_url: Option<String>,
}

/// `engram smoke`: a table (or JSON) on stdout; 1 if any run failed.
pub async fn smoke(config: Option<&Path>, a: SmokeArgs) -> anyhow::Result<i32> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let cfg = Config::load(config, &[])?;
    let base = llm_base(&cfg, a.llm_url, "engram smoke")?;
    let names = smoke_models(&cfg, a.models, a.env_file.as_deref(), &a.list_var)?;
    let mut out = Vec::new();
    for name in names {
        let llm = chat_client(&cfg, &base, &name)?;
        let json = a.json;
        out.push(
            smoke::smoke_model(&llm, &name, a.runs, a.max_tokens, |run, e| {
                if !json {
                    eprintln!("{name} run {run}: {e}");
                }
            })
            .await,
        );
    }
    let report = SmokeReport {
        ok: out.iter().all(|m| m.failed == 0),
        base_url: base,
        runs: a.runs,
        max_tokens: a.max_tokens,
        models: out,
    };
    if a.json {
        print_json(&report);
    } else {
        print!("{}", smoke::table(&report));
    }
    Ok(if report.ok { 0 } else { 1 })
}
