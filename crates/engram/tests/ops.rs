//! The operator commands end to end, with the real binary: `engram probe`
//! against a real `engram serve` (LLM up, down, embedder down, server
//! stopped or silent), `engram models check` on env files and against the
//! real llama.cpp server, and `engram smoke` streaming from it.
//!
//! The llama.cpp server must be running (`scripts/services.sh start llm`);
//! `ENGRAM_TEST_LLM_URL` / `ENGRAM_TEST_LLM_MODEL` override where and which.

use engram_testkit::{llm_model, llm_url, model_dir, Node, NodeBuilder};
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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

/// Listening, not ready: some tests start a node with a back-end down.
fn serve(data: &Path, env: &[(&str, String)]) -> (Node, String) {
    let node = NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))
        .data_dir(data)
        .env_remove("ENGRAM_LLM__BASE_URL")
        .env_remove("ENGRAM_LLM__MODEL")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn_listening();
    let url = node.url.clone();
    (node, url)
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

    child.stop_ok();
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
    child.stop_ok();
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
    child.stop_ok();
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

// ---- traces ----------------------------------------------------------------

mod otlp {
    //! What an OpenTelemetry collector receives: an OTLP/HTTP endpoint that
    //! decodes the protobuf export requests with the official
    //! `opentelemetry-proto` types and keeps the spans. (No collector binary
    //! installs offline here; this is the receiving half of the protocol, not
    //! a stand-in for anything engram calls in production.)
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
    use prost::Message;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    pub struct Span {
        pub service: String,
        pub name: String,
        pub kind: i32,
        pub trace_id: String,
        pub span_id: String,
        pub parent_span_id: String,
        /// (trace id, span id) of each link.
        pub links: Vec<(String, String)>,
        pub attributes: Vec<(String, String)>,
    }

    impl Span {
        pub fn attr(&self, key: &str) -> Option<&str> {
            self.attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    pub struct Receiver {
        pub url: String,
        spans: Arc<Mutex<Vec<Span>>>,
        _rt: tokio::runtime::Runtime,
    }

    impl Receiver {
        pub fn start() -> Receiver {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
            let kept = spans.clone();
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let kept = kept.clone();
                    async move {
                        let req = ExportTraceServiceRequest::decode(body)
                            .expect("engram sends valid OTLP protobuf");
                        kept.lock().unwrap().extend(flatten(req));
                        // An empty ExportTraceServiceResponse.
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            rt.spawn(async move { axum::serve(listener, app).await });
            Receiver {
                url,
                spans,
                _rt: rt,
            }
        }

        pub fn spans(&self) -> Vec<Span> {
            self.spans.lock().unwrap().clone()
        }
    }

    fn text(v: Option<&AnyValue>) -> String {
        match v {
            Some(AnyValue::StringValue(s)) => s.clone(),
            Some(AnyValue::IntValue(i)) => i.to_string(),
            Some(AnyValue::BoolValue(b)) => b.to_string(),
            Some(AnyValue::DoubleValue(d)) => d.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn flatten(req: ExportTraceServiceRequest) -> Vec<Span> {
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        out
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// Send a JSON request with a `traceparent` header; the status.
fn traced(method: &str, url: &str, traceparent: &str, body: Option<Value>) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut r = match method {
            "POST" => c.post(url),
            _ => c.get(url),
        }
        .header("traceparent", traceparent);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap().status().as_u16()
    })
}

/// Wait until `done` holds for what the receiver got (the SDK exports in batches).
fn spans_until(rx: &otlp::Receiver, done: impl Fn(&[otlp::Span]) -> bool) -> Vec<otlp::Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = rx.spans();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans never arrived; got {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, &s.trace_id))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one span named `name` in trace `trace`.
fn one<'a>(spans: &'a [otlp::Span], trace: &str, name: &str) -> &'a otlp::Span {
    let found: Vec<&otlp::Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name} in trace {trace}: {spans:#?}");
    found[0]
}

const SERVER: i32 = 2; // opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER

#[test]
fn traces_follow_a_write_from_the_request_through_the_queue_to_the_worker() {
    let rx = otlp::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = serve(
        &dir.path().join("data"),
        &[
            ("ENGRAM_TRACES__OTLP_ENDPOINT", rx.url.clone()),
            ("ENGRAM_AUTH__ENABLED", "false".into()),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    );
    // The caller's trace (an agent that traces its own work).
    let write_trace = "5b8efff798038103d269b633813fc60c";
    let caller_span = "eee19b7ec3c1b174";
    let s = traced(
        "POST",
        &format!("{url}/v1/memories?wait=true"),
        &format!("00-{write_trace}-{caller_span}-01"),
        Some(serde_json::json!({
            "namespace": "traces",
            "memories": [
                {"text": "The staging database is rebuilt every Sunday night."},
                {"text": "Grafana alerts go to the on-call channel."}
            ]
        })),
    );
    assert_eq!(s, 201, "written and searchable");
    let search_trace = "0af7651916cd43dd8448eb211c80319c";
    let s = traced(
        "POST",
        &format!("{url}/v1/search"),
        &format!("00-{search_trace}-b7ad6b7169203331-01"),
        Some(serde_json::json!({"query": "when is staging rebuilt?", "k": 2})),
    );
    assert_eq!(s, 200);
    // A malformed traceparent starts a new trace instead of failing.
    assert_eq!(
        traced("GET", &format!("{url}/v1/stats"), "00-not-a-trace-01", None),
        200
    );

    let spans = spans_until(&rx, |spans| {
        let has = |name: &str| spans.iter().any(|s| s.name == name);
        has("worker.embed_batch")
            && has("POST /v1/search")
            && has("GET /v1/stats")
            && has("index.apply")
    });

    // The write: the server span continues the caller's trace...
    let request = one(&spans, write_trace, "POST /v1/memories");
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.service, "engram");
    assert_eq!(request.attr("http.route"), Some("/v1/memories"));
    assert_eq!(request.attr("http.response.status_code"), Some("201"));
    // ...with the engine and the store below it.
    let create = one(&spans, write_trace, "engine.create");
    assert_eq!(create.parent_span_id, request.span_id);
    assert_eq!(create.attr("items"), Some("2"));
    let insert = one(&spans, write_trace, "store.insert");
    assert_eq!(insert.parent_span_id, create.span_id);

    // The worker's batch, in a trace of its own, links back to the write.
    let batches: Vec<&otlp::Span> = spans
        .iter()
        .filter(|s| s.name == "worker.embed_batch")
        .collect();
    let linked: Vec<&&otlp::Span> = batches
        .iter()
        .filter(|b| {
            b.links
                .contains(&(write_trace.to_string(), create.span_id.clone()))
        })
        .collect();
    assert!(
        !linked.is_empty(),
        "a batch links to the write: {batches:#?}"
    );
    let embedded: u64 = linked
        .iter()
        .map(|b| b.attr("embedded").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(embedded, 2, "{linked:#?}");
    for b in &linked {
        assert_ne!(b.trace_id, write_trace);
        let embed = one(&spans, &b.trace_id, "embed.batch");
        assert_eq!(embed.parent_span_id, b.span_id);
        let complete = one(&spans, &b.trace_id, "queue.complete");
        assert_eq!(complete.parent_span_id, b.span_id);
    }

    // The search: engine, query embedding, both indexes and the store.
    let request = one(&spans, search_trace, "POST /v1/search");
    let search = one(&spans, search_trace, "engine.search");
    assert_eq!(search.parent_span_id, request.span_id);
    for name in [
        "embed.query",
        "index.vector",
        "index.keyword",
        "store.get_by_keys",
    ] {
        let s = one(&spans, search_trace, name);
        assert_eq!(s.parent_span_id, search.span_id, "{name}");
    }
    assert_eq!(
        one(&spans, search_trace, "embed.query").attr("cached"),
        Some("false")
    );

    // The malformed header: a fresh root span, not an error.
    let stats = spans.iter().find(|s| s.name == "GET /v1/stats").unwrap();
    assert!(stats.parent_span_id.is_empty(), "{stats:?}");
    assert_eq!(stats.trace_id.len(), 32);
    child.stop_ok();
}
