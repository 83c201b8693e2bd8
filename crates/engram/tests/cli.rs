//! The CLI end to end against a real `engram serve`: add, import, search,
//! export, and `rebuild` re-deriving lost indexes from the store.

use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn model_dir() -> String {
    std::env::var("ENGRAM_MODEL_DIR").expect(
        "ENGRAM_MODEL_DIR must point at the all-MiniLM-L6-v2 folder (scripts/fetch-model.sh)",
    )
}

fn engram(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .env("ENGRAM_MODEL_DIR", model_dir())
        .output()
        .expect("running engram");
    assert!(
        out.status.success(),
        "engram {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn serve(data: &Path) -> (Child, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("ENGRAM_MODEL_DIR", model_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "engram did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, url)
}

fn stop(mut child: Child) {
    // SIGTERM: a graceful shutdown persists the indexes.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "engram exited with {status}");
}

fn search_ids(url: &str, query: &str, mode: &str) -> Vec<String> {
    let out = engram(&["search", "--url", url, "--mode", mode, "-k", "5", query]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn add_import_search_export_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, url) = serve(&data);

    engram(&[
        "add",
        "--url",
        &url,
        "-n",
        "ops",
        "--wait",
        "--tag",
        "db",
        "--metadata",
        r#"{"team":"infra"}"#,
        "The staging database password rotates every Monday",
    ]);
    let jsonl = dir.path().join("in.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"text": "Deploys are frozen during the December holidays", "metadata": {"team": "release"}}"#, "\n",
            r#"{"text": "The GPU nodes run vLLM with tensor parallelism 2", "namespace": "ml"}"#, "\n",
            "\n",
            r#"{"text": "Deploys are frozen during the December holidays"}"#, "\n",
        ),
    )
    .unwrap();
    let out = engram(&[
        "import",
        "--url",
        &url,
        "-n",
        "ops",
        "--wait",
        jsonl.to_str().unwrap(),
    ]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("imported 2 (+1 duplicates)"), "{msg}");

    let hits = search_ids(&url, "when can we not ship releases?", "hybrid");
    assert_eq!(
        hits[0], "Deploys are frozen during the December holidays",
        "{hits:?}"
    );

    let export = dir.path().join("out.jsonl");
    engram(&["export", "--url", &url, "-o", export.to_str().unwrap()]);
    let lines: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let ml: Vec<&Value> = lines.iter().filter(|m| m["namespace"] == "ml").collect();
    assert_eq!(ml.len(), 1);
    assert_eq!(lines[0]["metadata"]["team"], "infra");
    assert_eq!(lines[0]["tags"][0], "db");
    stop(child);

    // Lose both derived indexes; rebuild re-derives them from the store.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let out = engram(&["rebuild", "--data-dir", data.to_str().unwrap()]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("3 vectors, 3 keyword documents"), "{msg}");

    let (child, url) = serve(&data);
    let hits = search_ids(&url, "GPU nodes vLLM", "keyword");
    assert_eq!(
        hits,
        vec!["The GPU nodes run vLLM with tensor parallelism 2"]
    );
    let hits = search_ids(&url, "credentials change weekly", "vector");
    assert_eq!(
        hits[0],
        "The staging database password rotates every Monday"
    );
    stop(child);
}
