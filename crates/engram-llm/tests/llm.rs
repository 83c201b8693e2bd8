//! engram-llm against a real llama.cpp server (`scripts/services.sh start llm`),
//! plus failure injection with raw TCP peers that misbehave on purpose
//! (refuse, hang, cut the stream, answer garbage). Those fakes exist only to
//! inject faults; every success path runs against the real server.

use engram_core::rag::{ChatMessage, ChatRequest};
use engram_core::{Embedder, Error, Llm};
use engram_llm::{OpenAiChat, OpenAiChatOptions, OpenAiEmbedder, OpenAiEmbedderOptions};
use engram_testkit::{llm_model, llm_url};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn real_llm() -> OpenAiChat {
    let llm = OpenAiChat::new(OpenAiChatOptions::new(llm_url(), llm_model())).unwrap();
    if let Err(e) = llm.models().await {
        panic!(
            "the llama.cpp server at {} is not reachable ({e}); start it with `scripts/services.sh start llm`",
            llm_url()
        );
    }
    llm
}

/// Every prompt is made unique: llama-cpp-python reuses the KV cache of a
/// prompt identical to the previous one, which with gemma3's sliding-window
/// attention can end the answer at once (seen when this suite ran twice).
fn nonce() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{t:x}-{n}")
}

fn request(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::new("system", format!("Answer briefly. (request {})", nonce())),
            ChatMessage::new("user", question),
        ],
        max_tokens,
        temperature: 0.0,
    }
}

async fn collect(llm: &OpenAiChat, req: ChatRequest) -> (Vec<String>, Option<Error>) {
    let mut tokens = Vec::new();
    let mut s = match llm.chat(req).await {
        Ok(s) => s,
        Err(e) => return (tokens, Some(e)),
    };
    while let Some(t) = s.next().await {
        match t {
            Ok(t) => tokens.push(t),
            Err(e) => return (tokens, Some(e)),
        }
    }
    (tokens, None)
}

#[tokio::test]
async fn real_server_lists_its_model_and_streams_an_answer() {
    let llm = real_llm().await;
    let models = llm.models().await.unwrap();
    assert!(models.contains(&llm_model()), "{models:?}");
    let (tokens, err) = collect(&llm, request("Name three colours.", 12)).await;
    assert!(err.is_none(), "{err:?}");
    assert!(!tokens.is_empty(), "the model produced no token");
    assert!(
        tokens.iter().all(|t| !t.is_empty()),
        "empty deltas are skipped"
    );
    // Several deltas, not one blob: the answer really streams.
    assert!(tokens.len() >= 2, "{tokens:?}");
}

#[tokio::test]
async fn max_tokens_bounds_the_real_answer() {
    let llm = real_llm().await;
    let (short, err) = collect(&llm, request("Tell a long story about the sea.", 3)).await;
    assert!(err.is_none(), "{err:?}");
    let (long, err) = collect(&llm, request("Tell a long story about the sea.", 40)).await;
    assert!(err.is_none(), "{err:?}");
    assert!(short.len() <= 3, "{short:?}");
    assert!(
        long.len() > short.len(),
        "{} vs {}",
        long.len(),
        short.len()
    );
}

// ---- failure injection -------------------------------------------------

/// A peer that reads each request and then does `reply` with the socket.
async fn fake<F, Fut>(reply: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let reply = std::sync::Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                read_request(&mut sock).await;
                reply(sock).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

async fn read_request(sock: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

/// Write one complete HTTP/1.1 response.
async fn respond(sock: &mut tokio::net::TcpStream, status: &str, headers: &[&str], body: &str) {
    let mut r = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    sock.write_all(r.as_bytes()).await.unwrap();
}

fn opts(url: String) -> OpenAiChatOptions {
    OpenAiChatOptions {
        connect_timeout: Duration::from_millis(500),
        first_token_timeout: Duration::from_millis(400),
        timeout: Duration::from_secs(3),
        ..OpenAiChatOptions::new(url, "m")
    }
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn chunk(data: &str) -> String {
    let ev = format!("data: {data}\n\n");
    format!("{:x}\r\n{ev}\r\n", ev.len())
}

fn delta(text: &str) -> String {
    chunk(&serde_json::json!({"choices":[{"delta":{"content":text}}]}).to_string())
}

#[tokio::test]
async fn refused_connection_is_unavailable_at_once() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let llm = OpenAiChat::new(opts(url)).unwrap();
    let started = Instant::now();
    let err = llm.chat(request("q", 4)).await.err().unwrap();
    assert!(matches!(err, Error::LlmUnavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = llm.models().await.unwrap_err();
    assert!(matches!(err, Error::LlmUnavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_before_the_first_token() {
    // Accepts and never answers.
    let url = fake(|sock| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sock);
    })
    .await;
    let llm = OpenAiChat::new(opts(url)).unwrap();
    let started = Instant::now();
    let err = llm.chat(request("q", 4)).await.err().unwrap();
    assert!(matches!(err, Error::LlmTimeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn headers_then_silence_times_out_in_the_stream() {
    let url = fake(|mut sock| async move {
        sock.write_all(SSE_HEAD.as_bytes()).await.unwrap();
        sock.write_all(chunk(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let llm = OpenAiChat::new(opts(url)).unwrap();
    let started = Instant::now();
    let (tokens, err) = collect(&llm, request("q", 4)).await;
    assert!(tokens.is_empty());
    assert!(matches!(err, Some(Error::LlmTimeout(_))), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn slow_tokens_after_the_first_hit_the_total_timeout() {
    let url = fake(|mut sock| async move {
        sock.write_all(SSE_HEAD.as_bytes()).await.unwrap();
        for _ in 0..100 {
            if sock.write_all(delta("x").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let llm = OpenAiChat::new(OpenAiChatOptions {
        timeout: Duration::from_secs(1),
        ..opts(url)
    })
    .unwrap();
    let (tokens, err) = collect(&llm, request("q", 4)).await;
    assert!(
        !tokens.is_empty(),
        "tokens before the deadline are delivered"
    );
    assert!(matches!(err, Some(Error::LlmTimeout(_))), "{err:?}");
}

#[tokio::test]
async fn a_cut_stream_is_an_error_not_a_short_answer() {
    let url = fake(|mut sock| async move {
        sock.write_all(SSE_HEAD.as_bytes()).await.unwrap();
        sock.write_all(delta("Hel").as_bytes()).await.unwrap();
        // No terminating chunk: the connection just ends.
        let _ = sock.shutdown().await;
    })
    .await;
    let llm = OpenAiChat::new(opts(url)).unwrap();
    let (tokens, err) = collect(&llm, request("q", 4)).await;
    assert_eq!(tokens, vec!["Hel".to_string()]);
    assert!(matches!(err, Some(Error::LlmUnavailable { .. })), "{err:?}");
}

#[tokio::test]
async fn http_errors_map_to_transient_or_failed() {
    let url = fake(|mut sock| async move {
        let body = "overloaded";
        respond(
            &mut sock,
            "503 Service Unavailable",
            &["retry-after: 7"],
            body,
        )
        .await;
    })
    .await;
    let err = OpenAiChat::new(opts(url))
        .unwrap()
        .chat(request("q", 4))
        .await
        .err()
        .unwrap();
    match err {
        Error::LlmUnavailable {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Duration::from_secs(7));
            assert!(message.contains("overloaded"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let url = fake(|mut sock| async move {
        let body = r#"{"error":{"message":"model 'm' not found"}}"#;
        respond(
            &mut sock,
            "404 Not Found",
            &["content-type: application/json"],
            body,
        )
        .await;
    })
    .await;
    let err = OpenAiChat::new(opts(url))
        .unwrap()
        .chat(request("q", 4))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::LlmFailed(m) if m.contains("404") && m.contains("not found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_in_the_stream_is_a_failure() {
    let url = fake(|mut sock| async move {
        sock.write_all(SSE_HEAD.as_bytes()).await.unwrap();
        sock.write_all(delta("ok").as_bytes()).await.unwrap();
        sock.write_all(chunk("<html>proxy error</html>").as_bytes())
            .await
            .unwrap();
        sock.write_all(b"0\r\n\r\n").await.unwrap();
    })
    .await;
    let llm = OpenAiChat::new(opts(url)).unwrap();
    let (tokens, err) = collect(&llm, request("q", 4)).await;
    assert_eq!(tokens, vec!["ok".to_string()]);
    assert!(matches!(err, Some(Error::LlmFailed(_))), "{err:?}");
}

#[tokio::test]
async fn remote_embedder_faults() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let o = |url: String| OpenAiEmbedderOptions {
        base_url: url,
        model: "m".into(),
        version: "1".into(),
        dims: 3,
        api_key: None,
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
    };
    let err = OpenAiEmbedder::new(o(url))
        .unwrap()
        .embed(&["a".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                what: "embedder",
                ..
            }
        ),
        "{err:?}"
    );

    // A server whose model has other dimensions than the index.
    let url = fake(|mut sock| async move {
        let body = r#"{"data":[{"index":0,"embedding":[1.0,0.0]}]}"#;
        respond(
            &mut sock,
            "200 OK",
            &["content-type: application/json"],
            body,
        )
        .await;
    })
    .await;
    let err = OpenAiEmbedder::new(o(url))
        .unwrap()
        .embed(&["a".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Embedding(m) if m.contains("2 dimensions")),
        "{err:?}"
    );

    // Vectors that come back out of order are put back in input order.
    let url = fake(|mut sock| async move {
        let body = r#"{"data":[{"index":1,"embedding":[0.0,2.0,0.0]},{"index":0,"embedding":[3.0,0.0,4.0]}]}"#;
        respond(&mut sock, "200 OK", &["content-type: application/json"], body).await;
    })
    .await;
    let v = OpenAiEmbedder::new(o(url))
        .unwrap()
        .embed(&["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(v, vec![vec![0.6, 0.0, 0.8], vec![0.0, 1.0, 0.0]]);
}
