//! `GET /readyz?verbose=true`: every back-end checked with its latency, on
//! the real embedded back-ends and a real llama.cpp server
//! (`scripts/services.sh start llm`); the LLM down or hanging is injected
//! with a closed port and a socket that never answers.

use super::*;
use engram_core::Llm;
use engram_llm::{OpenAiChat, OpenAiChatOptions};
use engram_testkit::{llm_model, llm_url};

fn chat(url: String, model: String) -> Arc<dyn Llm> {
    Arc::new(OpenAiChat::new(OpenAiChatOptions::new(url, model)).unwrap())
}

async fn real_llm() -> Arc<dyn Llm> {
    let llm = chat(llm_url(), llm_model());
    if let Err(e) = llm.models().await {
        panic!(
            "no llama.cpp server at {} ({e}); start it with `scripts/services.sh start llm`",
            llm_url()
        );
    }
    llm
}

async fn with_llm(llm: Option<Arc<dyn Llm>>) -> App {
    app_opts(Opts {
        llm,
        ..Opts::default()
    })
    .await
}

fn assert_core_ok(v: &Value) {
    for c in ["store", "index", "queue", "embedder"] {
        assert_eq!(v["checks"][c]["ok"], true, "{c}: {v}");
        assert!(v["checks"][c]["ms"].as_f64().unwrap() >= 0.0, "{c}: {v}");
        assert!(v["checks"][c].get("error").is_none(), "{c}: {v}");
    }
    assert_eq!(v["checks"]["embedder"]["detail"], "all-MiniLM-L6-v2", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_readyz_reports_every_check_and_plain_readyz_is_unchanged() {
    let app = with_llm(None).await;
    let (s, v) = app.call("GET", "/readyz", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ready"})));
    let (s, v) = app.call("GET", "/readyz?verbose=false", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ready"})));

    let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_core_ok(&v);
    assert_eq!(v["checks"]["index"]["detail"], "0 changes behind the store");
    // No LLM configured: skipped, not failed.
    assert_eq!(v["checks"]["llm"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["llm"]["skipped"], true, "{v}");

    let (s, v) = app.call("GET", "/readyz?verbose=maybe", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_readyz_checks_the_real_llm_lists_the_configured_model() {
    let app = with_llm(Some(real_llm().await)).await;
    let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_core_ok(&v);
    assert_eq!(v["checks"]["llm"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["llm"]["detail"], llm_model(), "{v}");
    assert!(v["checks"]["llm"].get("skipped").is_none(), "{v}");

    // The same server, configured with a model it does not serve: degraded.
    let app = with_llm(Some(chat(llm_url(), "no-such-model:7b".into()))).await;
    let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    let err = v["checks"]["llm"]["error"].as_str().unwrap();
    assert!(
        err.contains("does not list the configured model \"no-such-model:7b\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_down_or_hanging_is_degraded_not_failing() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let app = with_llm(Some(chat(down, llm_model()))).await;
    let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_core_ok(&v);
    assert_eq!(v["checks"]["llm"]["ok"], false, "{v}");
    let err = v["checks"]["llm"]["error"].as_str().unwrap();
    assert!(err.contains("cannot reach the LLM server"), "{err}");
    // Plain readiness ignores the LLM.
    assert_eq!(app.call("GET", "/readyz", None).await.0, StatusCode::OK);

    // Accepts and never answers: the check's own timeout (3 s) ends it.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", hang.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = hang.accept().await {
            held.push(sock);
        }
    });
    let app = with_llm(Some(chat(url, llm_model()))).await;
    let started = std::time::Instant::now();
    let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
    let took = started.elapsed();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["checks"]["llm"]["error"], "no answer within 3s", "{v}");
    assert!(v["checks"]["llm"]["ms"].as_f64().unwrap() >= 3000.0, "{v}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The other checks did not wait for the hanging one.
    assert!(v["checks"]["store"]["ms"].as_f64().unwrap() < 1000.0, "{v}");
}
