//! The operator commands end to end, with the real binary: `engram probe`
//! against a real `engram serve` (LLM up, down, embedder down, server
//! stopped or silent), `engram models check` on env files and against the
//! real llama.cpp server, and `engram smoke` streaming from it.
//!
//! The llama.cpp server must be running (`scripts/services.sh start llm`);
//! `ENGRAM_TEST_LLM_URL` / `ENGRAM_TEST_LLM_MODEL` override where and which.

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

fn llm_model() -> String {
    std::env::var("ENGRAM_TEST_LLM_MODEL").unwrap_or_else(|_| "gemma3-270m".into())
}

/// The llama.cpp server's API root; fails the test when nothing listens there.
fn llm_url() -> String {
    let url =
        std::env::var("ENGRAM_TEST_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080/v1".into());
    let u = reqwest::Url::parse(&url).expect("ENGRAM_TEST_LLM_URL is a URL");
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or(80),
    ))
    .ok()
    .and_then(|mut a| a.next());
    match addr.map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))) {
        Some(Ok(_)) => url,
        other => panic!(
            "no llama.cpp server at {url} ({other:?}): start it with `scripts/services.sh start llm` \
             (or point ENGRAM_TEST_LLM_URL at an OpenAI-compatible server)"
        ),
    }
}

/// An address nobody listens on.
fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    url
}

/// Run engram with a clean environment for the command's own settings.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .env("ENGRAM_MODEL_DIR", model_dir())
        .env_remove("ENGRAM_URL")
        .env_remove("ENGRAM_CONFIG")
        .env_remove("ENGRAM_LLM__BASE_URL")
        .env_remove("ENGRAM_LLM__MODEL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running engram")
}

fn exit_code(o: &Output) -> i32 {
    o.status.code().expect("exited with a code")
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `engram probe`, as a container would run it: no model folder, a config
/// path that does not exist, and the working directory of a scratch folder.
fn probe(url: &str, extra: &[&str]) -> (i32, Value, Duration) {
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["probe", "--url", url])
        .args(extra)
        .current_dir(scratch.path())
        .env_remove("ENGRAM_MODEL_DIR")
        .env("ENGRAM_CONFIG", "/nonexistent/engram.toml")
        .env("HOME", scratch.path())
        .output()
        .expect("running engram probe");
    let took = started.elapsed();
    (exit_code(&out), stdout_json(&out), took)
}

/// The HTTP status line of `GET /readyz?verbose=true`, over a bare socket.
fn readyz_status(url: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /readyz?verbose=true HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

fn serve(data: &Path, env: &[(&str, String)]) -> (Child, String) {
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
        .env_remove("ENGRAM_LLM__BASE_URL")
        .env_remove("ENGRAM_LLM__MODEL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "engram exited with {status}");
}

fn llm_env(url: String) -> Vec<(&'static str, String)> {
    vec![
        ("ENGRAM_LLM__BASE_URL", url),
        ("ENGRAM_LLM__MODEL", llm_model()),
    ]
}

#[test]
fn probe_is_ok_with_a_real_llm_then_unreachable_once_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = serve(&dir.path().join("data"), &llm_env(llm_url()));
    let (code, v, _) = probe(&url, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    for c in ["store", "index", "queue", "embedder", "llm"] {
        assert_eq!(v["checks"][c]["ok"], true, "{c}: {v}");
        assert!(v["checks"][c]["ms"].is_number(), "{c}: {v}");
    }
    assert_eq!(v["checks"]["llm"]["detail"], llm_model(), "{v}");
    let (code, v, _) = probe(&url, &["--require-llm"]);
    assert_eq!((code, v["status"].as_str()), (0, Some("ok")), "{v}");

    stop(child);
    let (code, v, took) = probe(&url, &["--timeout", "2"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["status"], "unreachable", "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("cannot reach engram"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn probe_is_degraded_with_the_llm_down_and_failing_with_require_llm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = serve(&dir.path().join("data"), &llm_env(closed_url()));
    let (code, v, _) = probe(&url, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["checks"]["embedder"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["llm"]["ok"], false, "{v}");
    assert!(
        v["checks"]["llm"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the LLM server"),
        "{v}"
    );
    let (code, v, _) = probe(&url, &["--require-llm"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(readyz_status(&url), "HTTP/1.0 200 OK");
    stop(child);
}

#[test]
fn probe_is_failing_when_the_remote_embedder_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // A remote (OpenAI-compatible) embedder on a port nobody listens on; no LLM.
    let env = [
        ("ENGRAM_EMBEDDER__KIND", "openai".to_string()),
        ("ENGRAM_EMBEDDER__BASE_URL", closed_url()),
        ("ENGRAM_EMBEDDER__MODEL", "minilm".to_string()),
        ("ENGRAM_EMBEDDER__DIMS", "384".to_string()),
    ];
    let (child, url) = serve(&dir.path().join("data"), &env);
    let (code, v, _) = probe(&url, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["status"], "failing", "{v}");
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["embedder"]["ok"], false, "{v}");
    assert!(
        v["checks"]["embedder"]["error"]
            .as_str()
            .unwrap()
            .starts_with("embedder unavailable"),
        "{v}"
    );
    assert_eq!(v["checks"]["llm"]["skipped"], true, "{v}");
    assert_eq!(readyz_status(&url), "HTTP/1.0 503 Service Unavailable");
    stop(child);
}

#[test]
fn probe_gives_up_on_a_silent_server_within_its_timeout() {
    // Accepts connections and never answers (failure injection).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept() {
            held.push(sock);
        }
    });
    let (code, v, took) = probe(&url, &["--timeout", "1"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["status"], "unreachable", "{v}");
    assert_eq!(v["error"], "no answer within 1s", "{v}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    // Not a number of seconds.
    let out = run(&["probe", "--url", &url, "--timeout", "0"], &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout must be a positive"));
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn lines_of(issues: &Value) -> Vec<u64> {
    issues
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["line"].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn models_check_accepts_a_good_file_and_names_the_lines_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.env");
    std::fs::write(
        &good,
        "\u{feff}# Ollama models, pinned\r\n\
         export OLLAMA_MODELS=\"llama3.1:8b-instruct-q4_K_M, qwen2.5:7b\"\r\n\
         \r\n\
         CHAT_MODEL = llama3.1:8b-instruct-q4_K_M   # the chat model\r\n\
         SUMMARY_MODEL='qwen2.5:7b'\r\n\
         OLLAMA_HOST=http://127.0.0.1:11434#not-a-comment\r\n",
    )
    .unwrap();
    let out = run(
        &["models", "check", "--env-file", good.to_str().unwrap()],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 0, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    let models: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["llama3.1:8b-instruct-q4_K_M", "qwen2.5:7b"]);
    assert_eq!(v["models"][0]["used_by"], serde_json::json!(["CHAT_MODEL"]));

    let bad = dir.path().join("bad.env");
    std::fs::write(
        &bad,
        format!(
            "OLLAMA_MODELS=llama3, mistral:latest qwen2.5:7b qwen2.5:7b phi3@sha256:{DIGEST}\n\
             CHAT_MODEL=qwen2.5:7b\n\
             SUMMARY_MODEL=gemma2:9b\n\
             # a comment\n\
             this line has no equals sign\n\
             CHAT_MODEL=phi3@sha256:{DIGEST}\n\
             QUOTE_MODEL=\"unterminated\n\
             9LIVES=x\n"
        ),
    )
    .unwrap();
    let out = run(
        &["models", "check", "--env-file", bad.to_str().unwrap()],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 1, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    // Line 1: two unpinned models; 3: not listed; 5: no '='; 6: duplicate key;
    // 7: unterminated quote; 8: bad name.
    assert_eq!(lines_of(&v["errors"]), [1, 1, 3, 5, 6, 7, 8], "{v}");
    let messages: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages[0].contains("llama3: not pinned"), "{messages:?}");
    assert!(
        messages[1].contains("\"latest\" is not a pin"),
        "{messages:?}"
    );
    assert!(messages[2].contains("SUMMARY_MODEL = gemma2:9b is not in OLLAMA_MODELS"));
    assert_eq!(
        messages[4],
        "duplicate key CHAT_MODEL: set on lines 2 and 6"
    );
    assert!(
        messages[5].contains("unterminated double quote"),
        "{messages:?}"
    );
    assert_eq!(lines_of(&v["warnings"]), [1], "{v}");

    // An unreadable file is a clear error.
    let out = run(&["models", "check", "--env-file", "/nonexistent.env"], &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.env"));
}

#[test]
fn models_check_asks_the_real_llm_server() {
    let url = llm_url();
    let model = llm_model();
    let dir = tempfile::tempdir().unwrap();
    // llama.cpp lists its alias without a tag (`gemma3-270m`): a pinned
    // `gemma3-270m:q4` matches it by name, with a warning that the tag
    // cannot be verified.
    let f = dir.path().join("models.env");
    std::fs::write(
        &f,
        format!("OLLAMA_MODELS={model}:q4 {model}@sha256:{DIGEST}\nCHAT_MODEL={model}:q4\n"),
    )
    .unwrap();
    let path = f.to_str().unwrap();
    let out = run(
        &[
            "models",
            "check",
            "--env-file",
            path,
            "--server",
            "--llm-url",
            &url,
        ],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 0, "{v}");
    assert_eq!(v["models"][0]["server_id"], model.as_str(), "{v}");
    assert_eq!(v["models"][1]["server_id"], model.as_str(), "{v}");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("without a tag; the tag is not verified"),
        "{v}"
    );
    assert!(warnings.contains("the digest is not verified"), "{v}");

    // The same through the configuration layers ([llm] from ENGRAM_LLM__*).
    let out = run(
        &["models", "check", "--env-file", path, "--server"],
        &llm_env(url.clone()),
    );
    assert_eq!(
        exit_code(&out),
        0,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A model the server does not serve, on the line that lists it.
    std::fs::write(
        &f,
        format!("# models\nOLLAMA_MODELS={model}:q4 llama3:8b\nCHAT_MODEL=llama3:8b\n"),
    )
    .unwrap();
    let out = run(
        &[
            "models",
            "check",
            "--env-file",
            path,
            "--server",
            "--llm-url",
            &url,
        ],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 1, "{v}");
    assert_eq!(lines_of(&v["errors"]), [2], "{v}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("llama3:8b is not served by the LLM server"),
        "{msg}"
    );
    assert!(v["models"][1]["server_id"].is_null(), "{v}");

    // No server there; no server configured.
    let out = run(
        &[
            "models",
            "check",
            "--env-file",
            path,
            "--server",
            "--llm-url",
            &closed_url(),
        ],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 1, "{v}");
    assert!(
        v["errors"].to_string().contains("cannot list the models"),
        "{v}"
    );
    let out = run(&["models", "check", "--env-file", path, "--server"], &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server needs the LLM server"));
}

#[test]
fn smoke_measures_the_real_llm() {
    let url = llm_url();
    let model = llm_model();
    let out = run(
        &[
            "smoke",
            "--runs",
            "2",
            "--json",
            "--llm-url",
            &url,
            "--models",
            &model,
        ],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 0, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let m = &v["models"][0];
    assert_eq!(m["model"], model.as_str(), "{v}");
    assert_eq!(
        (m["runs"].as_u64(), m["ok"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    let samples = m["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        let first = s["first_token_ms"].as_f64().unwrap();
        let total = s["total_ms"].as_f64().unwrap();
        assert!(first > 0.0 && first <= total, "{s}");
        let tokens = s["tokens"].as_u64().unwrap();
        assert!((1..=16).contains(&tokens), "{s}");
    }
    assert!(
        m["first_token_ms"]["p50"].as_f64().unwrap()
            <= m["first_token_ms"]["max"].as_f64().unwrap()
    );
    assert!(m["tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");

    // The model from the configuration, as a table.
    let out = run(
        &["smoke", "--runs", "1", "--max-tokens", "4"],
        &llm_env(url),
    );
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(exit_code(&out), 0, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("model") && lines[1].contains("first p50 ms"),
        "{table}"
    );
    assert!(lines[2].starts_with(&format!("{model} ")), "{table}");

    // Every run failing: exit 1, the error per run.
    let out = run(
        &[
            "smoke",
            "--runs",
            "2",
            "--json",
            "--llm-url",
            &closed_url(),
            "--models",
            "a:1,b:2",
        ],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(exit_code(&out), 1, "{v}");
    assert_eq!(v["models"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["models"][1]["failed"], 2, "{v}");
    assert!(v["models"][1]["samples"][0]["error"]
        .as_str()
        .unwrap()
        .contains("cannot reach the LLM server"));
}
