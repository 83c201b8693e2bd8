//! engram driven by the official Python clients its users run (the `openai`
//! package, from `scripts/services.sh start py`), against a real node.

use engram_testkit::{create_key, python, NodeBuilder};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_engram");

/// A node whose `/v1/ask` and proxy use the test suite's llama.cpp server
/// (`scripts/services.sh start llm`); the model's name too.
fn llm_node(dir: &Path) -> (NodeBuilder, String) {
    let llm =
        std::env::var("ENGRAM_TEST_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080/v1".into());
    let model = std::env::var("ENGRAM_TEST_LLM_MODEL").unwrap_or_else(|_| "gemma3-270m".into());
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
