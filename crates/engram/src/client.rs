//! CLI commands that talk to a running engram over HTTP, through
//! `engram-client`.

use anyhow::{bail, Context};
use engram_client::chroma::ChromaCollection;
use engram_client::{
    AskEvent, AskRequest, Client, ListRequest, NewMemory, NewMessage, SearchRequest,
};
use futures::StreamExt;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::Path;

pub fn connect(url: &str, api_key: Option<&str>) -> anyhow::Result<Client> {
    Ok(Client::new(url, api_key)?)
}

fn parse_json(what: &str, s: Option<String>) -> anyhow::Result<Option<Value>> {
    s.map(|s| serde_json::from_str(&s).with_context(|| format!("{what} is not valid JSON")))
        .transpose()
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn add(
    c: &Client,
    namespace: &str,
    text: String,
    metadata: Option<String>,
    tags: Vec<String>,
    kind: Option<String>,
    wait: bool,
) -> anyhow::Result<()> {
    let metadata = match parse_json("--metadata", metadata)? {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => bail!("--metadata must be a JSON object"),
    };
    let m = NewMemory {
        metadata,
        tags,
        kind,
        ..NewMemory::text(text)
    };
    let out = c.add(namespace, vec![m], wait).await?;
    print(&out[0])
}

pub async fn search(
    c: &Client,
    query: String,
    namespaces: Vec<String>,
    k: usize,
    mode: String,
    filter: Option<String>,
) -> anyhow::Result<()> {
    let req = SearchRequest {
        namespaces,
        k: Some(k),
        mode: Some(mode),
        filter: parse_json("--filter", filter)?,
        ..SearchRequest::new(query)
    };
    print(&c.search(&req).await?)
}

/// `engram ask`: stream the answer to stdout as it is generated, then the
/// cited memories to stderr (or, with `--json`, the whole answer document).
pub async fn ask(
    c: &Client,
    question: String,
    namespaces: Vec<String>,
    k: Option<usize>,
    json_out: bool,
) -> anyhow::Result<()> {
    let req = AskRequest {
        question,
        namespaces,
        k,
        ..Default::default()
    };
    if json_out {
        return print(&c.ask(&req).await?);
    }
    let mut events = std::pin::pin!(c.ask_stream(&req).await?);
    let mut sources = Vec::new();
    let mut out = std::io::stdout();
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                writeln!(out)?;
                return Err(e.into());
            }
        };
        match ev {
            AskEvent::Sources(s) => sources = s,
            AskEvent::Token(t) => {
                write!(out, "{t}")?;
                out.flush()?;
            }
            AskEvent::Done(data) => {
                writeln!(out)?;
                let cited = data["citations"].as_array().cloned().unwrap_or_default();
                let any_cited = !cited.is_empty();
                let shown = if any_cited { cited } else { sources };
                eprintln!(
                    "\n{}:",
                    if any_cited {
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
        }
    }
    bail!("the answer stream ended early")
}

/// Lines of a JSONL file with their line numbers, blank lines skipped.
fn json_lines(file: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<(usize, Value)>>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let name = file.display().to_string();
    Ok(std::io::BufReader::new(f)
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| {
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(e.into())),
            };
            if line.trim().is_empty() {
                return None;
            }
            Some(
                serde_json::from_str(&line)
                    .with_context(|| format!("{name}:{}: not valid JSON", i + 1))
                    .map(|v| (i + 1, v)),
            )
        }))
}

pub async fn import(
    c: &Client,
    file: &Path,
    namespace: &str,
    batch: usize,
    wait: bool,
) -> anyhow::Result<()> {
    // Batches are per namespace: a line may name its own.
    let mut pending: Vec<(String, NewMemory)> = Vec::new();
    let (mut created, mut duplicates) = (0u64, 0u64);
    // A running count on a terminal; logs get only the final line.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let flush = |items: Vec<(String, NewMemory)>| async move {
        let mut by_ns: std::collections::BTreeMap<String, Vec<NewMemory>> = Default::default();
        for (ns, m) in items {
            by_ns.entry(ns).or_default().push(m);
        }
        let mut counts = (0u64, 0u64);
        for (ns, memories) in by_ns {
            for m in c.add(&ns, memories, wait).await? {
                if m.is_new() {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
        }
        anyhow::Ok(counts)
    };
    for line in json_lines(file)? {
        let (n, mut v) = line?;
        let ns = match v.as_object_mut().and_then(|o| o.remove("namespace")) {
            Some(Value::String(s)) => s,
            Some(_) => bail!("{}:{n}: namespace must be a string", file.display()),
            None => namespace.to_string(),
        };
        let m =
            NewMemory::from_json(v).map_err(|e| anyhow::anyhow!("{}:{n}: {e}", file.display()))?;
        pending.push((ns, m));
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

/// Where `import --from-chroma` reads.
pub struct Chroma<'a> {
    pub url: &'a str,
    pub tenant: &'a str,
    pub database: &'a str,
    pub collection: &'a str,
}

/// Import a Chroma collection (see `ChromaCollection::import_into`): the
/// refused records are named, and fail the command once the rest are in.
pub async fn import_chroma(
    c: &Client,
    from: Chroma<'_>,
    namespace: Option<String>,
    batch: u32,
    wait: bool,
) -> anyhow::Result<()> {
    let col = ChromaCollection::open(from.url, from.tenant, from.database, from.collection)
        .await
        .with_context(|| format!("opening the Chroma collection {:?}", from.collection))?;
    let namespace = namespace.unwrap_or_else(|| col.name.clone());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let out = col
        .import_into(c, &namespace, batch, wait, |read, total| {
            if terminal {
                eprint!("\r\x1b[2Kread {read} of {total} records");
            }
        })
        .await;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let out = out?;
    eprintln!(
        "imported {} memories from Chroma collection {:?} into namespace {namespace:?} \
         (+{} already there) from {} records",
        out.created, col.name, out.duplicates, out.read
    );
    if !out.without_document.is_empty() {
        let n = out.without_document.len();
        let mut shown = out.without_document[..n.min(10)].join(", ");
        if n > 10 {
            shown.push_str(", ...");
        }
        eprintln!("{n} records have no document (no text to remember) and were left out: {shown}");
    }
    for (id, e) in &out.rejected {
        eprintln!("Chroma record {id:?} not imported: {e}");
    }
    if !out.rejected.is_empty() {
        bail!(
            "{} records were not imported (see above); the rest were",
            out.rejected.len()
        );
    }
    Ok(())
}

/// Append a transcript (JSONL, one message per line) to a session. Lines
/// without a position take their line number (blank lines skipped), so a
/// re-run returns the stored messages instead of adding them again.
pub async fn import_session(
    c: &Client,
    file: &Path,
    namespace: &str,
    session: &str,
    batch: usize,
    wait: bool,
) -> anyhow::Result<()> {
    let mut messages: Vec<NewMessage> = Vec::new();
    let (mut created, mut duplicates) = (0u64, 0u64);
    let send = |messages: Vec<NewMessage>| async move {
        let mut counts = (0u64, 0u64);
        for m in c
            .append_messages(namespace, session, messages, wait)
            .await?
        {
            if m.is_new() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        anyhow::Ok(counts)
    };
    let mut position = 0u64;
    for line in json_lines(file)? {
        let (n, v) = line?;
        let mut m =
            NewMessage::from_json(v).map_err(|e| anyhow::anyhow!("{}:{n}: {e}", file.display()))?;
        match m.position {
            Some(p) => position = p,
            None => m.position = Some(position),
        }
        position += 1;
        messages.push(m);
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
    c: &Client,
    namespace: Option<String>,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut n = 0u64;
    let req = ListRequest {
        namespace,
        limit: Some(1000),
        ..Default::default()
    };
    let mut all = std::pin::pin!(c.list_all(req));
    while let Some(m) = all.next().await {
        serde_json::to_writer(&mut w, &m?)?;
        w.write_all(b"\n")?;
        n += 1;
    }
    w.flush()?;
    eprintln!("exported {n} memories");
    Ok(())
}
