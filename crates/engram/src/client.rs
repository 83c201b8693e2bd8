//! CLI commands that talk to a running engram over HTTP.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::Path;

/// A running engram: its base URL and a client that sends the API key.
pub struct Conn {
    url: String,
    http: reqwest::Client,
}

impl Conn {
    pub fn new(url: &str, api_key: Option<&str>) -> anyhow::Result<Conn> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(k) = api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}"))
                .context("the API key is not valid header text")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(Conn {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .context("building the HTTP client")?,
        })
    }
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let res = req.send().await.context("cannot reach engram")?;
    let status = res.status();
    let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
        Value::Null
    } else {
        res.json().await.context("reading the response")?
    };
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        bail!("{status} {code}: {msg}");
    }
    Ok(body)
}

fn parse_json(what: &str, s: Option<String>) -> anyhow::Result<Option<Value>> {
    s.map(|s| serde_json::from_str(&s).with_context(|| format!("{what} is not valid JSON")))
        .transpose()
}

pub async fn add(
    c: &Conn,
    namespace: &str,
    text: String,
    metadata: Option<String>,
    tags: Vec<String>,
    kind: Option<String>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut body = json!({"namespace": namespace, "text": text, "tags": tags});
    if let Some(m) = parse_json("--metadata", metadata)? {
        body["metadata"] = m;
    }
    if let Some(k) = kind {
        body["kind"] = json!(k);
    }
    let http = &c.http;
    let out = call(
        http.post(format!("{}/v1/memories", c.url))
            .query(&[("wait", wait)])
            .json(&body),
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn search(
    c: &Conn,
    query: String,
    namespaces: Vec<String>,
    k: usize,
    mode: String,
    filter: Option<String>,
) -> anyhow::Result<()> {
    let mut body = json!({"query": query, "namespaces": namespaces, "k": k, "mode": mode});
    if let Some(f) = parse_json("--filter", filter)? {
        body["filter"] = f;
    }
    let out = call(c.http.post(format!("{}/v1/search", c.url)).json(&body)).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `engram ask`: stream the answer to stdout as it is generated, then the
/// cited memories to stderr (or, with `--json`, the whole answer document).
pub async fn ask(
    c: &Conn,
    question: String,
    namespaces: Vec<String>,
    k: Option<usize>,
    json_out: bool,
) -> anyhow::Result<()> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    use std::io::Write;

    let mut body = json!({"question": question, "namespaces": namespaces, "stream": !json_out});
    if let Some(k) = k {
        body["k"] = json!(k);
    }
    let req = c.http.post(format!("{}/v1/ask", c.url)).json(&body);
    if json_out {
        let out = call(req).await?;
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let res = req.send().await.context("cannot reach engram")?;
    if !res.status().is_success() {
        // Errors before the first token come as a normal JSON error.
        return call_error(res).await;
    }
    let mut events = res.bytes_stream().eventsource();
    let mut sources = Value::Null;
    let mut out = std::io::stdout();
    while let Some(ev) = events.next().await {
        let ev = ev.context("reading the answer stream")?;
        let data: Value = serde_json::from_str(&ev.data).context("a malformed event")?;
        match ev.event.as_str() {
            "sources" => sources = data["sources"].clone(),
            "token" => {
                write!(out, "{}", data["text"].as_str().unwrap_or_default())?;
                out.flush()?;
            }
            "done" => {
                writeln!(out)?;
                let cited = data["citations"].as_array().cloned().unwrap_or_default();
                let shown: Vec<Value> = if cited.is_empty() {
                    sources.as_array().cloned().unwrap_or_default()
                } else {
                    cited
                };
                eprintln!(
                    "\n{}:",
                    if data["citations"].as_array().is_some_and(|a| !a.is_empty()) {
                        "cited"
                    } else {
                        "sources (none cited)"
                    }
                );
                for s in shown {
                    eprintln!(
                        "[{}] {} ({})",
                        s["index"],
                        s["id"].as_str().unwrap_or_default(),
                        s["namespace"].as_str().unwrap_or_default()
                    );
                }
                return Ok(());
            }
            "error" => {
                writeln!(out)?;
                bail!(
                    "{}: {}",
                    data["error"]["code"].as_str().unwrap_or("error"),
                    data["error"]["message"].as_str().unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    bail!("the answer stream ended early")
}

async fn call_error(res: reqwest::Response) -> anyhow::Result<()> {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("unknown");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    bail!("{status} {code}: {msg}")
}

pub async fn import(
    c: &Conn,
    file: &Path,
    namespace: &str,
    batch: usize,
    wait: bool,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let http = &c.http;
    // Batches are per namespace: a line may name its own.
    let mut pending: Vec<(String, Value)> = Vec::new();
    let (mut created, mut duplicates) = (0u64, 0u64);
    // A running count on a terminal; logs get only the final line.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let flush = |items: Vec<(String, Value)>| {
        let http = http.clone();
        async move {
            let mut by_ns: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
            for (ns, v) in items {
                by_ns.entry(ns).or_default().push(v);
            }
            let mut counts = (0u64, 0u64);
            for (ns, memories) in by_ns {
                let out = call(
                    http.post(format!("{}/v1/memories", c.url))
                        .query(&[("wait", wait)])
                        .json(&json!({"namespace": ns, "memories": memories})),
                )
                .await?;
                for m in out["memories"].as_array().into_iter().flatten() {
                    if m["status"] == "created" {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                }
            }
            anyhow::Ok(counts)
        }
    };
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", file.display(), i + 1))?;
        let ns = match v.as_object_mut().and_then(|o| o.remove("namespace")) {
            Some(Value::String(s)) => s,
            Some(_) => bail!("{}:{}: namespace must be a string", file.display(), i + 1),
            None => namespace.to_string(),
        };
        pending.push((ns, v));
        if pending.len() >= batch {
            let (c, d) = flush(std::mem::take(&mut pending)).await?;
            created += c;
            duplicates += d;
            if progress {
                eprint!("\r\x1b[2Ksent {} memories", created + duplicates);
            }
        }
    }
    if !pending.is_empty() {
        let (c, d) = flush(pending).await?;
        created += c;
        duplicates += d;
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    eprintln!("imported {created} (+{duplicates} duplicates)");
    Ok(())
}

/// Append a transcript (JSONL, one message per line) to a session. Lines
/// without a position take their line number (blank lines skipped), so a
/// re-run returns the stored messages instead of adding them again.
pub async fn import_session(
    c: &Conn,
    file: &Path,
    namespace: &str,
    session: &str,
    batch: usize,
    wait: bool,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut messages: Vec<Value> = Vec::new();
    let (mut created, mut duplicates) = (0u64, 0u64);
    // The session id is one path segment, percent-encoded.
    let mut url = reqwest::Url::parse(&c.url).context("the server URL")?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("the server URL cannot take a path"))?
        .pop_if_empty()
        .extend(["v1", "sessions", session, "messages"]);
    let send = |messages: Vec<Value>| {
        let req = c
            .http
            .post(url.clone())
            .query(&[("wait", wait)])
            .json(&json!({"namespace": namespace, "messages": messages}));
        async move {
            let out = call(req).await?;
            let mut counts = (0u64, 0u64);
            for m in out["messages"].as_array().into_iter().flatten() {
                if m["status"] == "created" {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            anyhow::Ok(counts)
        }
    };
    let mut position = 0u64;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", file.display(), i + 1))?;
        let Some(o) = v.as_object_mut() else {
            bail!(
                "{}:{}: a message must be a JSON object",
                file.display(),
                i + 1
            );
        };
        match o.get("position").and_then(Value::as_u64) {
            Some(p) => position = p,
            None => {
                o.insert("position".into(), json!(position));
            }
        }
        position += 1;
        messages.push(v);
        if messages.len() >= batch {
            let (c, d) = send(std::mem::take(&mut messages)).await?;
            created += c;
            duplicates += d;
        }
    }
    if !messages.is_empty() {
        let (c, d) = send(messages).await?;
        created += c;
        duplicates += d;
    }
    eprintln!("appended {created} messages to session {session:?} (+{duplicates} already there)");
    Ok(())
}

pub async fn export(
    c: &Conn,
    namespace: Option<String>,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let http = &c.http;
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut cursor: Option<String> = None;
    let mut n = 0u64;
    loop {
        let body = json!({"namespace": namespace, "limit": 1000, "cursor": cursor});
        let page = call(http.post(format!("{}/v1/memories/list", c.url)).json(&body)).await?;
        for m in page["memories"].as_array().into_iter().flatten() {
            serde_json::to_writer(&mut w, m)?;
            w.write_all(b"\n")?;
            n += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    w.flush()?;
    eprintln!("exported {n} memories");
    Ok(())
}
