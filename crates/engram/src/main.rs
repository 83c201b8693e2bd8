//! `engram`: the memory service binary. It picks the concrete back-ends from
//! configuration, runs the HTTP API and workers, and offers a small CLI.

mod client;
mod ops;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

use engram_node::{admin, backup, run, telemetry, Config};

#[derive(Parser)]
#[command(
    name = "engram",
    version,
    about = "Long-term memory service for AI agents"
)]
struct Cli {
    /// TOML config file (layers: defaults < file < ENGRAM_* env < flags).
    #[arg(long, global = true, env = "ENGRAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Local {
    /// Data directory of the embedded store and indexes.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// all-MiniLM-L6-v2 model folder.
    #[arg(long, global = true)]
    model_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Remote {
    /// Base URL of a running engram.
    #[arg(long, env = "ENGRAM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (or JWT) sent as `Authorization: Bearer`.
    #[arg(long, env = "ENGRAM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl Remote {
    fn conn(&self) -> anyhow::Result<engram_client::Client> {
        client::connect(&self.url, self.api_key.as_deref())
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create an API key and print it once (it is stored hashed).
    Create {
        /// A label, e.g. the agent or service using it.
        #[arg(long)]
        name: String,
        /// admin, writer or reader.
        #[arg(long)]
        role: String,
        /// Limit the key to namespaces matching these patterns (`*` wildcard).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Extra permissions, e.g. pii:read.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// List the tenant's keys (never their secrets).
    List,
    /// Revoke a key by id; it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the tenant's hash chain; exits 1 if it is broken.
    Verify,
    /// Write a proof bundle: events, head hash, verification and record checksums.
    Export {
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct BackupLocation {
    /// A local directory instead of the configured `objects` location.
    #[arg(long = "dir", global = true)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Snapshot the store (consistent while serving) and upload it with a
    /// SHA-256 manifest.
    Create {
        /// Default: engram-<UTC time>.
        #[arg(long)]
        name: Option<String>,
    },
    /// List complete backups as JSON.
    List,
    /// Download and check every file against the manifest; exits 1 if damaged.
    Verify {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Validate an Ollama-style model env file: every model pinned (a tag
    /// other than `latest`, or a @sha256: digest), every `*_MODEL` variable
    /// in the available list; with --server, every listed model served by the
    /// LLM server. Prints a JSON report; exits 1 on errors.
    Check {
        /// The env file (KEY=VALUE lines, e.g. OLLAMA_MODELS and CHAT_MODEL).
        #[arg(long)]
        env_file: PathBuf,
        /// The variable that lists the available models.
        #[arg(long, default_value = "OLLAMA_MODELS")]
        list_var: String,
        /// Also ask the LLM server (`[llm] base_url`, or --llm-url) for its models.
        #[arg(long)]
        server: bool,
        /// The LLM server's API root, instead of `[llm] base_url`.
        #[arg(long)]
        llm_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API (with embedding workers unless --workers 0).
    Serve {
        #[command(flatten)]
        local: Local,
        #[arg(long)]
        listen: Option<String>,
        /// Embedding workers inside this process.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run embedding workers only, against the store of a `serve` (its data
    /// directory, or the shared PostgreSQL + queue of the scale-out mode).
    Worker {
        #[command(flatten)]
        local: Local,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Serve /healthz, /readyz and /metrics on this address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Add one memory through the API.
    Add {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, short)]
        namespace: String,
        /// The text (or read it from stdin with "-").
        text: String,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Return once the memory is searchable.
        #[arg(long)]
        wait: bool,
    },
    /// Serve engram's memory tools over MCP on stdin/stdout, for desktop and
    /// IDE agents; the tools call the engram at --url as --api-key.
    Mcp {
        #[command(flatten)]
        remote: Remote,
        /// The namespace tools use when a call names none.
        #[arg(long, short, env = "ENGRAM_MCP__DEFAULT_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Search through the API and print the hits as JSON.
    Search {
        #[command(flatten)]
        remote: Remote,
        query: String,
        #[arg(long = "namespace", short)]
        namespaces: Vec<String>,
        #[arg(long, short, default_value_t = 10)]
        k: usize,
        /// hybrid, vector or keyword.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Metadata filter as JSON.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Ask a question: the answer streams from the configured LLM, grounded
    /// in the memories it cites.
    Ask {
        #[command(flatten)]
        remote: Remote,
        question: String,
        #[arg(long = "namespace", short)]
        namespaces: Vec<String>,
        #[arg(long, short)]
        k: Option<usize>,
        /// Print the whole answer (sources, citations, timings) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import memories from JSONL (one memory object per line; a line may carry its own
    /// "namespace"), or with --session a conversation transcript (one message per line:
    /// {"speaker" or "role", "text", "occurred_at"?, "metadata"?}; a line without a
    /// "position" takes its line number, so importing the file again adds nothing), or
    /// with --from-chroma a ChromaDB collection (documents and metadata, page by page;
    /// Chroma ids become client ids, so a re-run or the rest of an interrupted run adds
    /// nothing twice; the texts are embedded again by engram's model).
    Import {
        #[command(flatten)]
        remote: Remote,
        #[arg(
            required_unless_present = "from_chroma",
            conflicts_with = "from_chroma"
        )]
        file: Option<PathBuf>,
        /// The namespace to import into (for --from-chroma, default: the collection's name).
        #[arg(long, short, required_unless_present = "from_chroma")]
        namespace: Option<String>,
        /// Append the lines as messages of this conversation session.
        #[arg(long, conflicts_with = "from_chroma")]
        session: Option<String>,
        /// Read a ChromaDB collection from this server (e.g. http://127.0.0.1:8000).
        #[arg(long, value_name = "URL", requires = "collection")]
        from_chroma: Option<String>,
        /// The Chroma collection's name.
        #[arg(long, requires = "from_chroma")]
        collection: Option<String>,
        #[arg(long, default_value = "default_tenant", requires = "from_chroma")]
        chroma_tenant: String,
        #[arg(long, default_value = "default_database", requires = "from_chroma")]
        chroma_database: String,
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch: u32,
        /// Wait until everything is searchable.
        #[arg(long)]
        wait: bool,
    },
    /// Export memories as JSONL to stdout or a file.
    Export {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, short)]
        namespace: Option<String>,
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print the API's OpenAPI 3.1 document (what `/openapi.json` serves).
    Openapi,
    /// Apply pending schema migrations to the configured store and exit
    /// (`serve` and `worker` also do this at start, under a lock).
    Migrate {
        #[command(flatten)]
        local: Local,
    },
    /// Recreate the vector and keyword indexes from the store (server stopped).
    Rebuild {
        #[command(flatten)]
        local: Local,
    },
    /// Backups of the embedded store, in `objects_dir` or S3 (`objects = "s3"`).
    Backup {
        #[command(flatten)]
        local: Local,
        #[command(flatten)]
        location: BackupLocation,
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Verify a backup and restore it into an empty data directory, then
    /// rebuild the indexes (server stopped). A damaged backup is refused.
    Restore {
        #[command(flatten)]
        local: Local,
        #[command(flatten)]
        location: BackupLocation,
        name: String,
    },
    /// Manage API keys directly in the data directory (works while serving).
    Keys {
        #[command(flatten)]
        local: Local,
        /// Tenant (default: the configured `tenant`).
        #[arg(long)]
        tenant: Option<String>,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Verify or export the audit log directly from the data directory.
    Audit {
        #[command(flatten)]
        local: Local,
        #[arg(long)]
        tenant: Option<String>,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Health probe of a running engram for container HEALTHCHECKs: store,
    /// index, queue, embedder and LLM, as JSON. Exit 0: ok (or degraded: only
    /// the LLM down); 1: failing (or degraded with --require-llm);
    /// 2: unreachable or timed out. Needs no config, model or data directory.
    Probe {
        /// Base URL of the engram to probe.
        #[arg(long, env = "ENGRAM_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Give up (exit 2) after this many seconds.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Treat an LLM that is down, or not configured, as failing (exit 1).
        #[arg(long)]
        require_llm: bool,
    },
    /// LLM model configuration checks.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Stream a few short chats per model from the LLM server and print
    /// first-token and total latency (p50 / max) and tokens/s; exits 1 if
    /// any run failed.
    Smoke {
        /// Models to test (comma-separated); default: the env file's list,
        /// else `[llm] model`.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Take the models from this env file's list variable.
        #[arg(long)]
        env_file: Option<PathBuf>,
        #[arg(long, default_value = "OLLAMA_MODELS")]
        list_var: String,
        /// Chats per model.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Longest answer per chat, in tokens.
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
        /// Print the measurements as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The LLM server's API root, instead of `[llm] base_url`.
        #[arg(long)]
        llm_url: Option<String>,
    },
}

/// Flush stdout and end the process with `code`.
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn overrides(local: &Local) -> Vec<(&'static str, figment::value::Value)> {
    let mut o = Vec::new();
    if let Some(d) = &local.data_dir {
        o.push(("data_dir", d.display().to_string().into()));
    }
    if let Some(m) = &local.model_dir {
        o.push(("model_dir", m.display().to_string().into()));
    }
    o
}

fn backup_overrides(
    local: &Local,
    location: &BackupLocation,
) -> Vec<(&'static str, figment::value::Value)> {
    let mut o = overrides(local);
    if let Some(d) = &location.dir {
        o.push(("objects", "fs".into()));
        o.push(("objects_dir", d.display().to_string().into()));
    }
    o
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = cli.config.as_deref();
    match cli.cmd {
        Cmd::Serve {
            local,
            listen,
            workers,
        } => {
            let mut o = overrides(&local);
            if let Some(l) = listen {
                o.push(("listen", l.into()));
            }
            if let Some(w) = workers {
                o.push(("workers", w.into()));
            }
            let cfg = Config::load(file, &o)?;
            let t = telemetry::init(&cfg.log_format, &cfg.traces, "serve")?;
            let r = run::serve(cfg).await;
            t.shutdown().await;
            Ok(r?)
        }
        Cmd::Worker {
            local,
            workers,
            listen,
        } => {
            let mut o = overrides(&local);
            o.push(("workers", workers.into()));
            if let Some(l) = listen {
                o.push(("worker_listen", l.into()));
            }
            let cfg = Config::load(file, &o)?;
            let t = telemetry::init(&cfg.log_format, &cfg.traces, "worker")?;
            let r = run::worker(cfg).await;
            t.shutdown().await;
            Ok(r?)
        }
        Cmd::Openapi => {
            print!("{}", engram_server::openapi::document());
            Ok(())
        }
        Cmd::Migrate { local } => {
            let cfg = Config::load(file, &overrides(&local))?;
            telemetry::init_logs(&cfg.log_format);
            let store = cfg.store;
            run::migrate(cfg).await?;
            eprintln!("schema up to date ({store:?} store)");
            Ok(())
        }
        Cmd::Rebuild { local } => {
            let cfg = Config::load(file, &overrides(&local))?;
            telemetry::init_logs(&cfg.log_format);
            rebuilt(run::rebuild(cfg).await?);
            Ok(())
        }
        Cmd::Backup {
            local,
            location,
            cmd,
        } => {
            let cfg = Config::load(file, &backup_overrides(&local, &location))?;
            telemetry::init_logs(&cfg.log_format);
            match cmd {
                BackupCmd::Create { name } => {
                    print_json(&backup::summary(&backup::create(&cfg, name).await?))
                }
                BackupCmd::List => {
                    let all = backup::list(&cfg).await?;
                    let out: Vec<_> = all.backups.iter().map(backup::summary).collect();
                    print_json(&out)?;
                    for d in &all.damaged {
                        eprintln!("damaged (cannot be restored): {}", d.reason);
                    }
                    Ok(())
                }
                BackupCmd::Verify { name } => {
                    let m = backup::verify(&cfg, &name).await?;
                    eprintln!(
                        "backup {name:?}: manifest and {} file(s) verified",
                        m.files.len()
                    );
                    print_json(&backup::summary(&m))
                }
                BackupCmd::Delete { name } => {
                    let at = backup::delete(&cfg, &name).await?;
                    eprintln!("backup {name:?} deleted from {at}");
                    Ok(())
                }
            }
        }
        Cmd::Restore {
            local,
            location,
            name,
        } => {
            let cfg = Config::load(file, &backup_overrides(&local, &location))?;
            telemetry::init_logs(&cfg.log_format);
            rebuilt(backup::restore(cfg, &name).await?);
            Ok(())
        }
        Cmd::Keys { local, tenant, cmd } => {
            let cfg = Config::load(file, &overrides(&local))?;
            let cmd = match cmd {
                KeysCmd::Create {
                    name,
                    role,
                    namespaces,
                    permissions,
                } => admin::KeyCommand::Create {
                    name,
                    role,
                    namespaces,
                    permissions,
                },
                KeysCmd::List => admin::KeyCommand::List,
                KeysCmd::Revoke { id } => admin::KeyCommand::Revoke { id },
            };
            print_json(&admin::keys(&cfg, tenant, cmd).await?)
        }
        Cmd::Audit { local, tenant, cmd } => {
            let cfg = Config::load(file, &overrides(&local))?;
            let report = match cmd {
                AuditCmd::Verify => admin::verify_audit(&cfg, tenant).await?,
                AuditCmd::Export { out } => {
                    let bundle = admin::export_audit(&cfg, tenant, &out).await?;
                    eprintln!(
                        "wrote {} events and {} record checksums to {}",
                        bundle.events.len(),
                        bundle.records.len(),
                        out.display()
                    );
                    bundle.verify
                }
            };
            print_json(&report)?;
            if !report.ok {
                anyhow::bail!("the audit chain is broken at event {:?}", report.broken_at);
            }
            Ok(())
        }
        Cmd::Add {
            remote,
            namespace,
            text,
            metadata,
            tags,
            kind,
            wait,
        } => {
            let text = if text == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                text
            };
            client::add(
                &remote.conn()?,
                &namespace,
                text,
                metadata,
                tags,
                kind,
                wait,
            )
            .await
        }
        Cmd::Mcp { remote, namespace } => {
            // stdout carries the protocol: logs go to stderr only, and only
            // warnings unless ENGRAM_LOG says otherwise.
            engram_node::telemetry::init_quiet_logs("text");
            let api = engram_mcp::client::ClientApi::new(remote.conn()?);
            let options = engram_mcp::McpOptions {
                default_namespace: namespace,
            };
            engram_mcp::EngramMcp::new(std::sync::Arc::new(api), options)
                .serve_stdio()
                .await?;
            Ok(())
        }
        Cmd::Search {
            remote,
            query,
            namespaces,
            k,
            mode,
            filter,
        } => client::search(&remote.conn()?, query, namespaces, k, mode, filter).await,
        Cmd::Ask {
            remote,
            question,
            namespaces,
            k,
            json,
        } => client::ask(&remote.conn()?, question, namespaces, k, json).await,
        Cmd::Import {
            remote,
            from_chroma: Some(chroma),
            collection: Some(collection),
            chroma_tenant,
            chroma_database,
            namespace,
            batch,
            wait,
            ..
        } => {
            let from = client::Chroma {
                url: &chroma,
                tenant: &chroma_tenant,
                database: &chroma_database,
                collection: &collection,
            };
            client::import_chroma(&remote.conn()?, from, namespace, batch, wait).await
        }
        Cmd::Import {
            remote,
            file: Some(file),
            namespace: Some(namespace),
            session,
            batch,
            wait,
            ..
        } => {
            let c = remote.conn()?;
            let batch = batch as usize;
            match session {
                Some(session) => {
                    client::import_session(&c, &file, &namespace, &session, batch, wait).await
                }
                None => client::import(&c, &file, &namespace, batch, wait).await,
            }
        }
        Cmd::Import { .. } => {
            anyhow::bail!(
                "import needs FILE and --namespace, or --from-chroma URL and --collection NAME"
            )
        }
        Cmd::Export {
            remote,
            namespace,
            out,
        } => client::export(&remote.conn()?, namespace, out).await,
        Cmd::Probe {
            url,
            timeout,
            require_llm,
        } => {
            let timeout = match Duration::try_from_secs_f64(timeout) {
                Ok(t) if !t.is_zero() => t,
                _ => anyhow::bail!("--timeout must be a positive number of seconds"),
            };
            exit(ops::probe(&url, timeout, require_llm).await)
        }
        Cmd::Models {
            cmd:
                ModelsCmd::Check {
                    env_file,
                    list_var,
                    server,
                    llm_url,
                },
        } => exit(ops::models_check(file, &env_file, &list_var, server, llm_url).await?),
        Cmd::Smoke {
            models,
            env_file,
            list_var,
            runs,
            max_tokens,
            json,
            llm_url,
        } => {
            let args = ops::SmokeArgs {
                models,
                env_file,
                list_var,
                runs,
                max_tokens,
                json,
                llm_url,
            };
            exit(ops::smoke(file, args).await?)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn rebuilt(r: run::Rebuilt) {
    eprintln!(
        "rebuilt from {} changes in {:.1}s: {} vectors, {} keyword documents",
        r.changes, r.seconds, r.vectors, r.keywords
    );
}
