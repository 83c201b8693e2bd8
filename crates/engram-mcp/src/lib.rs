//! engram-mcp: engram's memory as Model Context Protocol tools, for agents
//! that speak MCP (desktop and IDE assistants, agent frameworks).
//!
//! The tools ([`EngramMcp`]) are one thin layer over engram's HTTP API: each
//! tool call becomes one API request ([`ApiRequest`]) sent through an
//! [`Api`] with the caller's credentials, so authentication, the engine's
//! authorization (roles, namespace scopes), validation, limits, audit and
//! error codes are exactly those of the API; nothing is decided twice.
//!
//! Two transports, two [`Api`]s:
//! - **streamable HTTP** at `/mcp` on the server: `engram-server` passes
//!   each tool's request to its own router in-process, with the MCP
//!   request's `Authorization` / `X-API-Key` headers;
//! - **stdio** (`engram mcp`): [`client::ClientApi`] sends the requests to a
//!   running engram with the typed client (`ENGRAM_URL`, `ENGRAM_API_KEY`).
//!
//! A connection's default namespace comes from the URL (`/mcp?namespace=`),
//! else from configuration; a tool's `namespace` argument overrides it.
//! Failures are MCP tool errors (`isError`) whose structured content is the
//! API's `{"error": {"code", "message"}}`, so a model can read the code.

pub mod client;

use async_trait::async_trait;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// One request to engram's HTTP API.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: http::Method,
    /// The path's segments, not encoded: `["v1", "memories", id]`.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl ApiRequest {
    pub fn new(method: http::Method, segments: &[&str]) -> Self {
        ApiRequest {
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    fn query(mut self, k: &str, v: impl ToString) -> Self {
        self.query.push((k.into(), v.to_string()));
        self
    }

    fn body(mut self, v: Value) -> Self {
        self.body = Some(v);
        self
    }

    /// `/v1/sessions/a%2Fb/messages?wait=true`: each segment one encoded
    /// path segment (a session id with `/` stays one segment).
    pub fn path_and_query(&self) -> String {
        let mut u = url::Url::parse("http://engram/").expect("a valid base URL");
        u.path_segments_mut()
            .expect("an http URL has a path")
            .extend(&self.segments);
        if !self.query.is_empty() {
            u.query_pairs_mut().extend_pairs(&self.query);
        }
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }
}

/// An API request that did not succeed: engram's error code and message
/// (or `unavailable` when engram could not be reached).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// The HTTP status, if engram answered.
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(status: Option<u16>, code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// From an engram error body `{"error": {"code", "message"}}`, or
    /// whatever else answered with `status`.
    pub fn from_body(status: u16, body: &Value) -> Self {
        let e = &body["error"];
        match (e["code"].as_str(), e["message"].as_str()) {
            (Some(code), Some(message)) => Failure::new(Some(status), code, message),
            _ => Failure::new(
                Some(status),
                "unexpected_response",
                format!("HTTP {status}: {body}"),
            ),
        }
    }
}

/// Where tool calls go: engram's HTTP API, in-process or over the network.
#[async_trait]
pub trait Api: Send + Sync + 'static {
    /// Send `req` on behalf of the MCP caller of `ctx`; the success body
    /// (JSON `null` for an empty one).
    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        req: ApiRequest,
    ) -> Result<Value, Failure>;
}

/// Settings of an MCP endpoint.
#[derive(Debug, Clone, Default)]
pub struct McpOptions {
    /// The namespace tools use when neither the call nor the URL names one.
    pub default_namespace: Option<String>,
}

/// engram's MCP server: the memory tools over an [`Api`].
#[derive(Clone)]
pub struct EngramMcp {
    api: Arc<dyn Api>,
    options: McpOptions,
    tool_router: ToolRouter<EngramMcp>,
}

/// Memory fields a model may set (the API's memory input; other fields of
/// the API, such as `client_id` or `expires_at`, pass through unchanged).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MemoryArg {
    /// The memory's text: one self-contained fact, preference, decision or
    /// event, written so it makes sense without the conversation around it.
    pub text: String,
    /// Structured attributes to filter on later, e.g. {"user": "ana", "source": "chat"}.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Short labels, e.g. ["preference", "project:atlas"].
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    /// Namespace to store in, e.g. "user:ana" or "project:atlas". Default: the connection's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The memories to store (one or several).
    pub memories: Vec<MemoryArg>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// What to look for, in natural language or keywords.
    pub query: String,
    /// Namespaces to search. Default: the connection's namespace, or every namespace you can read.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Filter on fields, e.g. {"metadata.user": "ana"}, {"tags": "ops"} or {"kind": {"$in": ["fact", "preference"]}}.
    #[serde(default)]
    pub filter: Option<Value>,
    /// How many results (default 10, at most 100).
    #[serde(default)]
    pub k: Option<u32>,
    /// "hybrid" (default: meaning and keywords), "vector" (meaning only) or "keyword" (exact words).
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IdArgs {
    /// The memory's id (a UUID from add_memory, search_memory or list_memories).
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UpdateArgs {
    /// The memory's id.
    pub id: String,
    /// New text (the memory is re-indexed).
    #[serde(default)]
    pub text: Option<String>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// New tags (replace the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListArgs {
    /// Namespace to list. Default: the connection's namespace, or every namespace you can read.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Metadata filter, as for search_memory.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Page size (default 20, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MessageArg {
    /// Who said it: "user", "assistant", or a name.
    #[serde(default)]
    pub speaker: Option<String>,
    /// What was said.
    pub text: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AppendArgs {
    /// Namespace of the conversation. Default: the connection's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The conversation's id, e.g. "chat-2026-12-07"; the first append creates it.
    pub session: String,
    /// The new turns, in order.
    pub messages: Vec<MessageArg>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// The question to answer from memory.
    pub question: String,
    /// Namespaces to draw on. Default: the connection's namespace, or every namespace you can read.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// How many memories to ground the answer in (default: the server's).
    #[serde(default)]
    pub k: Option<u32>,
}

/// A tool's outcome as MCP wants it: the API's JSON, or a tool error
/// carrying engram's error code.
fn outcome(r: Result<Value, Failure>) -> Result<CallToolResult, ErrorData> {
    Ok(match r {
        Ok(Value::Object(o)) => CallToolResult::structured(Value::Object(o)),
        Ok(other) => CallToolResult::structured(json!({ "result": other })),
        Err(f) => CallToolResult::structured_error(json!({
            "error": { "code": f.code, "message": f.message }
        })),
    })
}

fn missing_namespace() -> Failure {
    Failure::new(
        None,
        "invalid_request",
        "no namespace: pass `namespace`, or connect with a default one (/mcp?namespace=... or engram mcp --namespace ...)",
    )
}

fn insert_some(o: &mut Map<String, Value>, k: &str, v: Option<impl serde::Serialize>) {
    if let Some(v) = v {
        o.insert(k.into(), serde_json::to_value(v).expect("plain JSON"));
    }
}

#[tool_router]
impl EngramMcp {
    pub fn new(api: Arc<dyn Api>, options: McpOptions) -> Self {
        EngramMcp {
            api,
            options,
            tool_router: Self::tool_router(),
        }
    }

    /// The connection's namespace: `?namespace=` of the MCP URL, else the
    /// configured default.
    fn default_namespace(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        let from_url = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.uri.query())
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "namespace")
                    .map(|(_, v)| v.into_owned())
            });
        from_url.or_else(|| self.options.default_namespace.clone())
    }

    fn namespace(
        &self,
        ctx: &RequestContext<RoleServer>,
        given: Option<String>,
    ) -> Result<String, Failure> {
        given
            .or_else(|| self.default_namespace(ctx))
            .ok_or_else(missing_namespace)
    }

    fn namespaces(&self, ctx: &RequestContext<RoleServer>, given: Option<Vec<String>>) -> Value {
        match given {
            Some(ns) if !ns.is_empty() => json!(ns),
            _ => json!(self.default_namespace(ctx).into_iter().collect::<Vec<_>>()),
        }
    }

    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        req: Result<ApiRequest, Failure>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = match req {
            Ok(req) => self.api.call(ctx, req).await,
            Err(f) => Err(f),
        };
        outcome(r)
    }

    #[tool(
        name = "add_memory",
        description = "Store memories for later: facts, preferences, decisions or events worth remembering beyond this conversation. Each memory is one self-contained text, optionally with metadata and tags. Returns each memory's id and whether it was new or a duplicate of one already stored (same text or client_id). The memories are searchable when this returns."
    )]
    async fn add_memory(
        &self,
        Parameters(a): Parameters<AddArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = self.namespace(&ctx, a.namespace).map(|ns| {
            let memories: Vec<Value> = a
                .memories
                .into_iter()
                .map(|m| {
                    let mut o = m.extra;
                    o.insert("text".into(), json!(m.text));
                    insert_some(&mut o, "metadata", m.metadata);
                    insert_some(&mut o, "tags", m.tags);
                    Value::Object(o)
                })
                .collect();
            ApiRequest::new(http::Method::POST, &["v1", "memories"])
                .query("wait", true)
                .body(json!({ "namespace": ns, "memories": memories }))
        });
        self.call(&ctx, req).await
    }

    #[tool(
        name = "search_memory",
        description = "Find stored memories relevant to a query (hybrid meaning + keyword search). Use it before answering anything that may depend on what was learned earlier: user preferences, past decisions, project facts, earlier conversations. Returns the best matches with their text, metadata, id and score."
    )]
    async fn search_memory(
        &self,
        Parameters(a): Parameters<SearchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut body = Map::new();
        body.insert("query".into(), json!(a.query));
        body.insert("namespaces".into(), self.namespaces(&ctx, a.namespaces));
        insert_some(&mut body, "filter", a.filter);
        insert_some(&mut body, "k", a.k);
        insert_some(&mut body, "mode", a.mode);
        let req = ApiRequest::new(http::Method::POST, &["v1", "search"]).body(Value::Object(body));
        self.call(&ctx, Ok(req)).await
    }

    #[tool(
        name = "get_memory",
        description = "Read one memory by id, with its metadata, tags and timestamps."
    )]
    async fn get_memory(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = ApiRequest::new(http::Method::GET, &["v1", "memories", &a.id]);
        self.call(&ctx, Ok(req)).await
    }

    #[tool(
        name = "update_memory",
        description = "Correct a stored memory: give its id and the new text, metadata or tags (what you give replaces the old value). Use it when a fact changed rather than adding a contradicting memory."
    )]
    async fn update_memory(
        &self,
        Parameters(a): Parameters<UpdateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut patch = Map::new();
        insert_some(&mut patch, "text", a.text);
        insert_some(&mut patch, "metadata", a.metadata);
        insert_some(&mut patch, "tags", a.tags);
        let req = ApiRequest::new(http::Method::PATCH, &["v1", "memories", &a.id])
            .query("wait", true)
            .body(Value::Object(patch));
        self.call(&ctx, Ok(req)).await
    }

    #[tool(
        name = "delete_memory",
        description = "Delete a memory that is wrong or no longer wanted. The delete is soft: an administrator can restore it until it is purged."
    )]
    async fn delete_memory(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = ApiRequest::new(http::Method::DELETE, &["v1", "memories", &a.id]);
        let r = self.api.call(&ctx, req).await;
        outcome(r.map(|_| json!({ "deleted": a.id })))
    }

    #[tool(
        name = "list_memories",
        description = "Page through stored memories in insertion order, optionally filtered by metadata. Pass next_cursor from one page to get the next. Use search_memory instead to find memories about something."
    )]
    async fn list_memories(
        &self,
        Parameters(a): Parameters<ListArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut body = Map::new();
        insert_some(
            &mut body,
            "namespace",
            a.namespace.or_else(|| self.default_namespace(&ctx)),
        );
        insert_some(&mut body, "filter", a.filter);
        body.insert("limit".into(), json!(a.limit.unwrap_or(20)));
        insert_some(&mut body, "cursor", a.cursor);
        let req = ApiRequest::new(http::Method::POST, &["v1", "memories", "list"])
            .body(Value::Object(body));
        self.call(&ctx, Ok(req)).await
    }

    #[tool(
        name = "append_messages",
        description = "Record turns of a conversation in a session, so later searches can find what was said (each message is indexed with its neighbouring turns and date). Give the session id and the new messages in order."
    )]
    async fn append_messages(
        &self,
        Parameters(a): Parameters<AppendArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = self.namespace(&ctx, a.namespace).map(|ns| {
            let messages: Vec<Value> = a
                .messages
                .into_iter()
                .map(|m| {
                    let mut o = m.extra;
                    o.insert("text".into(), json!(m.text));
                    insert_some(&mut o, "speaker", m.speaker);
                    Value::Object(o)
                })
                .collect();
            ApiRequest::new(
                http::Method::POST,
                &["v1", "sessions", &a.session, "messages"],
            )
            .query("wait", true)
            .body(json!({ "namespace": ns, "messages": messages }))
        });
        self.call(&ctx, req).await
    }

    #[tool(
        name = "ask",
        description = "Answer a question from stored memories: engram retrieves the most relevant memories and has its language model answer with numbered citations. Returns the answer and the memories it drew on."
    )]
    async fn ask(
        &self,
        Parameters(a): Parameters<AskArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut body = Map::new();
        body.insert("question".into(), json!(a.question));
        body.insert("namespaces".into(), self.namespaces(&ctx, a.namespaces));
        insert_some(&mut body, "k", a.k);
        let req = ApiRequest::new(http::Method::POST, &["v1", "ask"]).body(Value::Object(body));
        self.call(&ctx, Ok(req)).await
    }
}

/// What serving MCP can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MCP over stdio: {0}")]
    Stdio(String),
}

impl EngramMcp {
    /// Serve the tools on stdin/stdout until the client closes them
    /// (`engram mcp`). Nothing else may write to stdout meanwhile.
    pub async fn serve_stdio(self) -> Result<(), Error> {
        use rmcp::ServiceExt;
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::Stdio(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| Error::Stdio(e.to_string()))?;
        Ok(())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for EngramMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("engram", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "engram is your long-term memory. Search it (search_memory) before answering \
                 questions that may depend on earlier conversations, the user's preferences or \
                 project facts; store what is worth remembering (add_memory) as short, \
                 self-contained facts; correct outdated facts with update_memory.",
            )
    }
}

#[cfg(test)]
mod tests;
