//! The OpenAPI 3.1 document: generated from the handlers' declarations and
//! the request / response types (utoipa), served at `/openapi.json`, and
//! committed as `docs/openapi.json` (a test fails when the two drift apart:
//! regenerate with `engram openapi > docs/openapi.json`).
//!
//! Every operation lists the error responses of the one table of codes
//! ([`engram_core::codes`]): per status, the codes that answer with it, and
//! the `{"error": {"code", "message"}}` body whose `code` is an enum of the
//! table's codes.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use engram_core::requests::MemoryInput;
use engram_core::{AuditEvent, Code, Kind, NamespaceInfo, ProbeReport, Provenance};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::views::{CreatedBatch, CreatedView, ErrorBody, QuarantineView, Status};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "engram",
        description = "Long-term memory for AI agents: memories in namespaces, hybrid search, \
                       RAG, governance. Every error is `{\"error\": {\"code\", \"message\"}}` \
                       with a code from the table in the `ErrorCode` schema (and \
                       docs/errors.md).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(schemas(ErrorBody, CreateOne, CreateBatch, AskEvent)),
    tags(
        (name = "memories", description = "Write, read, change and delete memories"),
        (name = "sessions", description = "Conversations: append messages to a session, read it in order, delete it"),
        (name = "search", description = "Search, ask (RAG), embeddings"),
        (name = "namespaces", description = "Namespaces and their settings"),
        (name = "keys", description = "API keys (admins)"),
        (name = "audit", description = "The hash-chained audit log (admins)"),
        (name = "jobs", description = "Embedding jobs and dead letters"),
        (name = "operations", description = "Health, readiness, metrics, counts, quarantine"),
    )
)]
pub struct ApiDoc;

/// API key or JWT as a bearer token, or an API key in `X-API-Key`.
struct Security;

impl Modify for Security {
    fn modify(&self, o: &mut utoipa::openapi::OpenApi) {
        let c = o.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`egk_...`, from `POST /v1/keys` or `engram keys create`) \
                         or a JWT from the configured identity provider.",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key, for clients that cannot send a bearer token.",
            ))),
        );
    }
}

/// The `code` of an error body: one of the table's codes, each described.
pub(crate) fn code_schema() -> Schema {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    let described: Map<String, Value> = Code::ALL
        .iter()
        .map(|c| {
            (
                c.as_str().to_string(),
                json!(format!("{}: {}", c.status(), c.meaning())),
            )
        })
        .collect();
    let mut ext = utoipa::openapi::extensions::Extensions::default();
    ext.insert("x-enum-descriptions".into(), Value::Object(described));
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(codes))
        .description(Some("A stable error code (see `x-enum-descriptions`)."))
        .extensions(Some(ext))
        .into()
}

/// One memory to create: its namespace and the memory's fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateOne {
    /// 1 to 128 letters, digits and `_-:./@`; created on first use.
    #[schema(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    namespace: String,
    text: String,
    kind: Option<Kind>,
    metadata: Option<Map<String, Value>>,
    tags: Option<Vec<String>>,
    provenance: Option<Provenance>,
    /// Caller-chosen idempotency key, unique per namespace.
    client_id: Option<String>,
    /// When what the memory records happened (default: now).
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds from now until the memory expires (at most 100 years); or give `expires_at`.
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    ttl_seconds: Option<u64>,
    /// PII flags (`email`, `phone`, `card`, `name` or a custom lowercase word).
    pii: Option<Vec<String>>,
}

/// Several memories in one namespace, stored in one transaction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateBatch {
    #[schema(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    namespace: String,
    memories: Vec<MemoryInput>,
}

/// The body of `POST /v1/memories`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
pub enum CreateBody {
    One(CreateOne),
    Batch(CreateBatch),
}

/// What `POST /v1/memories` answers: the outcome of one memory, or of each
/// memory of a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateResult {
    One(CreatedView),
    Batch(CreatedBatch),
}

/// `event: sources`, first: the model and the memories in the prompt.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcesEvent {
    pub model: String,
    pub sources: Vec<engram_core::Source>,
}

/// `event: token`: the next piece of the answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenEvent {
    pub text: String,
}

/// `event: done`, last: the whole answer with its citations.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoneEvent {
    pub answer: String,
    pub citations: Vec<engram_core::Citation>,
    pub timings: engram_core::rag::Timings,
    pub model: String,
}

/// The data of one server-sent event of a streamed `/v1/ask`: `sources`,
/// then `token`s, then `done`, or `error` (`{"error": {...}}`) if the answer
/// broke off.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum AskEvent {
    Sources(SourcesEvent),
    Token(TokenEvent),
    Done(DoneEvent),
    Error(ErrorBody),
}

/// One server-sent event of a streamed `/v1/ask`, as the stream carries
/// it: its name and, as a JSON string, its data (an [`AskEvent`]).
pub struct AskStreamEvent;

impl PartialSchema for AskStreamEvent {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .content_schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "AskEvent",
            ))))
            .description(Some("An `AskEvent`, as JSON."));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["sources", "token", "done", "error"])),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .description(Some(
                "`sources` first, then `token`s, then `done` (or `error` if the answer broke off).",
            ))
            .into()
    }
}

impl ToSchema for AskStreamEvent {}

/// `/readyz`: `{"status": "ready"}`, the error, or (`verbose`) the report.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
pub enum ReadyBody {
    Ready(Status),
    Error(ErrorBody),
    Report(ProbeReport),
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceList {
    pub namespaces: Vec<NamespaceInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::views::KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<crate::views::JobView>,
}

#[derive(Serialize, ToSchema)]
pub struct QuarantineList {
    pub entries: Vec<QuarantineView>,
}

/// A page of audit events; `next_after` is the `after` of the next page.
/// Events keep their tenant: each event's hash covers it.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_after: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Embedding {
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

/// A vector as `encoding_format` asked: a list of floats, or (`base64`) the
/// little-endian `f32` bytes in standard base64, as OpenAI's clients expect.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

/// An OpenAI chat-completions request. Fields not listed here (`tools`,
/// `stop`, `top_p`, ...) are forwarded to the LLM server unchanged.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletionBody {
    /// The LLM server's model; default: the configured `[llm] model`.
    model: Option<String>,
    /// The conversation so far, OpenAI-style.
    #[schema(min_items = 1)]
    messages: Vec<ChatMessageBody>,
    /// Answer with server-sent events, as the LLM server streams them.
    stream: Option<bool>,
    /// Default and limit: `[llm] max_tokens` and `max_tokens_limit`.
    #[schema(minimum = 1, maximum = 4096)]
    max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    /// The namespace when no `X-Engram-Namespace` header names one.
    #[schema(pattern = r"^[A-Za-z0-9_\-:./@]{1,128}$")]
    user: Option<String>,
}

/// One message of a chat.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatMessageBody {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    role: String,
    /// The text (or OpenAI's list of content parts).
    content: String,
}

/// OpenAI's model list (`GET /v1/models`).
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// A model this server serves.
#[derive(Serialize, ToSchema)]
pub struct ModelCard {
    /// The name to pass as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds; engram does not track when a model was published: 0.
    pub created: i64,
    pub owned_by: String,
    /// What engram uses it for: `embedding`, or `chat` (the LLM server's
    /// models, answered through `/v1/chat/completions`).
    pub purpose: String,
    /// The embedding's dimensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// The model version engram records with each vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// OpenAI's embeddings list, plus the model version engram records.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub model_version: String,
}

/// The statuses of the table's codes, each with the codes that answer with it.
fn statuses() -> BTreeMap<u16, Vec<Code>> {
    let mut out: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for c in Code::ALL {
        out.entry(c.status()).or_default().push(*c);
    }
    out
}

/// Add the error responses to every operation, and the `Retry-After`
/// header where the table says one is sent.
fn add_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::ContentBuilder;
    let body: RefOr<Schema> = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
    let c = doc.components.get_or_insert_with(Default::default);
    for (status, codes) in statuses() {
        let list: Vec<String> = codes.iter().map(|c| format!("`{}`", c.as_str())).collect();
        let mut r = ResponseBuilder::new()
            .description(format!("Error: {}", list.join(", ")))
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(body.clone())).build(),
            );
        if status == 429 || status == 503 {
            r = r.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(u64::schema()))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            );
        }
        c.responses
            .insert(format!("E{status}"), RefOr::T(r.build()));
    }
    let each = |op: &mut Operation| {
        for status in statuses().keys() {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| {
                    RefOr::Ref(utoipa::openapi::Ref::from_response_name(format!(
                        "E{status}"
                    )))
                });
        }
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            each(op);
        }
    }
}

/// The finished document as JSON: the router's operations plus the error
/// responses.
pub(crate) fn finish(mut doc: utoipa::openapi::OpenApi) -> String {
    add_errors(&mut doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut out = doc.to_pretty_json().expect("the document serializes");
    out.push('\n');
    out
}

/// The document (what `/openapi.json` serves).
pub fn document() -> String {
    finish(crate::routes::api().split_for_parts().1)
}

/// `GET /openapi.json`.
pub(crate) async fn serve_json(State(s): State<AppState>) -> Response {
    let mut res = s.openapi.as_str().to_owned().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document; regenerate it with
    /// `ENGRAM_WRITE_DOCS=1 cargo test -p engram-server --lib openapi`.
    #[test]
    fn docs_openapi_json_is_the_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let want = document();
        if std::env::var_os("ENGRAM_WRITE_DOCS").is_some() {
            std::fs::write(path, &want).expect("writing docs/openapi.json");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/openapi.json is out of date: run \
             `ENGRAM_WRITE_DOCS=1 cargo test -p engram-server --lib openapi`"
        );
    }

    /// The single-create schema is the memory's fields plus its namespace:
    /// it is written out by hand (a flattened `deny_unknown_fields` type
    /// cannot be expressed), so it must not drift from `MemoryInput`.
    #[test]
    fn create_one_is_memory_input_and_a_namespace() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        let props = |name: &str| -> Vec<String> {
            let mut p: Vec<String> = doc["components"]["schemas"][name]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} has properties"))
                .keys()
                .cloned()
                .collect();
            p.sort();
            p
        };
        let mut want = props("MemoryInput");
        want.push("namespace".into());
        want.sort();
        assert_eq!(props("CreateOne"), want);
    }

    /// Every error status of the code table is documented on every operation.
    #[test]
    fn every_operation_documents_every_error_status() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let ops: usize = paths.values().map(|i| i.as_object().unwrap().len()).sum();
        assert_eq!(ops, 31, "{:?}", paths.keys());
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                for status in statuses().keys() {
                    assert!(
                        op["responses"].get(status.to_string()).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
        let codes = &doc["components"]["schemas"]["ErrorDetail"];
        assert!(codes.to_string().contains("legal_hold"), "{codes}");
    }
}
