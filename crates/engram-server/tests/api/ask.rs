//! `/v1/ask` against a real llama.cpp server (`scripts/services.sh start llm`,
//! gemma3-270m, a base model: the tests check the plumbing and citations,
//! never the wording), and with the LLM down or hanging (failure injection:
//! a closed port and a socket that never answers).

use super::governance::key;
use super::*;
use engram_core::{Llm, Permission};
use engram_llm::{OpenAiChat, OpenAiChatOptions};

fn llm_opts(url: String) -> OpenAiChatOptions {
    let model = engram_testkit::llm_model();
    OpenAiChatOptions {
        first_token_timeout: Duration::from_secs(60),
        timeout: Duration::from_secs(120),
        ..OpenAiChatOptions::new(url, model)
    }
}

async fn real_llm() -> Arc<dyn Llm> {
    let url = engram_testkit::llm_url();
    let llm = OpenAiChat::new(llm_opts(url.clone())).unwrap();
    if let Err(e) = llm.models().await {
        panic!("no llama.cpp server at {url} ({e}); start it with `scripts/services.sh start llm`");
    }
    Arc::new(llm)
}

async fn app_with_llm(llm: Arc<dyn Llm>) -> App {
    app_opts(Opts {
        llm: Some(llm),
        ..Opts::default()
    })
    .await
}

/// Server-sent events of a response body: (event, parsed data).
fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut event = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if !data.is_empty() {
            out.push((event, serde_json::from_str(&data).expect("JSON event data")));
        }
    }
    out
}

async fn ask_raw(app: &App, body: Value) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut b = Request::builder()
        .method("POST")
        .uri("/v1/ask")
        .header("content-type", "application/json");
    if let Some(t) = &app.token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let res = app
        .router
        .clone()
        .oneshot(b.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn seed(app: &App) -> Vec<String> {
    let mut ids = Vec::new();
    for t in [
        "The staging database runs PostgreSQL 17 on host db-staging-2.",
        "Deploys to production happen every Tuesday after the standup.",
        "Alice prefers her coffee black, no sugar.",
    ] {
        ids.push(app.add("ops", t, json!({})).await);
    }
    ids
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_answers_with_the_retrieved_memories_as_numbered_sources() {
    let app = app_with_llm(real_llm().await).await;
    let added = seed(&app).await;
    let q =
        json!({"question": "Which database version does staging run?", "k": 2, "max_tokens": 24});
    let (s, v) = app.call("POST", "/v1/ask", Some(q)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["answer"].is_string(), "{v}");
    assert_eq!(v["model"], engram_testkit::llm_model());
    // The sources are the search hits for the question, in rank order, numbered from 1.
    let hits = app
        .search(json!({"query": "Which database version does staging run?", "k": 2}))
        .await;
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(ids(&v["sources"]), ids(&Value::Array(hits.clone())), "{v}");
    assert_eq!(sources.len(), 2);
    for (i, src) in sources.iter().enumerate() {
        assert_eq!(src["index"], i + 1);
        assert!(added.contains(&src["id"].as_str().unwrap().to_string()));
        assert!(src["scores"]["fused"].is_number(), "{src}");
    }
    assert_eq!(
        sources[0]["text"],
        "The staging database runs PostgreSQL 17 on host db-staging-2."
    );
    // Whatever the model wrote, a citation names one of the sources.
    for c in v["citations"].as_array().unwrap() {
        let i = c["index"].as_u64().unwrap() as usize;
        assert!((1..=sources.len()).contains(&i), "{c}");
        assert_eq!(c["id"], sources[i - 1]["id"]);
        assert!(v["answer"].as_str().unwrap().contains(&format!("{i}")));
    }
    let t = &v["timings"];
    assert!(t["total_ms"].as_f64().unwrap() >= t["retrieval_ms"].as_f64().unwrap());

    // The LLM latency reaches the metrics.
    let (_, text) = {
        let res = app
            .router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let b = res.into_body().collect().await.unwrap().to_bytes();
        ((), String::from_utf8(b.to_vec()).unwrap())
    };
    assert!(text.contains("engram_llm_duration_seconds"), "{text}");
    // (A base model may stop at once: no token, no first-token latency.)
    if v["timings"]["first_token_ms"].is_number() {
        assert!(text.contains("engram_llm_first_token_seconds"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_streams_sources_tokens_and_a_final_answer() {
    let app = app_with_llm(real_llm().await).await;
    seed(&app).await;
    let (s, h, body) = ask_raw(
        &app,
        json!({"question": "When are production deploys?", "stream": true, "max_tokens": 24}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{h:?}"
    );
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"sources"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let tokens: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(!tokens.is_empty(), "{names:?}");
    assert_eq!(
        names.len(),
        tokens.len() + 2,
        "only tokens between: {names:?}"
    );
    let done = &events.last().unwrap().1;
    assert_eq!(done["answer"], tokens.concat().trim(), "{done}");
    let sources = &events[0].1["sources"];
    assert!(!sources.as_array().unwrap().is_empty());
    assert_eq!(
        sources[0]["text"],
        "Deploys to production happen every Tuesday after the standup."
    );
    for c in done["citations"].as_array().unwrap() {
        assert!(ids(sources).contains(&c["id"].as_str().unwrap().to_string()));
    }
    assert!(done["timings"]["first_token_ms"].is_number(), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_only_shows_the_model_what_the_caller_may_read() {
    let llm = real_llm().await;
    let app = app_opts(Opts {
        llm: Some(llm),
        ..super::governance::secured_opts()
    })
    .await;
    let writer = app.as_(&key(&app, "acme", Role::Writer, None, vec![]).await);
    let other_tenant = app.as_(&key(&app, "globex", Role::Writer, None, vec![]).await);
    let scoped = app.as_(&key(&app, "acme", Role::Reader, Some(vec!["team:*"]), vec![]).await);
    let mine = writer
        .add(
            "team:a",
            "Invoices go to billing@acme.com every Friday",
            json!({}),
        )
        .await;
    writer
        .add(
            "private",
            "Invoices for the CEO are handled privately",
            json!({}),
        )
        .await;
    other_tenant
        .add("team:a", "Globex invoices are paid on Mondays", json!({}))
        .await;
    let (s, v) = scoped
        .call(
            "POST",
            "/v1/ask",
            Some(json!({"question": "When are invoices sent?", "k": 10, "max_tokens": 8})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Only the caller's tenant and namespace scope reach the prompt, and PII
    // is redacted for a caller without pii:read.
    assert_eq!(ids(&v["sources"]), vec![mine.clone()], "{v}");
    let text = v["sources"][0]["text"].as_str().unwrap();
    assert!(!text.contains("billing@acme.com"), "{text}");
    let cleared = app.as_(
        &key(
            &app,
            "acme",
            Role::Reader,
            Some(vec!["team:*"]),
            vec![Permission::PiiRead],
        )
        .await,
    );
    let (_, v) = cleared
        .call(
            "POST",
            "/v1/ask",
            Some(json!({"question": "When are invoices sent?", "max_tokens": 4})),
        )
        .await;
    assert!(v["sources"][0]["text"]
        .as_str()
        .unwrap()
        .contains("billing@acme.com"));
    // A bad credential gets no answer at all.
    let (s, v) = app
        .as_("not-a-key")
        .call("POST", "/v1/ask", Some(json!({"question": "invoices?"})))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_down_or_hanging_is_503_or_504_and_search_still_works() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let app = app_with_llm(Arc::new(OpenAiChat::new(llm_opts(down)).unwrap())).await;
    seed(&app).await;
    for stream in [false, true] {
        let (s, h, body) = ask_raw(&app, json!({"question": "deploys?", "stream": stream})).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "llm_unavailable");
        assert!(h.contains_key("retry-after"), "{h:?}");
    }
    assert_eq!(app.search(json!({"query": "deploys"})).await.len(), 3);

    // A server that accepts and never answers (failure injection).
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", hang.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = hang.accept().await {
            held.push(sock);
        }
    });
    let slow = OpenAiChat::new(OpenAiChatOptions {
        first_token_timeout: Duration::from_millis(300),
        ..llm_opts(url)
    })
    .unwrap();
    let app = app_with_llm(Arc::new(slow)).await;
    for stream in [false, true] {
        let started = std::time::Instant::now();
        let (s, _, body) = ask_raw(&app, json!({"question": "deploys?", "stream": stream})).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_error(s, &v, StatusCode::GATEWAY_TIMEOUT, "llm_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_rejects_bad_input_and_says_when_no_llm_is_configured() {
    let app = app().await;
    let (s, v) = app
        .call("POST", "/v1/ask", Some(json!({"question": "anything"})))
        .await;
    assert_error(s, &v, StatusCode::NOT_IMPLEMENTED, "llm_not_configured");

    // Bad requests are rejected before the LLM is called (it is down here).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let app = app_with_llm(Arc::new(OpenAiChat::new(llm_opts(down)).unwrap())).await;
    for (body, code) in [
        (json!({"question": "  "}), "invalid_text"),
        (json!({"question": "q", "max_tokens": 0}), "out_of_range"),
        (
            json!({"question": "q", "max_tokens": 100000}),
            "out_of_range",
        ),
        (json!({"question": "q", "temperature": 3.5}), "out_of_range"),
        (json!({"question": "q", "k": 0}), "out_of_range"),
        (
            json!({"question": "q", "filter": {"$bogus": 1}}),
            "invalid_filter",
        ),
        (
            json!({"question": "q", "namespaces": ["nope"]}),
            "namespace_not_found",
        ),
        (json!({"question": "q", "bogus": true}), "invalid_body"),
        (json!({"stream": true}), "invalid_body"),
    ] {
        let (s, v) = app.call("POST", "/v1/ask", Some(body.clone())).await;
        assert!(s.is_client_error(), "{body} -> {s} {v}");
        assert_eq!(v["error"]["code"], code, "{body} -> {v}");
    }
}
