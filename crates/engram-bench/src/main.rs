//! engram-bench: a load generator and a retrieval-quality evaluation that
//! drive a running engram over HTTP, the way clients do.
//!
//! * `load`: ingest N memories (synthetic or LoCoMo turns), report ingest
//!   rate and write-acknowledgement latency, then search latency percentiles at
//!   several concurrencies and the vector index's recall@k against exact search.
//! * `locomo`: store the LoCoMo conversations through the session API and
//!   report evidence fraction@k and any-hit@k (k = 1, 5, 10, 25) per search
//!   mode and question category, with the search latency.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "engram-bench")]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// API key (or JWT) of a writer or admin, sent as `Authorization: Bearer`.
    #[arg(long, env = "ENGRAM_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest then search under load.
    Load(LoadArgs),
    /// `/v1/ask` latency: retrieval, LLM first token and total, as the
    /// server reports them, plus the client-side round trip.
    Ask {
        /// Questions asked (one at a time).
        #[arg(long, default_value_t = 30)]
        n: usize,
        #[arg(long, default_value = "bench")]
        namespace: String,
        #[arg(long, default_value_t = 32)]
        max_tokens: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// LoCoMo evidence recall per search mode and question category, the
    /// conversations stored through the session API.
    Locomo {
        #[arg(long, default_value = "../shared/data/locomo-dev.json")]
        data: PathBuf,
        /// Namespace prefix (one namespace per conversation).
        #[arg(long, default_value = "locomo")]
        prefix: String,
        /// Search modes to evaluate, comma-separated.
        #[arg(long, default_value = "keyword,vector,hybrid", value_delimiter = ',')]
        modes: Vec<String>,
        /// Extra search options as a JSON object (for ablations), merged
        /// into every search request.
        #[arg(long)]
        search: Option<String>,
        /// Evaluate what an earlier run stored.
        #[arg(long)]
        skip_load: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // No retries: a benchmark reports what the server did.
    let c = Client(
        engram_client::Client::builder(&cli.url)
            .api_key_opt(cli.api_key.as_deref())
            .timeout(Duration::from_secs(600))
            .retries(0)
            .build()?,
    );
    match cli.cmd {
        Cmd::Load(args) => load(&c, args).await,
        Cmd::Ask {
            n,
            namespace,
            max_tokens,
            seed,
        } => ask(&c, n, &namespace, max_tokens, seed).await,
        Cmd::Locomo {
            data,
            prefix,
            modes,
            search,
            skip_load,
        } => locomo(&c, &data, &prefix, &modes, search.as_deref(), skip_load).await,
    }
}

/// engram-client with the bench's error context: JSON in, JSON out.
#[derive(Clone)]
struct Client(engram_client::Client);

impl Client {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.0
            .post_json(path, body)
            .await
            .with_context(|| format!("POST {path}"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.0
            .get_json(path, &[])
            .await
            .with_context(|| format!("GET {path}"))
    }

    /// Wait until nothing is pending and the indexes have every change.
    async fn wait_idle(&self) -> anyhow::Result<engram_client::Stats> {
        loop {
            let s = self.0.wait_idle(Duration::from_secs(3600)).await?;
            if s.pending == 0 && s.caught_up {
                return Ok(s);
            }
        }
    }
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Memories to ingest (0: search what is already there).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// synthetic or a path to locomo-dev.json.
    #[arg(long, default_value = "synthetic")]
    source: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Concurrent ingest requests.
    #[arg(long, default_value_t = 2)]
    ingest_concurrency: usize,
    /// Single-memory writes timed for acknowledgement latency.
    #[arg(long, default_value_t = 300)]
    ack_samples: usize,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    concurrency: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Queries used to measure recall@k of the vector index against exact search.
    #[arg(long, default_value_t = 200)]
    recall_queries: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const NAMES: &[&str] = &[
    "Alice", "Bob", "Carol", "Dmitri", "Esha", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Noor", "Oskar", "Priya",
];
const TOPICS: &[&str] = &[
    "the billing service",
    "the Kubernetes cluster",
    "our vLLM deployment",
    "the onboarding flow",
    "the quarterly report",
    "the mobile app",
    "the data warehouse",
    "the search ranking",
    "customer churn",
    "the GPU budget",
    "the marketing site",
    "the incident review",
    "the hiring plan",
    "the API gateway",
    "the nightly backups",
    "the recommendation model",
];
const VERBS: &[&str] = &[
    "is blocked by",
    "depends on",
    "was migrated to",
    "needs more tests for",
    "should be rewritten with",
    "regressed after",
    "got faster thanks to",
    "is owned by the team behind",
    "conflicts with",
    "will be replaced by",
];
const DETAILS: &[&str] = &[
    "a flaky integration test",
    "the new caching layer",
    "an expired TLS certificate",
    "the PostgreSQL upgrade",
    "a memory leak in the worker",
    "the vendor contract",
    "a misconfigured load balancer",
    "the holiday freeze",
    "a schema change",
    "the EU data rules",
    "rate limits from the provider",
    "a bug in the tokenizer",
];
const WHEN: &[&str] = &[
    "on Monday",
    "last sprint",
    "before the release",
    "during the outage",
    "in the retro",
    "after lunch",
    "next quarter",
    "this morning",
];

fn synthetic(rng: &mut impl Rng, i: usize) -> String {
    format!(
        "{} said {} {} {} {} (note {i}).",
        NAMES.choose(rng).unwrap(),
        TOPICS.choose(rng).unwrap(),
        VERBS.choose(rng).unwrap(),
        DETAILS.choose(rng).unwrap(),
        WHEN.choose(rng).unwrap()
    )
}

fn locomo_turns(path: &str) -> anyhow::Result<Vec<String>> {
    let data: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut out = Vec::new();
    for conv in data.as_array().context("expected an array")? {
        for (_, turns) in sessions(&conv["conversation"]) {
            for t in turns {
                out.push(format!(
                    "{}: {}",
                    t["speaker"].as_str().unwrap_or(""),
                    t["text"].as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok(out)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        pct(&ms, 0.5),
        pct(&ms, 0.95),
        pct(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    )
}

async fn ask(
    c: &Client,
    n: usize,
    namespace: &str,
    max_tokens: u32,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut retrieval, mut first, mut total, mut client) = (vec![], vec![], vec![], vec![]);
    let mut cited = 0usize;
    for i in 0..n {
        // Fresh sentences of the load generator, so no cache answers them.
        let q = format!("What did {} ask {i}?", synthetic(&mut rng, 1_000_000 + i));
        let started = Instant::now();
        let v = c
            .post(
                "/v1/ask",
                &json!({"question": q, "namespaces": [namespace], "max_tokens": max_tokens}),
            )
            .await?;
        client.push(started.elapsed().as_secs_f64() * 1e3);
        let t = &v["timings"];
        retrieval.push(t["retrieval_ms"].as_f64().unwrap_or(f64::NAN));
        if let Some(f) = t["first_token_ms"].as_f64() {
            first.push(f);
        }
        total.push(t["total_ms"].as_f64().unwrap_or(f64::NAN));
        if v["citations"].as_array().is_some_and(|a| !a.is_empty()) {
            cited += 1;
        }
    }
    println!("ask x{n} (max_tokens {max_tokens}), one at a time:");
    println!(
        "  retrieval (search, query embedding included): {}",
        summary(retrieval)
    );
    println!(
        "  LLM first token (from request start):         {}",
        summary(first)
    );
    println!(
        "  total (server):                               {}",
        summary(total)
    );
    println!(
        "  round trip (client):                          {}",
        summary(client)
    );
    println!("  answers citing a source: {cited}/{n}");
    Ok(())
}

async fn load(c: &Client, a: LoadArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let texts: Vec<String> = if a.source == "synthetic" {
        (0..a.n).map(|i| synthetic(&mut rng, i)).collect()
    } else {
        let turns = locomo_turns(&a.source)?;
        // Repeat the turns with a suffix when N exceeds the data set.
        (0..a.n)
            .map(|i| {
                let t = &turns[i % turns.len()];
                if i < turns.len() {
                    t.clone()
                } else {
                    format!("{t} (copy {})", i / turns.len())
                }
            })
            .collect()
    };
    let before = c.get("/v1/stats").await?;
    println!("# engram-bench load");
    println!("model: {}", before["model"]);
    if a.n > 0 {
        // Ingest: batches with bounded concurrency; rate counts until searchable.
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(a.ingest_concurrency));
        let mut set = tokio::task::JoinSet::new();
        for (bi, chunk) in texts.chunks(a.batch).enumerate() {
            let memories: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(j, t)| json!({"text": t, "metadata": {"i": bi * a.batch + j, "shard": (bi * a.batch + j) % 10}}))
                .collect();
            let body = json!({"namespace": a.namespace, "memories": memories});
            let permit = sem.clone().acquire_owned().await?;
            let c = c.clone();
            set.spawn(async move {
                let r = c.post("/v1/memories", &body).await;
                drop(permit);
                r
            });
        }
        let mut acked = 0usize;
        while let Some(r) = set.join_next().await {
            acked += r??["memories"].as_array().map_or(0, |m| m.len());
        }
        let ack_secs = started.elapsed().as_secs_f64();
        c.wait_idle().await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "ingest: {acked} memories acknowledged in {ack_secs:.1}s; searchable after {secs:.1}s → {:.1} memories/s (embedding included)",
            acked as f64 / secs
        );
    }
    if a.ack_samples > 0 {
        // Write acknowledgement latency of single-memory writes (durable, not yet embedded).
        let mut lat = Vec::with_capacity(a.ack_samples);
        for i in 0..a.ack_samples {
            let body = json!({"namespace": format!("{}-ack", a.namespace), "text": synthetic(&mut rng, 10_000_000 + i)});
            let t = Instant::now();
            c.post("/v1/memories", &body).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("write ack (single memory, concurrency 1): {}", summary(lat));
        c.wait_idle().await?;
    }
    let stats = c.get("/v1/stats").await?;
    println!(
        "memories: {} ({} pending, {} failed)",
        stats["memories"], stats["pending"], stats["failed"]
    );
    // Queries: fresh synthetic sentences (so the query embedding is computed, not cached).
    let queries: Vec<String> = (0..a.queries)
        .map(|i| {
            let q = synthetic(&mut rng, 20_000_000 + i);
            q[..q.find(" (note").unwrap_or(q.len())].to_string()
        })
        .collect();
    for &conc in &a.concurrency {
        let queries = Arc::new(queries.clone());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..conc {
            let (c, queries, next) = (c.clone(), queries.clone(), next.clone());
            let (k, mode, ns) = (a.k, a.mode.clone(), a.namespace.clone());
            set.spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(q) = queries.get(i) else { break };
                    // Each query string is made unique so no cache can answer it.
                    let body = json!({"query": format!("{q} #{conc}"), "k": k, "mode": mode, "namespaces": [ns]});
                    let t = Instant::now();
                    c.post("/v1/search", &body).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            });
        }
        let mut lat = Vec::new();
        while let Some(r) = set.join_next().await {
            lat.extend(r??);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "search {} k={} concurrency {conc}: {:.0} QPS, {}",
            a.mode,
            a.k,
            lat.len() as f64 / secs,
            summary(lat)
        );
    }
    if a.recall_queries > 0 {
        let mut total = 0.0;
        for q in queries.iter().take(a.recall_queries) {
            let base = json!({"query": q, "k": a.k, "mode": "vector", "namespaces": [a.namespace]});
            let mut exact = base.clone();
            exact["exact"] = json!(true);
            let approx = c.post("/v1/search", &base).await?;
            let truth = c.post("/v1/search", &exact).await?;
            let ids = |v: &Value| -> HashSet<String> {
                v["hits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h["id"].as_str().map(str::to_string))
                    .collect()
            };
            let t = ids(&truth);
            if !t.is_empty() {
                total += ids(&approx).intersection(&t).count() as f64 / t.len() as f64;
            }
        }
        println!(
            "vector recall@{} vs exact search: {:.4} over {} queries",
            a.k,
            total / a.recall_queries.min(queries.len()) as f64,
            a.recall_queries.min(queries.len())
        );
    }
    Ok(())
}

fn sessions(conv: &Value) -> Vec<(u32, Vec<Value>)> {
    let mut out = Vec::new();
    if let Some(o) = conv.as_object() {
        for (k, v) in o {
            if let Some(n) = k
                .strip_prefix("session_")
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some(turns) = v.as_array() {
                    out.push((n, turns.clone()));
                }
            }
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out
}

/// Evidence ids are sometimes malformed ("D8:6; D9:17", "D"): take every
/// well-formed `D<session>:<turn>` inside.
fn evidence_ids(ev: &Value) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in ev.as_array().into_iter().flatten() {
        for part in e.as_str().unwrap_or("").split([';', ',', ' ']) {
            let p = part.trim();
            if let Some(rest) = p.strip_prefix('D') {
                if let Some((s, t)) = rest.split_once(':') {
                    if s.parse::<u32>().is_ok() && t.parse::<u32>().is_ok() {
                        out.insert(p.to_string());
                    }
                }
            }
        }
    }
    out
}

/// A LoCoMo session date ("1:56 pm on 8 May, 2023") as RFC 3339, when it
/// parses (every dev session date does; the test below).
fn session_time(s: &str) -> Option<String> {
    let s = s.replace(" am ", " AM ").replace(" pm ", " PM ");
    let t = chrono::NaiveDateTime::parse_from_str(&s, "%I:%M %p on %d %B, %Y").ok()?;
    Some(t.and_utc().to_rfc3339())
}

/// Store each conversation through the session API (one engram session per
/// LoCoMo session, the turns as messages with speaker, position and event
/// time; a shared photo's caption stays part of the turn's text, as the
/// speaker sent it). Positions are explicit, so a re-run stores nothing new.
async fn load_locomo(c: &Client, convs: &[Value], prefix: &str) -> anyhow::Result<usize> {
    let mut total = 0;
    for conv in convs {
        let id = conv["sample_id"].as_str().unwrap_or("conv");
        let ns = format!("{prefix}:{id}");
        for (n, turns) in sessions(&conv["conversation"]) {
            let date = conv["conversation"][format!("session_{n}_date_time")]
                .as_str()
                .and_then(session_time);
            let messages: Vec<Value> = turns
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut text = t["text"].as_str().unwrap_or("").to_string();
                    if let Some(cap) = t["blip_caption"].as_str() {
                        text.push_str(&format!(" [shares a photo: {cap}]"));
                    }
                    let mut m = json!({
                        "speaker": t["speaker"],
                        "text": text,
                        "position": i,
                        "metadata": {"dia_id": t["dia_id"]},
                    });
                    if let Some(d) = &date {
                        m["occurred_at"] = json!(d);
                    }
                    m
                })
                .collect();
            total += messages.len();
            for chunk in messages.chunks(200) {
                c.post(
                    &format!("/v1/sessions/session_{n}/messages"),
                    &json!({"namespace": ns, "messages": chunk}),
                )
                .await?;
            }
        }
    }
    c.wait_idle().await?;
    Ok(total)
}

/// Sums for one (mode, category): evidence fraction and any-hit at each k.
#[derive(Default, Clone)]
struct Recall {
    questions: usize,
    fraction: BTreeMap<usize, f64>,
    any: BTreeMap<usize, f64>,
    /// Distinct turns returned by the top k hits (more than k when hits
    /// bring neighbours).
    turns: BTreeMap<usize, f64>,
}

const KS: [usize; 4] = [1, 5, 10, 25];

async fn locomo(
    c: &Client,
    path: &PathBuf,
    prefix: &str,
    modes: &[String],
    extra: Option<&str>,
    skip_load: bool,
) -> anyhow::Result<()> {
    let data: Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let convs = data
        .as_array()
        .context("expected an array of conversations")?;
    let extra: Value = match extra {
        Some(e) => serde_json::from_str(e).context("--search is not a JSON object")?,
        None => json!({}),
    };
    let started = Instant::now();
    let turns = if skip_load {
        0
    } else {
        load_locomo(c, convs, prefix).await?
    };
    let loaded = started.elapsed();
    // mode -> category (0: all) -> sums; mode -> latencies (ms)
    let mut res: BTreeMap<&str, BTreeMap<u64, Recall>> = BTreeMap::new();
    let mut lat: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut questions = 0usize;
    for conv in convs {
        let id = conv["sample_id"].as_str().unwrap_or("conv");
        let ns = format!("{prefix}:{id}");
        for qa in conv["qa"].as_array().into_iter().flatten() {
            let cat = qa["category"].as_u64().unwrap_or(0);
            if !(1..=4).contains(&cat) {
                continue;
            }
            let evidence = evidence_ids(&qa["evidence"]);
            if evidence.is_empty() {
                continue;
            }
            questions += 1;
            let question = qa["question"].as_str().unwrap_or("");
            for mode in modes {
                let mut body =
                    json!({"query": question, "k": 25, "mode": mode, "namespaces": [ns]});
                if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                    for (k, v) in e {
                        b.insert(k.clone(), v.clone());
                    }
                }
                let t = Instant::now();
                let r = c.post("/v1/search", &body).await?;
                lat.entry(mode)
                    .or_default()
                    .push(t.elapsed().as_secs_f64() * 1e3);
                // Each hit's turn, then the neighbours it brings (with
                // `expand`): the top k is what the first k hits return.
                let got: Vec<Vec<String>> = r["hits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        std::iter::once(h)
                            .chain(h["neighbors"].as_array().into_iter().flatten())
                            .filter_map(|m| m["metadata"]["dia_id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .collect();
                for c in [0, cat] {
                    let e = res.entry(mode).or_default().entry(c).or_default();
                    e.questions += 1;
                    for k in KS {
                        let top: HashSet<&String> = got.iter().take(k).flatten().collect();
                        let found = evidence.iter().filter(|e| top.contains(e)).count();
                        *e.fraction.entry(k).or_default() += found as f64 / evidence.len() as f64;
                        *e.any.entry(k).or_default() += (found > 0) as u8 as f64;
                        *e.turns.entry(k).or_default() += top.len() as f64;
                    }
                }
            }
        }
    }
    println!(
        "# LoCoMo evidence recall ({} conversations, {} questions of categories 1-4{}; search {})",
        convs.len(),
        questions,
        if skip_load {
            String::new()
        } else {
            format!(
                ", {turns} turns loaded through the session API in {:.0} s",
                loaded.as_secs_f64()
            )
        },
        if extra.as_object().is_some_and(|o| !o.is_empty()) {
            extra.to_string()
        } else {
            "defaults".into()
        },
    );
    println!();
    println!("evidence fraction@k: share of a question's evidence turns in the top k; any@k: at least one.");
    println!();
    println!(
        "| mode | category | questions | fraction@1 | @5 | @10 | @25 | any@1 | @5 | @10 | @25 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for mode in modes {
        let Some(by_cat) = res.get(mode.as_str()) else {
            continue;
        };
        for (cat, r) in by_cat {
            let q = r.questions as f64;
            let name = if *cat == 0 {
                "all".to_string()
            } else {
                cat.to_string()
            };
            let f: Vec<String> = KS
                .iter()
                .map(|k| format!("{:.3}", r.fraction[k] / q))
                .collect();
            let a: Vec<String> = KS.iter().map(|k| format!("{:.3}", r.any[k] / q)).collect();
            println!(
                "| {mode} | {name} | {} | {} | {} |",
                r.questions,
                f.join(" | "),
                a.join(" | ")
            );
        }
    }
    println!();
    for mode in modes {
        if let Some(r) = res.get(mode.as_str()).and_then(|c| c.get(&0)) {
            println!(
                "{mode}: evidence fraction@10 {:.4}, any@10 {:.4}, distinct turns returned@10 {:.1}",
                r.fraction[&10] / r.questions as f64,
                r.any[&10] / r.questions as f64,
                r.turns[&10] / r.questions as f64
            );
        }
    }
    println!();
    for mode in modes {
        if let Some(ms) = lat.remove(mode.as_str()) {
            println!(
                "search latency, {mode} k=25, concurrency 1, client side: {}",
                summary(ms)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locomo_session_dates_parse() {
        assert_eq!(
            session_time("1:56 pm on 8 May, 2023").as_deref(),
            Some("2023-05-08T13:56:00+00:00")
        );
        assert_eq!(
            session_time("10:37 am on 27 June, 2023").as_deref(),
            Some("2023-06-27T10:37:00+00:00")
        );
        assert_eq!(session_time("yesterday"), None);
    }

    #[test]
    fn every_dev_session_date_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/locomo-dev.json"
        );
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path} (../shared beside the repository): {e}"));
        let data: Value = serde_json::from_slice(&bytes).unwrap();
        for conv in data.as_array().unwrap() {
            for (k, v) in conv["conversation"].as_object().unwrap() {
                if k.ends_with("_date_time") {
                    let d = v.as_str().unwrap();
                    assert!(session_time(d).is_some(), "{k}: {d:?}");
                }
            }
        }
    }
}
