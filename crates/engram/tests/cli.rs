//! The CLI end to end against a real `engram serve`: keys, add, import,
//! search, export, audit, and `rebuild` re-deriving lost indexes from the store.

use engram_testkit::{model_dir, Node, NodeBuilder};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

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

fn serve(data: &Path) -> (Node, String) {
    serve_env(data, &[])
}

fn serve_env(data: &Path, env: &[(&str, String)]) -> (Node, String) {
    let node = NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))
        .data_dir(data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn_listening();
    let url = node.url.clone();
    (node, url)
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

    // A transcript becomes a session; importing it again adds nothing.
    let transcript = dir.path().join("chat.jsonl");
    std::fs::write(
        &transcript,
        concat!(
            r#"{"speaker": "Ann", "text": "I adopted a dog last week", "occurred_at": "2023-05-08T13:56:00Z"}"#, "\n",
            r#"{"role": "Bo", "text": "What is its name?"}"#, "\n",
            "\n",
            r#"{"speaker": "Ann", "text": "Her name is Pixel"}"#, "\n",
        ),
    )
    .unwrap();
    let import = || {
        let out = engram(&[
            "import",
            "--url",
            &url,
            "-n",
            "chat",
            "--session",
            "walk 1",
            "--wait",
            transcript.to_str().unwrap(),
        ]);
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let msg = import();
    assert!(
        msg.contains("appended 3 messages to session \"walk 1\" (+0 already there)"),
        "{msg}"
    );
    let msg = import();
    assert!(
        msg.contains("appended 0 messages to session \"walk 1\" (+3 already there)"),
        "{msg}"
    );
    let hits = search_ids(&url, "What is the name of Ann's dog?", "keyword");
    assert_eq!(hits[0], "Her name is Pixel", "{hits:?}");
    child.stop_ok();

    // Lose both derived indexes; rebuild re-derives them from the store.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let out = engram(&["rebuild", "--data-dir", data.to_str().unwrap()]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("6 vectors, 6 keyword documents"), "{msg}");
    // A log that is not a terminal gets no colour escape sequences.
    assert!(msg.contains("INFO"), "{msg}");
    assert!(
        !msg.contains('\u{1b}'),
        "escape sequences in a redirected log: {msg:?}"
    );

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
    child.stop_ok();
}

fn admin_key(data: &Path) -> String {
    engram_testkit::create_key(env!("CARGO_BIN_EXE_engram").as_ref(), data, "admin", &[])
}

/// POST a JSON body with a bearer key; (status, body).
fn post(url: &str, key: &str, body: Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    })
}

/// Node B has no local model: it embeds through node A's OpenAI-compatible
/// `/v1/embeddings` and answers `engram ask` through the real llama.cpp
/// server (`scripts/services.sh start llm`).
#[test]
fn a_node_embeds_through_another_engram_and_answers_through_the_llm() {
    let dir = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let (a, a_url) = serve(&a_data);
    let a_key = admin_key(&a_data);
    let (llm, llm_model) = (engram_testkit::llm_url(), engram_testkit::llm_model());
    let (b, b_url) = serve_env(
        &b_data,
        &[
            ("ENGRAM_MODEL_DIR", "/nonexistent/model".into()),
            ("ENGRAM_EMBEDDER__KIND", "openai".into()),
            ("ENGRAM_EMBEDDER__BASE_URL", format!("{a_url}/v1")),
            ("ENGRAM_EMBEDDER__MODEL", "all-MiniLM-L6-v2".into()),
            ("ENGRAM_EMBEDDER__API_KEY", a_key.clone()),
            ("ENGRAM_LLM__BASE_URL", llm),
            ("ENGRAM_LLM__MODEL", llm_model),
        ],
    );
    let b_key = admin_key(&b_data);
    let ask = |args: &[&str]| {
        let mut all = vec!["ask", "--url", &b_url];
        all.extend_from_slice(args);
        run(&all, Some(&b_key))
    };
    let text = "The espresso machine on floor 3 has been broken since Monday";
    let out = run(
        &["add", "--url", &b_url, "-n", "office", "--wait", text],
        Some(&b_key),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = added["id"].as_str().expect("the new id").to_string();

    // B's vectors are A's vectors.
    let input = json!({"input": ["coffee machine repairs"]});
    let (sa, va) = post(&format!("{a_url}/v1/embeddings"), &a_key, input.clone());
    let (sb, vb) = post(&format!("{b_url}/v1/embeddings"), &b_key, input);
    assert_eq!((sa, sb), (200, 200), "{va} {vb}");
    let (ea, eb) = (&va["data"][0]["embedding"], &vb["data"][0]["embedding"]);
    assert_eq!(ea.as_array().unwrap().len(), 384);
    for (x, y) in ea.as_array().unwrap().iter().zip(eb.as_array().unwrap()) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6);
    }
    let (s, v) = post(
        &format!("{b_url}/v1/search"),
        &b_key,
        json!({"query": "which coffee maker is out of order", "mode": "vector"}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"][0]["id"], id.as_str(), "{v}");

    // `engram ask` streams an answer and names the memory it used.
    // A question unique to this run: llama-cpp-python reuses the KV cache of a
    // prompt identical to the previous one, which with gemma3's sliding-window
    // attention can end the answer at once.
    let question = format!(
        "Which espresso machine is broken? (ticket {})",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let out = ask(&[question.as_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&id));
    let out = ask(&["--json", "-k", "1", "Which espresso machine broke down?"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sources"][0]["text"], text, "{v}");

    // With A gone, B cannot embed: vector search is 503 with Retry-After
    // (not 500), keyword search still answers.
    a.stop_ok();
    let (s, v) = post(
        &format!("{b_url}/v1/search"),
        &b_key,
        json!({"query": "a new question about printers", "mode": "vector"}),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
    let (s, v) = post(
        &format!("{b_url}/v1/search"),
        &b_key,
        json!({"query": "espresso", "mode": "keyword"}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"][0]["id"], id.as_str());
    b.stop_ok();
}

/// JSON logs carry the request id of the request they belong to.
#[test]
fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let child = NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))
        .data_dir(&data)
        .env("ENGRAM_LOG_FORMAT", "json")
        .env("ENGRAM_LOG", "info,tower_http=debug")
        .log_to(&log)
        .spawn_listening();
    let port = child.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/namespaces"))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 401, "no credentials");
    std::thread::sleep(Duration::from_millis(300));
    child.stop_ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .filter(|l| l.contains("trace-me-42"))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON log line with the request id:\n{text}"));
    assert!(
        line.to_string().contains("\"request_id\":\"trace-me-42\""),
        "{line}"
    );
}

/// One raw HTTP/1.1 exchange: send `head` (and `body`), read until the
/// server closes or answers; returns the status and the JSON body.
fn raw_http(port: u16, head: &str, body: &[u8], pause: Duration) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    std::thread::sleep(pause);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, json)
}

/// What the HTTP layer itself rejects (a URI, a header list or a body read
/// past its limits) comes back in the JSON error shape through the real
/// server, not as hyper's bare statuses.
#[test]
fn the_http_layer_answers_its_own_errors_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = serve_env(
        &dir.path().join("data"),
        &[
            ("ENGRAM_REQUEST_TIMEOUT_SECS", "1".to_string()),
            // The body is read after authentication: no credentials needed here.
            ("ENGRAM_AUTH__ENABLED", "false".to_string()),
        ],
    );
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let get = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: x\r\n{headers}connection: close\r\n\r\n")
    };
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big = format!("x-big: {}\r\n", "y".repeat(20 * 1024));
    let stalled = "POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                   content-length: 100\r\nconnection: close\r\n\r\n"
        .to_string();
    // (what, request head, body, pause before reading in ms, status, code)
    type Case<'a> = (&'a str, String, &'a [u8], u64, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a 20 KiB URI",
            get(
                &format!("/v1/memories?namespace={}", "x".repeat(20 * 1024)),
                "",
            ),
            b"",
            0,
            414,
            "uri_too_long",
        ),
        // hyper alone answers an empty 431 past 100 headers.
        (
            "150 headers",
            get("/healthz", &many),
            b"",
            0,
            431,
            "headers_too_large",
        ),
        (
            "a 20 KiB header",
            get("/healthz", &big),
            b"",
            0,
            431,
            "headers_too_large",
        ),
        // 408 after request_timeout_secs.
        (
            "a body that stops arriving",
            stalled,
            b"{\"query\":",
            1500,
            408,
            "request_timeout",
        ),
        (
            "an unknown route",
            get("/nope", ""),
            b"",
            0,
            404,
            "route_not_found",
        ),
        (
            "a wrong method",
            get("/healthz", "").replacen("GET", "DELETE", 1),
            b"",
            0,
            405,
            "method_not_allowed",
        ),
    ];
    for (what, head, body, pause, status, code) in cases {
        let (s, v) = raw_http(port, &head, body, Duration::from_millis(pause));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {v}"
        );
    }
    child.stop_ok();
}

/// `engram mcp` runs under an agent host that keeps its stderr: warnings
/// only by default, `ENGRAM_LOG` for more. The protocol still answers on
/// stdout (initialize, then tools/list; no engram server is needed for
/// either).
#[test]
fn engram_mcp_is_quiet_on_stderr_unless_asked() {
    use std::io::{BufRead, BufReader, Write};
    let session = |log: Option<&str>| -> (Vec<String>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_engram"));
        cmd.args(["mcp", "--url", "http://127.0.0.1:9", "--namespace", "agent"])
            .env_remove("ENGRAM_LOG")
            .env_remove("ENGRAM_API_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(l) = log {
            cmd.env("ENGRAM_LOG", l);
        }
        let mut child = cmd.spawn().expect("engram mcp");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut send = |v: Value| {
            writeln!(stdin, "{v}").unwrap();
            stdin.flush().unwrap();
        };
        send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "cli-test", "version": "0"}}}),
        );
        let mut answers = Vec::new();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        answers.push(line.clone());
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
        line.clear();
        stdout.read_line(&mut line).unwrap();
        answers.push(line);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (answers, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (answers, stderr) = session(None);
    let init: Value = serde_json::from_str(&answers[0]).unwrap();
    assert_eq!(init["id"], 1, "{init}");
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    let tools: Value = serde_json::from_str(&answers[1]).unwrap();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"add_memory") && names.contains(&"search_memory"),
        "{names:?}"
    );
    assert!(!stderr.contains("INFO"), "stderr: {stderr}");
    // Asked for: the same session logs at info.
    let (_, stderr) = session(Some("info"));
    assert!(stderr.contains("INFO"), "stderr: {stderr}");
}
