//! The stdio bridge's [`Api`]: tool calls go to a running engram over HTTP
//! with the typed client, as the key it was given (`ENGRAM_API_KEY`).

use async_trait::async_trait;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use serde_json::Value;

use crate::{Api, ApiRequest, Failure};

/// Tool calls sent to engram at the client's URL.
pub struct ClientApi {
    client: engram_client::Client,
}

impl ClientApi {
    pub fn new(client: engram_client::Client) -> Self {
        ClientApi { client }
    }
}

#[async_trait]
impl Api for ClientApi {
    async fn call(
        &self,
        _ctx: &RequestContext<RoleServer>,
        req: ApiRequest,
    ) -> Result<Value, Failure> {
        let method = engram_client::Method::from_bytes(req.method.as_str().as_bytes())
            .expect("an HTTP method is a valid method");
        let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let query: Vec<(&str, String)> = req
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.client
            .request_json(method, &segments, &query, req.body.as_ref())
            .await
            .map_err(|e| match e {
                engram_client::Error::Api {
                    status,
                    code,
                    message,
                    ..
                } => Failure::new(Some(status), code, message),
                // engram did not answer (or not with JSON): the agent
                // should know it is the connection, not its request.
                other => Failure::new(None, "unavailable", other.to_string()),
            })
    }
}
