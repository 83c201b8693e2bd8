//! engram driven by the official Python clients its users run (the `openai`
//! package, from `scripts/services.sh start py`), against a real node.

use engram_testkit::{create_key, python, NodeBuilder};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_engram");

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
    let llm =
        std::env::var("ENGRAM_TEST_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080/v1".into());
    let llm_model = std::env::var("ENGRAM_TEST_LLM_MODEL").unwrap_or_else(|_| "gemma3-270m".into());
    let node = NodeBuilder::serve(BIN)
        .data_dir(dir.path())
        .env("ENGRAM_LLM__BASE_URL", llm)
        .env("ENGRAM_LLM__MODEL", llm_model)
        // Short answers from the small test model.
        .env("ENGRAM_LLM__MAX_TOKENS", "16")
        .start()
        .await;
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
