//! The one table of engram's error codes: each stable snake_case code with
//! its HTTP status and what it means to a client.
//!
//! Every error engram answers carries one of these codes
//! (`{"error": {"code", "message"}}`). The engine picks the code
//! ([`crate::Error::code`]); the HTTP layer takes the status from here, and
//! the API reference (`docs/errors.md`, the OpenAPI document) is rendered from
//! [`Code::ALL`]. The status is a plain number so that the engine stays free
//! of any HTTP crate. Codes are part of the API: add new ones, never rename.

macro_rules! codes {
    ($( $variant:ident = ($status:literal, $code:literal, $meaning:literal), )*) => {
        /// A stable error code. See the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( #[doc = $meaning] $variant, )*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// The HTTP status answered with this code.
            pub const fn status(self) -> u16 {
                match self { $( Code::$variant => $status, )* }
            }

            /// What the code means, for the API reference.
            pub const fn meaning(self) -> &'static str {
                match self { $( Code::$variant => $meaning, )* }
            }
        }
    };
}

codes! {
    // The request itself.
    MalformedJson = (400, "malformed_json", "The body is not valid JSON."),
    InvalidBody = (422, "invalid_body", "The JSON body does not have the request's shape: a missing or unknown field, or a value of the wrong type."),
    InvalidQuery = (400, "invalid_query", "The query string cannot be parsed: an unknown parameter or a value of the wrong type."),
    InvalidPath = (400, "invalid_path", "A path parameter is malformed (for example an id that is not a UUID)."),
    UnsupportedMediaType = (415, "unsupported_media_type", "The body must be sent as `content-type: application/json`."),
    PayloadTooLarge = (413, "payload_too_large", "The request body is larger than the server accepts (`max_body_bytes`)."),
    UriTooLong = (414, "uri_too_long", "The request's URI (path and query string) is longer than the server accepts."),
    HeadersTooLarge = (431, "headers_too_large", "The request has too many headers, or they are too large."),
    RequestTimeout = (408, "request_timeout", "The request body did not arrive in time."),
    RouteNotFound = (404, "route_not_found", "No route has this path."),
    MethodNotAllowed = (405, "method_not_allowed", "The route exists but not with this method."),
    // Values.
    InvalidRequest = (400, "invalid_request", "The request is well-formed but asks for something invalid; the message says what."),
    OutOfRange = (400, "out_of_range", "A number or a time is outside its documented range (k, limit, TTL, expiry, weights, max_tokens, temperature, ...)."),
    InvalidText = (400, "invalid_text", "A text is empty after trimming, or a string contains a NUL character."),
    InvalidNamespace = (400, "invalid_namespace", "A namespace name is not 1 to 128 characters of letters, digits and `_-:./@`."),
    InvalidMetadata = (400, "invalid_metadata", "A metadata key is empty or contains '.', or metadata nests too deeply."),
    InvalidTag = (400, "invalid_tag", "A tag is not 1 to 128 bytes without control characters."),
    InvalidFilter = (400, "invalid_filter", "The filter cannot be parsed: an unknown field or operator, a value of the wrong type, or too deep or large."),
    InvalidCursor = (400, "invalid_cursor", "The pagination cursor was not issued by this server."),
    InvalidSession = (400, "invalid_session", "A session id is not 1 to 256 bytes without control characters, or a speaker name is too long."),
    InvalidPosition = (400, "invalid_position", "Message positions in one append do not strictly increase, or a position is above 9223372036854775807."),
    LimitExceeded = (413, "limit_exceeded", "A text, query, metadata object, tag list or batch is larger than its limit."),
    // Credentials and rights.
    Unauthenticated = (401, "unauthenticated", "No credentials were sent, or the API key is unknown or revoked."),
    InvalidToken = (401, "invalid_token", "The bearer token is not a valid JWT for this server."),
    TokenExpired = (401, "token_expired", "The JWT has expired."),
    TokenNotYetValid = (401, "token_not_yet_valid", "The JWT is not valid yet (`nbf`)."),
    Forbidden = (403, "forbidden", "The caller's role or namespaces do not allow this."),
    RateLimited = (429, "rate_limited", "Too many requests from this caller; retry after `Retry-After` seconds."),
    // Records.
    MemoryNotFound = (404, "memory_not_found", "No memory with this id is visible to the caller."),
    NamespaceNotFound = (404, "namespace_not_found", "The namespace does not exist in the caller's tenant."),
    JobNotFound = (404, "job_not_found", "No job with this id in the caller's tenant."),
    SessionNotFound = (404, "session_not_found", "The session has no live messages in this namespace visible to the caller."),
    KeyNotFound = (404, "key_not_found", "No API key with this id in the caller's tenant."),
    Conflict = (409, "conflict", "The change conflicts with the record's state (for example another live memory has this text)."),
    PositionConflict = (409, "position_conflict", "Another live message of the session already has this position (a retry of the same message is not a conflict)."),
    LegalHold = (409, "legal_hold", "The memory is under legal hold: it cannot be changed, expired or deleted."),
    // The server and its back-ends.
    EmbeddingFailed = (422, "embedding_failed", "The embedding model failed on this input."),
    Internal = (500, "internal", "A bug or an unexpected failure; the request id in `x-request-id` finds it in the logs."),
    CorruptRecord = (500, "corrupt_record", "A stored record cannot be read back; it is quarantined (see `/v1/quarantine`)."),
    LlmNotConfigured = (501, "llm_not_configured", "`/v1/ask` needs an LLM server (`[llm]`), and none is configured."),
    LlmError = (502, "llm_error", "The LLM server answered with an error."),
    BackendUnavailable = (503, "backend_unavailable", "A back-end (store, queue, cache, embedder) is unavailable; retry after `Retry-After` seconds. Nothing acknowledged is lost."),
    LlmUnavailable = (503, "llm_unavailable", "The LLM server cannot be reached; retry after `Retry-After` seconds."),
    DocsUnavailable = (503, "docs_unavailable", "This build has no API page assets (see the README: `scripts/fetch-swagger-ui.sh`)."),
    Timeout = (504, "timeout", "Waiting for a back-end took longer than allowed."),
    LlmTimeout = (504, "llm_timeout", "The LLM server did not answer in time."),
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The table as Markdown, for `docs/errors.md` (checked against the code by a test).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Generated from `crates/engram-core/src/codes.rs`; a test \
         fails when this file and the table drift apart.\n\n\
         Every error is `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`. \
         The code is stable, the message is for people. 503 answers carry `Retry-After`.\n\n\
         | status | code | meaning |\n| --- | --- | --- |\n",
    );
    for c in Code::ALL {
        out.push_str(&format!(
            "| {} | `{}` | {} |\n",
            c.status(),
            c.as_str(),
            c.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{}",
                c.as_str()
            );
            assert!((400..600).contains(&c.status()), "{}", c.as_str());
            assert!(c.meaning().ends_with('.'), "{}", c.as_str());
        }
    }
}

#[cfg(test)]
mod docs {
    /// `docs/errors.md` is the table rendered; regenerate it with
    /// `ENGRAM_WRITE_DOCS=1 cargo test -p engram-core codes`.
    #[test]
    fn docs_errors_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let want = super::markdown();
        if std::env::var_os("ENGRAM_WRITE_DOCS").is_some() {
            std::fs::write(path, &want).expect("writing docs/errors.md");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/errors.md is out of date: run `ENGRAM_WRITE_DOCS=1 cargo test -p engram-core codes`"
        );
    }
}
