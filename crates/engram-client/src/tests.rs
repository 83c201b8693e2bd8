//! Hermetic tests of the client's own logic (retries, error decoding, URL
//! building) against a scripted axum server: a test double for failure
//! injection, not engram. The client against a real engram is tested in
//! `crates/engram/tests` (every CLI command and the node tests use it).

use super::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as S, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
struct Script {
    /// Requests seen.
    hits: Arc<AtomicUsize>,
    /// How many first requests answer 503.
    fail_first: usize,
    /// The last request's path and query, as received.
    last: Arc<std::sync::Mutex<String>>,
}

async fn handler(State(s): State<Script>, uri: Uri, _h: HeaderMap) -> Response {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    *s.last.lock().unwrap() = uri.to_string();
    if uri.path() == "/v1/memories/00000000-0000-0000-0000-000000000000" {
        return (
            S::NOT_FOUND,
            axum::Json(
                serde_json::json!({"error": {"code": "not_found", "message": "no such memory"}}),
            ),
        )
            .into_response();
    }
    if uri.path() == "/proxy" {
        return (S::BAD_GATEWAY, "upstream down").into_response();
    }
    if n < s.fail_first {
        return (
            S::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            axum::Json(
                serde_json::json!({"error": {"code": "unavailable", "message": "store down"}}),
            ),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"memories": [{"id": Uuid::nil(), "status": "created", "state": "pending"}]}))
        .into_response()
}

async fn serve(s: Script) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(handler).with_state(s);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_503_is_retried_after_retry_after_and_then_succeeds() {
    let s = Script {
        fail_first: 2,
        ..Default::default()
    };
    let c = Client::builder(serve(s.clone()).await)
        .retries(3)
        .build()
        .unwrap();
    let out = c
        .add("ns", vec![NewMemory::text("x")], false)
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].is_new());
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        3,
        "two 503s, then the success"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_carries_code_and_retry_after() {
    let s = Script {
        fail_first: 100,
        ..Default::default()
    };
    let c = Client::builder(serve(s.clone()).await)
        .retries(2)
        .build()
        .unwrap();
    let e = c
        .add("ns", vec![NewMemory::text("x")], false)
        .await
        .unwrap_err();
    assert_eq!(s.hits.load(Ordering::SeqCst), 3, "one try and two retries");
    assert_eq!(e.code(), Some("unavailable"));
    assert_eq!(e.status(), Some(503));
    assert!(e.is_transient());
    let Error::Api { retry_after, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(retry_after, Some(Duration::ZERO));
}

#[tokio::test]
async fn engram_errors_keep_their_code_and_other_errors_say_what_came() {
    let s = Script::default();
    let c = Client::new(&serve(s.clone()).await, None).unwrap();
    let e = c.get(Uuid::nil()).await.unwrap_err();
    assert_eq!((e.code(), e.status()), (Some("not_found"), Some(404)));
    assert_eq!(e.to_string(), "404 not_found: no such memory");
    assert!(!e.is_transient());
    let e = c.get_json("/proxy", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some("http_error"));
    assert!(e.to_string().contains("upstream down"), "{e}");
}

#[tokio::test]
async fn session_ids_are_one_percent_encoded_path_segment() {
    let s = Script::default();
    let c = Client::new(&(serve(s.clone()).await + "/"), None).unwrap();
    let _ = c.session("ns", "a/b c?", Some(3), 10).await;
    assert_eq!(
        *s.last.lock().unwrap(),
        "/v1/sessions/a%2Fb%20c%3F/messages?namespace=ns&limit=10&after=3"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_transport_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let c = Client::builder(url).retries(0).build().unwrap();
    let e = c.stats().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[test]
fn bad_configuration_is_refused_up_front() {
    assert!(matches!(
        Client::new("not a url", None),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Client::new("http://x", Some("bad\nkey")),
        Err(Error::Config(_))
    ));
}

#[test]
fn backoff_takes_retry_after_but_never_waits_long() {
    assert_eq!(
        backoff(1, Some(Duration::from_secs(2))),
        Duration::from_secs(2)
    );
    assert_eq!(backoff(1, Some(Duration::from_secs(3600))), MAX_BACKOFF);
    assert_eq!(backoff(1, None), Duration::from_millis(400));
    assert_eq!(backoff(30, None), MAX_BACKOFF);
}

#[test]
fn import_lines_keep_every_field() {
    let m = NewMemory::from_json(serde_json::json!({"text": "t", "tags": ["a"], "ttl_secs": 5}))
        .unwrap();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"text": "t", "tags": ["a"], "ttl_secs": 5})
    );
    assert!(NewMemory::from_json(serde_json::json!({"tags": []})).is_err());
    let m = NewMessage::from_json(serde_json::json!({"text": "hi", "speaker": "A", "position": 4}))
        .unwrap();
    assert_eq!(m.position, Some(4));
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"text": "hi", "speaker": "A", "position": 4})
    );
    assert!(NewMessage::from_json(serde_json::json!({"text": "hi", "position": -1})).is_err());
}
