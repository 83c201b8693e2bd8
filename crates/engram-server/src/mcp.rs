//! `/mcp`: engram's MCP tools over streamable HTTP. Each tool call is sent
//! to this server's own API router in-process, with the credentials of the
//! MCP request, so a tool does exactly what the API route does for that
//! caller: same authentication, authorization (a scoped key sees only its
//! namespaces through MCP too), validation, audit, metrics and error codes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use engram_mcp::{Api, ApiRequest, EngramMcp, Failure, McpOptions};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::RoleServer;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

use crate::AppState;

/// The request headers a tool call carries over to the API request.
const FORWARDED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
];

/// The API router, called in-process.
struct RouterApi {
    api: Router,
    max_body: usize,
}

#[async_trait::async_trait]
impl Api for RouterApi {
    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        req: ApiRequest,
    ) -> Result<Value, Failure> {
        let mut b = axum::http::Request::builder()
            .method(req.method.clone())
            .uri(req.path_and_query());
        if let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() {
            for h in &FORWARDED {
                if let Some(v) = parts.headers.get(h) {
                    b = b.header(h, v);
                }
            }
        }
        let body = match &req.body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).expect("JSON values serialize"))
            }
            None => Body::empty(),
        };
        let request = b
            .body(body)
            .map_err(|e| Failure::new(None, "invalid_request", e.to_string()))?;
        let res = self
            .api
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = res.status().as_u16();
        // Answers of the API are JSON documents bounded like its requests;
        // a larger one is not something to hand a model whole.
        let bytes = axum::body::to_bytes(res.into_body(), self.max_body.max(1 << 20) * 8)
            .await
            .map_err(|e| Failure::new(Some(status), "internal", e.to_string()))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| Failure::new(Some(status), "internal", format!("not JSON: {e}")))?
        };
        if status >= 400 {
            return Err(Failure::from_body(status, &value));
        }
        Ok(value)
    }
}

/// Refuse an MCP request without valid credentials at the door, with the
/// API's 401 (and `WWW-Authenticate`), as every API route would.
async fn door(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = crate::auth::authenticate(&parts, &s).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// `/mcp` for `api` (the complete API router).
pub(crate) fn routes(api: Router, state: AppState) -> Router {
    let options = McpOptions {
        default_namespace: state.cfg.mcp_default_namespace.clone(),
    };
    let max_body = state.cfg.max_body_bytes;
    let tools = EngramMcp::new(Arc::new(RouterApi { api, max_body }), options);
    // Stateless and JSON answers: every POST stands alone, so any node of a
    // cluster can serve any call (no session affinity behind a load
    // balancer). Host checking is off: every request must carry an engram
    // credential, which a DNS-rebinding page cannot supply.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    let mut config = config;
    config.max_request_body_bytes = max_body;
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, door))
}
