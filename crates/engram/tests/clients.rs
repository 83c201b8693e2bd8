//! engram driven by the clients its users run, against a real node: the
//! official `openai` and `mcp` Python packages (from `scripts/services.sh
//! start py`), and our own clients in `clients/python` and
//! `clients/typescript` (their test suites, run with their keys).

use engram_testkit::{create_key, python, NodeBuilder};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_engram");

/// A node whose `/v1/ask` and proxy use the test suite's llama.cpp server
/// (`scripts/services.sh start llm`); the model's name too.
fn llm_node(dir: &Path) -> (NodeBuilder, String) {
    let (llm, model) = (engram_testkit::llm_url(), engram_testkit::llm_model());
    let node = NodeBuilder::serve(BIN)
        .data_dir(dir)
        .env("ENGRAM_LLM__BASE_URL", llm)
        .env("ENGRAM_LLM__MODEL", &model);
    (node, model)
}

/// Run `tests/py/<script>` with the node's URL and a key; it must print `ok`.
fn run_script(script: &str, env: &[(&str, &str)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (scripts/services.sh start py installs it): {e}",
                python().display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/v1/embeddings` and `/v1/models` through `openai.OpenAI`: the client's
/// default base64 encoding, floats, `dimensions`, errors as its exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_embeds_and_lists_models() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::serve(BIN).data_dir(dir.path()).start().await;
    let key = create_key(BIN.as_ref(), dir.path(), "reader", &[]);
    run_script(
        "openai_compat.py",
        &[("ENGRAM_URL", &node.url), ("ENGRAM_API_KEY", &key)],
    );
}

/// The MCP tools through the official `mcp` SDK over streamable HTTP
/// (`/mcp`) and stdio (`engram mcp`): initialize, list tools, add, search
/// finds it, get/update/list/append/delete, ask through the real LLM, a
/// reader cannot write, a scoped key sees only its namespaces, no
/// credentials is a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_client_uses_the_memory_tools_over_http_and_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = llm_node(dir.path());
    // Short answers from the small test model.
    let node = node.env("ENGRAM_LLM__MAX_TOKENS", "16").start().await;
    let writer = create_key(BIN.as_ref(), dir.path(), "writer", &[]);
    let reader = create_key(BIN.as_ref(), dir.path(), "reader", &[]);
    let scoped = create_key(BIN.as_ref(), dir.path(), "writer", &["team:*"]);
    run_script(
        "mcp_tools.py",
        &[
            ("ENGRAM_URL", &node.url),
            ("ENGRAM_BIN", BIN),
            ("ENGRAM_WRITER_KEY", &writer),
            ("ENGRAM_READER_KEY", &reader),
            ("ENGRAM_SCOPED_KEY", &scoped),
        ],
    );
}

/// The memory proxy through `openai.OpenAI` against the real llama.cpp
/// server: memories join the prompt (their ids in `X-Engram-Memories`),
/// answers come back as the LLM sent them (JSON and streamed), the exchange
/// is recorded in the session, bad input is the client's exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_chats_through_the_memory_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (node, llm_model) = llm_node(dir.path());
    let node = node.start().await;
    let writer = create_key(BIN.as_ref(), dir.path(), "writer", &[]);
    let reader = create_key(BIN.as_ref(), dir.path(), "reader", &[]);
    run_script(
        "openai_proxy.py",
        &[
            ("ENGRAM_URL", &node.url),
            ("ENGRAM_WRITER_KEY", &writer),
            ("ENGRAM_READER_KEY", &reader),
            ("ENGRAM_LLM_MODEL", &llm_model),
        ],
    );
}

/// Keys for a client test suite: the user's (`ENGRAM_API_KEY`, a writer),
/// an admin's and a reader's, and the node's URL.
fn client_env(node_url: &str, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ENGRAM_URL", node_url.to_owned()),
        (
            "ENGRAM_API_KEY",
            create_key(BIN.as_ref(), dir, "writer", &[]),
        ),
        (
            "ENGRAM_ADMIN_KEY",
            create_key(BIN.as_ref(), dir, "admin", &[]),
        ),
        (
            "ENGRAM_READER_KEY",
            create_key(BIN.as_ref(), dir, "reader", &[]),
        ),
        ("ENGRAM_TEST_LLM", "1".to_owned()),
    ]
}

/// Run a client's test suite; it must pass with nothing skipped (unittest
/// reports skips as `skipped=`, Node's runner as `# SKIP`).
fn run_suite(what: &str, mut command: Command, env: &[(&'static str, String)]) {
    let out = command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running {what}'s tests: {e}"));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !output.contains("skipped=") && !output.contains("# SKIP"),
        "{what}'s tests failed:\n{output}"
    );
}

fn client_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../clients")
        .join(name)
}

/// The Python client (`clients/python`, package `engram-client`) runs its
/// own test suite against a real node with the test LLM: sync and async
/// calls, typed answers, errors with engram's codes, pagination, streaming
/// `ask` (and, on a fake server that injects 503s, retries after
/// `Retry-After`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_suite_against_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = llm_node(dir.path());
    let node = node.env("ENGRAM_LLM__MAX_TOKENS", "16").start().await;
    let client = client_dir("python");
    let mut command = Command::new(python());
    command
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(client.join("tests"))
        .env("PYTHONPATH", client.join("src"));
    run_suite(
        "the Python client",
        command,
        &client_env(&node.url, dir.path()),
    );
}

/// The TypeScript client (`clients/typescript`, ESM on Node's `fetch`) runs
/// its suite with Node's test runner against a real node, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_suite_against_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = llm_node(dir.path());
    let node = node.env("ENGRAM_LLM__MAX_TOKENS", "16").start().await;
    let mut command = Command::new("node");
    command
        .args(["--test", "test/"])
        .current_dir(client_dir("typescript"));
    run_suite(
        "the TypeScript client",
        command,
        &client_env(&node.url, dir.path()),
    );
}

/// The TypeScript client's published types (`src/index.d.ts`) compile the
/// calls of its README under `--strict`, and refuse the mistakes
/// `test/types.ts` expects them to (`@ts-expect-error` fails when no error
/// comes).
#[test]
fn the_typescript_clients_types_check() {
    let tsc = std::env::var_os("ENGRAM_TEST_TSC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/engram-services/ts/node_modules/.bin/tsc".into());
    let out = Command::new(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
        ])
        .args(["--target", "es2022", "test/types.ts"])
        .current_dir(client_dir("typescript"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (scripts/services.sh start ts): {e}",
                tsc.display()
            )
        });
    assert!(
        out.status.success(),
        "the TypeScript types do not check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Chroma server (`chroma run`, from the `chromadb` package of the
/// test venv) on a free port, killed when dropped.
struct ChromaServer {
    child: std::process::Child,
    port: u16,
}

impl ChromaServer {
    async fn start(dir: &Path) -> ChromaServer {
        let port = engram_testkit::free_port();
        let bin = python().with_file_name("chroma");
        let child = Command::new(&bin)
            .args(["run", "--path"])
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (scripts/services.sh start py): {e}",
                    bin.display()
                )
            });
        let server = ChromaServer { child, port };
        let heartbeat = format!("http://127.0.0.1:{port}/api/v2/heartbeat");
        for _ in 0..600 {
            if reqwest::get(&heartbeat)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("chroma did not start on port {port}");
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every live memory of a namespace, by client id.
async fn by_client_id(
    c: &engram_client::Client,
    namespace: &str,
) -> std::collections::BTreeMap<String, engram_client::Memory> {
    use futures::StreamExt;
    let req = engram_client::ListRequest {
        namespace: Some(namespace.into()),
        limit: Some(1000),
        ..Default::default()
    };
    let mut all = std::pin::pin!(c.list_all(req));
    let mut out = std::collections::BTreeMap::new();
    while let Some(m) = all.next().await {
        let m = m.unwrap();
        let id = m
            .client_id
            .clone()
            .expect("an imported memory has its Chroma id");
        assert!(out.insert(id.clone(), m).is_none(), "{id} imported twice");
    }
    out
}

/// `engram import --from-chroma` against a real Chroma server filled by the
/// official `chromadb` client: 2,000 records with metadata of every type
/// Chroma stores (and odd keys), some without a document, one engram must
/// refuse. Every document arrives with its metadata and its Chroma id as
/// client id, the refused record is named and fails the command after the
/// rest are in, a re-run adds nothing, and a run killed half-way finishes
/// on the next run with each record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroma_collection_is_imported_once_even_when_rerun_or_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let chroma = ChromaServer::start(&dir.path().join("chroma")).await;
    let expected_file = dir.path().join("expected.json");
    run_script(
        "chroma_seed.py",
        &[
            ("CHROMA_PORT", &chroma.port.to_string()),
            ("RECORDS", "2000"),
            ("EXPECTED", expected_file.to_str().unwrap()),
        ],
    );
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_file).unwrap()).unwrap();
    let expected = expected["memories"].as_object().unwrap().clone();
    assert_eq!(expected.len(), 1990);

    let data = dir.path().join("engram");
    let node = NodeBuilder::serve(BIN).data_dir(&data).start().await;
    let key = create_key(BIN.as_ref(), &data, "writer", &[]);
    let chroma_url = format!("http://127.0.0.1:{}", chroma.port);
    let import = |namespace: &str, wait: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "import",
            "--from-chroma",
            &chroma_url,
            "--collection",
            "notes",
        ])
        .args(["--namespace", namespace, "--batch", "100"])
        .args(["--url", &node.url, "--api-key", &key]);
        if wait {
            cmd.arg("--wait");
        }
        cmd
    };
    let run = |namespace: &str| {
        let out = import(namespace, false).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, stderr) = run("imported");
    assert!(!ok, "the refused record must fail the command:\n{stderr}");
    assert!(
        stderr.contains("\"too-big\" not imported: 413 limit_exceeded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"bad-keys\" not imported: metadata key \"x.y\" clashes"),
        "{stderr}"
    );
    assert!(stderr.contains("2 records were not imported"), "{stderr}");
    assert!(
        stderr.contains("imported 1990 memories") && stderr.contains("from 2002 records"),
        "{stderr}"
    );
    assert!(stderr.contains("10 records have no document"), "{stderr}");
    let c = node.client(Some(&key));
    let got = by_client_id(&c, "imported").await;
    assert_eq!(got.len(), expected.len());
    for (id, want) in &expected {
        let m = &got[id];
        assert_eq!(m.text, want["text"].as_str().unwrap(), "{id}");
        assert_eq!(
            serde_json::Value::Object(m.metadata.clone()),
            want["metadata"],
            "{id}"
        );
    }

    // A re-run stores nothing new.
    let (_, stderr) = run("imported");
    assert!(
        stderr.contains("imported 0 memories") && stderr.contains("(+1990 already there)"),
        "{stderr}"
    );
    assert_eq!(by_client_id(&c, "imported").await.len(), 1990);

    // Killed half-way, then run again: each record exactly once. (With
    // --wait each page waits for its embeddings: slow enough to interrupt.)
    let mut child = import("resumed", true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let stored = c
            .list(&engram_client::ListRequest {
                namespace: Some("resumed".into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .map_or_else(
                // The namespace exists once the first page is in.
                |e| {
                    assert_eq!(e.code(), Some("namespace_not_found"), "{e}");
                    0
                },
                |page| page.memories.len(),
            );
        if stored >= 300 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it was interrupted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = by_client_id(&c, "resumed").await.len();
    assert!(
        partial < 1990,
        "the import finished before it was killed ({partial})"
    );
    let (_, stderr) = run("resumed");
    // (A page in flight when the import was killed may commit after the
    // count above.)
    let counted = |prefix: &str, suffix: &str| -> usize {
        let start = stderr.find(prefix).unwrap_or_else(|| panic!("{stderr}")) + prefix.len();
        let len = stderr[start..].find(suffix).unwrap();
        stderr[start..start + len].parse().unwrap()
    };
    let (created, already) = (counted("imported ", " memories"), counted("(+", " already"));
    assert!(already >= partial && created + already == 1990, "{stderr}");
    let resumed = by_client_id(&c, "resumed").await;
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );

    // The imported texts are embedded by engram's model and searchable.
    c.wait_idle(std::time::Duration::from_secs(600))
        .await
        .unwrap();
    let probe = &expected["rec-01234"]["text"];
    let hits = c
        .search(&engram_client::SearchRequest {
            namespaces: vec!["imported".into()],
            k: Some(1),
            ..engram_client::SearchRequest::new(probe.as_str().unwrap())
        })
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].id, got["rec-01234"].id);
}
