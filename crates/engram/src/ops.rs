//! Operator commands: `engram probe` (container health checks), `engram
//! models check` (an LLM model env file, optionally against the server) and
//! `engram smoke` (first-token and total latency per model, for nightly runs).
//!
//! Each returns the process exit code; `main` flushes stdout and exits with it.

use anyhow::{bail, Context};
use engram_core::rag::{ChatMessage, ChatRequest};
use engram_core::Llm;
use engram_llm::{OpenAiChat, OpenAiChatOptions};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::models;

/// Exit codes of `engram probe`.
pub const PROBE_OK: i32 = 0;
pub const PROBE_FAILING: i32 = 1;
pub const PROBE_UNREACHABLE: i32 = 2;

/// An error with its causes, on one line (reqwest hides the useful part,
/// e.g. "Connection refused", in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

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
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return unreachable(format!("building the HTTP client: {}", chain(&e))),
    };
    let fetch = async {
        let res = client.get(&target).send().await?;
        let status = res.status();
        let body = res.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    // The client's timeout covers the request; this bounds name resolution too.
    let (status, body) = match tokio::time::timeout(timeout, fetch).await {
        Err(_) => return unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) if e.is_timeout() => {
            return unreachable(format!("no answer within {timeout:?}"))
        }
        Ok(Err(e)) => return unreachable(format!("cannot reach engram: {}", chain(&e))),
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

fn read_env_file(path: &Path) -> anyhow::Result<models::EnvFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", path.display()))?;
    Ok(models::parse(&text))
}

/// `engram models check`: the report on stdout; 1 when it has errors.
pub async fn models_check(
    config: Option<&Path>,
    env_file: &Path,
    list_var: &str,
    server: bool,
    llm_url: Option<String>,
) -> anyhow::Result<i32> {
    let file = read_env_file(env_file)?;
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

const SMOKE_PROMPT: &str = "In one short sentence: why do AI agents need long-term memory?";

/// One streamed chat of a smoke run.
#[derive(Debug, Serialize)]
pub struct Sample {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    pub total_ms: f64,
    /// Text deltas streamed (one per token on llama.cpp, vLLM and Ollama).
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelSmoke {
    pub model: String,
    pub runs: usize,
    pub ok: usize,
    pub failed: usize,
    /// Over the runs that succeeded; `null` when none did.
    pub first_token_ms: Option<Spread>,
    pub total_ms: Option<Spread>,
    /// Tokens streamed per second of whole requests, over the runs that succeeded.
    pub tokens_per_s: Option<f64>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct SmokeReport {
    pub ok: bool,
    pub base_url: String,
    pub runs: usize,
    pub max_tokens: u32,
    pub models: Vec<ModelSmoke>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Median (lower of the two middle values) and maximum.
fn spread(mut v: Vec<f64>) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Spread {
        p50: v[(v.len() - 1) / 2],
        max: v[v.len() - 1],
    })
}

async fn smoke_once(llm: &OpenAiChat, max_tokens: u32, run: usize) -> Sample {
    let started = Instant::now();
    // Each run's prompt differs, so no run is served from the previous one's
    // prompt cache: first-token latency includes prompt processing.
    let req = ChatRequest {
        messages: vec![ChatMessage::new(
            "user",
            format!(
                "{SMOKE_PROMPT} (run {run} at {})",
                chrono::Utc::now().timestamp_millis()
            ),
        )],
        max_tokens,
        temperature: 0.0,
    };
    let fail = |error: String, tokens: usize, first: Option<Duration>| Sample {
        ok: false,
        first_token_ms: first.map(ms),
        total_ms: ms(started.elapsed()),
        tokens,
        error: Some(error),
    };
    let mut stream = match llm.chat(req).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string(), 0, None),
    };
    let (mut first, mut tokens) = (None, 0usize);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {
                first.get_or_insert_with(|| started.elapsed());
                tokens += 1;
            }
            Err(e) => return fail(e.to_string(), tokens, first),
        }
    }
    if tokens == 0 {
        return fail("the model streamed no token".into(), 0, None);
    }
    Sample {
        ok: true,
        first_token_ms: first.map(ms),
        total_ms: ms(started.elapsed()),
        tokens,
        error: None,
    }
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
        let file = read_env_file(path)?;
        if !file.errors.is_empty() {
            let lines: Vec<String> = file
                .errors
                .iter()
                .map(|e| format!("line {}: {}", e.line.unwrap_or(0), e.message))
                .collect();
            bail!("{} has errors:\n{}", path.display(), lines.join("\n"));
        }
        let Some(var) = file.get(list_var) else {
            bail!("{} does not set {list_var}", path.display());
        };
        let mut items = models::list_items(&var.value);
        let mut seen = std::collections::HashSet::new();
        items.retain(|m| seen.insert(m.clone()));
        if items.is_empty() {
            bail!("{list_var} in {} lists no model", path.display());
        }
        return Ok(items);
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
        let mut samples = Vec::with_capacity(a.runs);
        for i in 0..a.runs {
            let s = smoke_once(&llm, a.max_tokens, i + 1).await;
            if !a.json {
                if let Some(e) = &s.error {
                    eprintln!("{name} run {}: {e}", i + 1);
                }
            }
            samples.push(s);
        }
        let good: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
        let secs: f64 = good.iter().map(|s| s.total_ms).sum::<f64>() / 1000.0;
        let tokens: usize = good.iter().map(|s| s.tokens).sum();
        out.push(ModelSmoke {
            model: name,
            runs: a.runs,
            ok: good.len(),
            failed: a.runs - good.len(),
            first_token_ms: spread(good.iter().filter_map(|s| s.first_token_ms).collect()),
            total_ms: spread(good.iter().map(|s| s.total_ms).collect()),
            tokens_per_s: (secs > 0.0).then(|| (tokens as f64 / secs * 10.0).round() / 10.0),
            samples,
        });
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
        print!("{}", smoke_table(&report));
    }
    Ok(if report.ok { 0 } else { 1 })
}

fn smoke_table(r: &SmokeReport) -> String {
    let header = [
        "model",
        "ok",
        "failed",
        "first p50 ms",
        "first max ms",
        "total p50 ms",
        "total max ms",
        "tokens/s",
    ];
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let rows: Vec<[String; 8]> = r
        .models
        .iter()
        .map(|m| {
            [
                m.model.clone(),
                m.ok.to_string(),
                m.failed.to_string(),
                num(m.first_token_ms.as_ref().map(|s| s.p50)),
                num(m.first_token_ms.as_ref().map(|s| s.max)),
                num(m.total_ms.as_ref().map(|s| s.p50)),
                num(m.total_ms.as_ref().map(|s| s.max)),
                num(m.tokens_per_s),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = format!(
        "{} runs per model, at most {} tokens each, against {}\n",
        r.runs, r.max_tokens, r.base_url
    );
    s.push_str(&line(header.to_vec()));
    for row in &rows {
        s.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_lower_median_and_max() {
        assert!(spread(vec![]).is_none());
        let s = spread(vec![30.0, 10.0, 20.0]).unwrap();
        assert_eq!((s.p50, s.max), (20.0, 30.0));
        let s = spread(vec![40.0, 10.0]).unwrap();
        assert_eq!((s.p50, s.max), (10.0, 40.0));
    }

    #[test]
    fn table_has_a_row_per_model() {
        let r = SmokeReport {
            ok: false,
            base_url: "http://h/v1".into(),
            runs: 2,
            max_tokens: 16,
            models: vec![
                ModelSmoke {
                    model: "a-long-model-name:7b".into(),
                    runs: 2,
                    ok: 2,
                    failed: 0,
                    first_token_ms: spread(vec![12.0, 30.0]),
                    total_ms: spread(vec![100.0, 140.0]),
                    tokens_per_s: Some(80.5),
                    samples: vec![],
                },
                ModelSmoke {
                    model: "b:1".into(),
                    runs: 2,
                    ok: 0,
                    failed: 2,
                    first_token_ms: None,
                    total_ms: None,
                    tokens_per_s: None,
                    samples: vec![],
                },
            ],
        };
        let t = smoke_table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("model "), "{t}");
        assert!(lines[2].starts_with("a-long-model-name:7b  "), "{t}");
        assert!(lines[2].ends_with("80.5"), "{t}");
        assert!(lines[3].starts_with("b:1 "), "{t}");
        assert!(lines[3].ends_with('-'), "{t}");
    }
}
