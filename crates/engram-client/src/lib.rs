//! engram-client: a typed HTTP client of engram's `/v1` API.
//!
//! One client for everything that talks to a running engram from Rust: the
//! `engram` CLI's remote commands, `engram probe`, `engram-bench` and the
//! test suites. It sends the API key, turns engram's error document into
//! [`Error::Api`] with the stable error code, retries a request the server
//! could not serve (503 with `Retry-After`, 429) a bounded number of times,
//! and decodes answers into [`models`]. Routes without a typed method are
//! reachable through [`Client::get_json`] and [`Client::post_json`].
//!
//! ```no_run
//! # async fn run() -> Result<(), engram_client::Error> {
//! use engram_client::{Client, NewMemory, SearchRequest};
//! let c = Client::builder("http://127.0.0.1:8080").api_key("egk_...").build()?;
//! c.add("agent-1", vec![NewMemory::text("The user prefers tea.")], true).await?;
//! let hits = c.search(&SearchRequest::new("what does the user drink?")).await?.hits;
//! # Ok(()) }
//! ```

pub mod chroma;
mod error;
pub mod models;

pub use error::Error;
pub use models::*;
pub use reqwest::Method;

use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest wait between two tries, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to build a [`Client`].
pub struct ClientBuilder {
    url: String,
    api_key: Option<String>,
    timeout: Option<Duration>,
    retries: u32,
}

impl ClientBuilder {
    /// Sent as `Authorization: Bearer` on every request (an API key or a JWT).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The key if there is one.
    pub fn api_key_opt(mut self, key: Option<impl Into<String>>) -> Self {
        self.api_key = key.map(Into::into);
        self
    }

    /// Bound on each request, connection included (default: none).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Further tries of a request the server could not serve (default 3;
    /// 0: fail at once).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    pub fn build(self) -> Result<Client> {
        let base = reqwest::Url::parse(self.url.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("the server URL {:?}: {e}", self.url)))?;
        if base.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "the server URL {:?} cannot take a path",
                self.url
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(k) = &self.api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| Error::Config("the API key is not valid header text".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut http = reqwest::Client::builder().default_headers(headers);
        if let Some(t) = self.timeout {
            http = http.timeout(t).connect_timeout(t);
        }
        let http = http.build().map_err(|e| {
            Error::Config(format!("building the HTTP client: {}", error::chain(&e)))
        })?;
        Ok(Client {
            base,
            http,
            retries: self.retries,
        })
    }
}

/// A running engram.
#[derive(Clone, Debug)]
pub struct Client {
    base: reqwest::Url,
    http: reqwest::Client,
    retries: u32,
}

/// A response before its body is read: the status and the raw answer.
struct Answer {
    url: String,
    status: StatusCode,
    res: reqwest::Response,
}

impl Client {
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            api_key: None,
            timeout: None,
            retries: 3,
        }
    }

    /// A client of `url` sending `api_key` if given, with the defaults.
    pub fn new(url: &str, api_key: Option<&str>) -> Result<Client> {
        Client::builder(url).api_key_opt(api_key).build()
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + path segments, each percent-encoded (a session id may hold
    /// any character).
    fn url_of(&self, segments: &[&str]) -> reqwest::Url {
        let mut u = self.base.clone();
        u.path_segments_mut()
            .expect("checked at build")
            .pop_if_empty()
            .extend(segments);
        u
    }

    fn url_path(&self, path: &str) -> reqwest::Url {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.url_of(&segments)
    }

    /// Send, retrying what the server could not serve; any status comes back.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        query: &[(&str, String)],
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<Answer> {
        let mut attempt = 0u32;
        loop {
            let mut req = self.http.request(method.clone(), url.clone()).query(query);
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_json());
            }
            let shown = url.to_string();
            let res = match req.send().await {
                Ok(res) => res,
                // No answer at all: the request may or may not have been
                // handled, so only what is harmless twice is sent again.
                Err(_) if attempt < self.retries && idempotent(&method) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt, None)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Transport {
                        url: shown,
                        message: error::chain(&e),
                    })
                }
            };
            let status = res.status();
            // A 429 is refused before any work; a 503 is a back-end that
            // failed the request's transaction, so nothing of it is stored.
            // Should a commit have gone through unseen, sending it again is
            // still harmless for inserts (returned as `duplicate`: same
            // text or client_id), for appends that give positions, and for
            // the writes that set a state.
            let busy = status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS;
            if busy && attempt < self.retries {
                attempt += 1;
                tokio::time::sleep(backoff(attempt, retry_after(&res))).await;
                continue;
            }
            return Ok(Answer {
                url: shown,
                status,
                res,
            });
        }
    }

    /// Send and decode a success; an error status becomes [`Error::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: reqwest::Url,
        query: &[(&str, String)],
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<T> {
        let a = self.send(method, url, query, body).await?;
        let a = check(a).await?;
        let bytes = a.res.bytes().await.map_err(|e| Error::Transport {
            url: a.url.clone(),
            message: error::chain(&e),
        })?;
        // 204 and the like decode as JSON null.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            url: a.url,
            message: e.to_string(),
        })
    }

    // ---- any route ----------------------------------------------------------

    /// `GET` a path (such as `/v1/jobs?state=dead`'s `/v1/jobs`) as JSON.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::GET, self.url_path(path), query, None)
            .await
    }

    /// Any route: `method` on the path of `segments` (each one encoded
    /// path segment), with a query and an optional JSON body. An empty
    /// success (204) is JSON `null`.
    pub async fn request_json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = self.url_of(segments);
        match body {
            Some(b) => self.call(method, url, query, Some(&erased::Json(b))).await,
            None => self.call(method, url, query, None).await,
        }
    }

    /// `POST` a JSON body to a path.
    pub async fn post_json(&self, path: &str, body: &(impl Serialize + Sync)) -> Result<Value> {
        self.call(
            Method::POST,
            self.url_path(path),
            &[],
            Some(&erased::Json(body)),
        )
        .await
    }

    // ---- memories -----------------------------------------------------------

    /// Store memories in a namespace; with `wait`, answer once they are
    /// searchable. One outcome per memory, in order.
    pub async fn add(
        &self,
        namespace: &str,
        memories: Vec<NewMemory>,
        wait: bool,
    ) -> Result<Vec<Created>> {
        #[derive(Serialize)]
        struct Body<'a> {
            namespace: &'a str,
            memories: Vec<NewMemory>,
        }
        let out: CreatedBatch = self
            .call(
                Method::POST,
                self.url_of(&["v1", "memories"]),
                &[("wait", wait.to_string())],
                Some(&erased::Json(&Body {
                    namespace,
                    memories,
                })),
            )
            .await?;
        Ok(out.memories)
    }

    pub async fn get(&self, id: Uuid) -> Result<Memory> {
        self.call(
            Method::GET,
            self.url_of(&["v1", "memories", &id.to_string()]),
            &[],
            None,
        )
        .await
    }

    /// Change a memory (`text`, `metadata`, `tags`, `legal_hold`...: the
    /// API's patch document).
    pub async fn update(&self, id: Uuid, patch: &Value) -> Result<Memory> {
        self.call(
            Method::PATCH,
            self.url_of(&["v1", "memories", &id.to_string()]),
            &[],
            Some(&erased::Json(patch)),
        )
        .await
    }

    /// Soft-delete (restorable until purged), or with `hard` purge at once.
    pub async fn delete(&self, id: Uuid, hard: bool) -> Result<()> {
        let _: Value = self
            .call(
                Method::DELETE,
                self.url_of(&["v1", "memories", &id.to_string()]),
                &[("hard", hard.to_string())],
                None,
            )
            .await?;
        Ok(())
    }

    /// One page of memories.
    pub async fn list(&self, req: &ListRequest) -> Result<Page> {
        self.call(
            Method::POST,
            self.url_of(&["v1", "memories", "list"]),
            &[],
            Some(&erased::Json(req)),
        )
        .await
    }

    /// Every memory the request matches, page after page.
    pub fn list_all(&self, req: ListRequest) -> impl Stream<Item = Result<Memory>> + '_ {
        futures::stream::try_unfold(Some(req), move |next| async move {
            let Some(req) = next else { return Ok(None) };
            let page = self.list(&req).await?;
            let next = page.next_cursor.clone().map(|c| ListRequest {
                cursor: Some(c),
                ..req
            });
            Ok(Some((
                futures::stream::iter(page.memories.into_iter().map(Ok)),
                next,
            )))
        })
        .try_flatten()
    }

    pub async fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        self.call(
            Method::POST,
            self.url_of(&["v1", "search"]),
            &[],
            Some(&erased::Json(req)),
        )
        .await
    }

    // ---- conversations ------------------------------------------------------

    /// Append messages to a session, in order.
    pub async fn append_messages(
        &self,
        namespace: &str,
        session: &str,
        messages: Vec<NewMessage>,
        wait: bool,
    ) -> Result<Vec<Appended>> {
        #[derive(Serialize)]
        struct Body<'a> {
            namespace: &'a str,
            messages: Vec<NewMessage>,
        }
        let out: AppendedBatch = self
            .call(
                Method::POST,
                self.url_of(&["v1", "sessions", session, "messages"]),
                &[("wait", wait.to_string())],
                Some(&erased::Json(&Body {
                    namespace,
                    messages,
                })),
            )
            .await?;
        Ok(out.messages)
    }

    /// A session's messages in order, `limit` after position `after`.
    pub async fn session(
        &self,
        namespace: &str,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<SessionPage> {
        let mut q = vec![
            ("namespace", namespace.to_string()),
            ("limit", limit.to_string()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        self.call(
            Method::GET,
            self.url_of(&["v1", "sessions", session, "messages"]),
            &q,
            None,
        )
        .await
    }

    // ---- answers ------------------------------------------------------------

    /// Ask a question; the whole answer document (`answer`, `citations`...).
    pub async fn ask(&self, req: &AskRequest) -> Result<Value> {
        self.call(
            Method::POST,
            self.url_of(&["v1", "ask"]),
            &[],
            Some(&erased::Json(&Streamed { req, stream: false })),
        )
        .await
    }

    /// Ask a question and read the answer as it is generated: the sources,
    /// the tokens, then the answer document. An error before the first
    /// event is an `Err` here; one during the answer ends the stream with
    /// [`Error::Stream`].
    pub async fn ask_stream(
        &self,
        req: &AskRequest,
    ) -> Result<impl Stream<Item = Result<AskEvent>> + Send + 'static> {
        use eventsource_stream::Eventsource;
        let a = self
            .send(
                Method::POST,
                self.url_of(&["v1", "ask"]),
                &[],
                Some(&erased::Json(&Streamed { req, stream: true })),
            )
            .await?;
        let a = check(a).await?;
        let url = a.url;
        let events = a.res.bytes_stream().eventsource();
        Ok(events
            .map(move |ev| {
                let ev = ev.map_err(|e| Error::Transport {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                let data: Value = serde_json::from_str(&ev.data).map_err(|e| Error::Decode {
                    url: url.clone(),
                    message: format!("event {:?}: {e}", ev.event),
                })?;
                Ok(match ev.event.as_str() {
                    "sources" => Some(AskEvent::Sources(
                        data["sources"].as_array().cloned().unwrap_or_default(),
                    )),
                    "token" => Some(AskEvent::Token(
                        data["text"].as_str().unwrap_or_default().to_string(),
                    )),
                    "done" => Some(AskEvent::Done(data)),
                    "error" => {
                        return Err(Error::Stream {
                            code: data["error"]["code"].as_str().unwrap_or("error").into(),
                            message: data["error"]["message"].as_str().unwrap_or_default().into(),
                        })
                    }
                    // Events a newer server may add.
                    _ => None,
                })
            })
            .filter_map(|r| async move { r.transpose() }))
    }

    // ---- operations ---------------------------------------------------------

    pub async fn stats(&self) -> Result<Stats> {
        self.call(Method::GET, self.url_of(&["v1", "stats"]), &[], None)
            .await
    }

    /// Wait until everything stored is searchable (nothing pending, queued
    /// or unindexed), polling `/v1/stats`.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<Stats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats().await?;
            if s.idle() || tokio::time::Instant::now() >= deadline {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The readiness report (`/readyz?verbose=true`): its HTTP status (503
    /// when failing) and its body, whatever the status. Never retried: a
    /// probe reports what it sees.
    pub async fn readiness(&self) -> Result<(u16, String)> {
        let mut u = self.url_of(&["readyz"]);
        u.set_query(Some("verbose=true"));
        let res = self
            .http
            .get(u.clone())
            .send()
            .await
            .map_err(|e| Error::Transport {
                url: u.to_string(),
                message: transport_message(&e),
            })?;
        let status = res.status().as_u16();
        let body = res.text().await.map_err(|e| Error::Transport {
            url: u.to_string(),
            message: transport_message(&e),
        })?;
        Ok((status, body))
    }

    /// Wait until the node answers `/readyz` with 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.http.get(self.url_of(&["readyz"])).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => Error::Api {
                    status: r.status().as_u16(),
                    code: "not_ready".into(),
                    message: r.text().await.unwrap_or_default(),
                    retry_after: None,
                },
                Err(e) => Error::Transport {
                    url: self.url().to_string(),
                    message: error::chain(&e),
                },
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else {
        error::chain(e)
    }
}

#[derive(Serialize)]
struct Streamed<'a> {
    #[serde(flatten)]
    req: &'a AskRequest,
    stream: bool,
}

/// A success as is; an error status read into [`Error::Api`].
async fn check(a: Answer) -> Result<Answer> {
    if a.status.is_success() {
        return Ok(a);
    }
    let retry_after = retry_after(&a.res);
    let status = a.status.as_u16();
    let text = a.res.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), message) => Err(Error::Api {
            status,
            code: code.to_string(),
            message: message.unwrap_or_default().to_string(),
            retry_after,
        }),
        // Not engram's error document (a proxy in between, say).
        _ => Err(Error::Api {
            status,
            code: "http_error".into(),
            message: text.chars().take(200).collect(),
            retry_after,
        }),
    }
}

fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    res.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The server's `Retry-After` if it gave one, else 200 ms doubling per try;
/// never more than [`MAX_BACKOFF`].
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_millis(200u64 << attempt.min(8)))
        .min(MAX_BACKOFF)
}

/// A request that failed before any answer is re-sent only when sending it
/// twice cannot do anything twice.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE
    )
}

/// Request bodies behind a reference, so `send` needs no type parameter.
mod erased {
    pub trait Body {
        fn to_json(&self) -> Vec<u8>;
    }
    pub struct Json<'a, T: ?Sized>(pub &'a T);
    impl<T: serde::Serialize + ?Sized> Body for Json<'_, T> {
        fn to_json(&self) -> Vec<u8> {
            // Serializing the request types cannot fail: string keys only.
            serde_json::to_vec(self.0).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests;
