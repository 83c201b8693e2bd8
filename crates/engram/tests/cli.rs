//! The CLI end to end against a real `engram serve`: keys, add, import,
//! search, export, audit, and `rebuild` re-deriving lost indexes from the store.

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

fn run(args: &[&str], api_key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engram"));
    cmd.args(args).env("ENGRAM_MODEL_DIR", model_dir());
    match api_key {
        Some(k) => cmd.env("ENGRAM_API_KEY", k),
        None => cmd.env_remove("ENGRAM_API_KEY"),
    };
    cmd.output().expect("running engram")
}

/// Run with the test's admin key; the command must succeed.
fn engram(args: &[&str]) -> Output {
    let key = KEY.get().map(String::as_str);
    let out = run(args, key);
    assert!(
        out.status.success(),
        "engram {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

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
    let data_arg = data.to_str().unwrap();
    let (child, url) = serve(&data);

    // Without a key the API refuses; `engram keys create` (on the data dir,
    // while serving) makes one.
    let out = run(&["search", "--url", &url, "anything"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthenticated"));
    let out = engram(&[
        "keys",
        "create",
        "--data-dir",
        data_arg,
        "--name",
        "cli-test",
        "--role",
        "admin",
    ]);
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("egk_"), "{created}");
    KEY.set(token).unwrap();
    let out = engram(&["keys", "list", "--data-dir", data_arg]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("cli-test") && !listed.contains(KEY.get().unwrap()),
        "{listed}"
    );

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

    // The audit log verifies and exports from the data directory.
    let out = engram(&["audit", "verify", "--data-dir", data_arg]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events"], 4, "key + 3 creates: {report}");
    let bundle_path = dir.path().join("audit.json");
    engram(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "-o",
        bundle_path.to_str().unwrap(),
    ]);
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle_path).unwrap()).unwrap();
    assert_eq!(bundle["events"].as_array().unwrap().len(), 4);
    assert_eq!(bundle["records"].as_array().unwrap().len(), 3);
    assert_eq!(bundle["head"]["hash"], report["head"]);
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
