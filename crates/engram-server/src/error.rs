//! Engine errors and request rejections to HTTP responses.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use engram_core::Error;
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        // The one place where engine errors get their status and stable code.
        let (status, code, retry_after) = match &e {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_request", None),
            Error::InvalidFilter(_) => (StatusCode::BAD_REQUEST, "invalid_filter", None),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Error::MemoryNotFound(_) => (StatusCode::NOT_FOUND, "memory_not_found", None),
            Error::NamespaceNotFound(_) => (StatusCode::NOT_FOUND, "namespace_not_found", None),
            Error::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found", None),
            Error::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found", None),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            Error::LegalHold(_) => (StatusCode::CONFLICT, "legal_hold", None),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            Error::Unavailable { retry_after, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                Some(retry_after.as_secs().max(1)),
            ),
            Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
            Error::Embedding(_) => (StatusCode::UNPROCESSABLE_ENTITY, "embedding_failed", None),
            Error::LlmNotConfigured => (StatusCode::NOT_IMPLEMENTED, "llm_not_configured", None),
            Error::LlmUnavailable { retry_after, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "llm_unavailable",
                Some(retry_after.as_secs().max(1)),
            ),
            Error::LlmTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "llm_timeout", None),
            Error::LlmFailed(_) => (StatusCode::BAD_GATEWAY, "llm_error", None),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, code, "request failed");
        }
        ApiError {
            status,
            code,
            message,
            retry_after,
        }
    }
}

impl From<engram_auth::AuthError> for ApiError {
    fn from(e: engram_auth::AuthError) -> Self {
        use engram_auth::AuthError as A;
        // Every token problem is a 401; the code says which, the message
        // never echoes the token.
        let code = match &e {
            A::Missing => "unauthenticated",
            A::Malformed(_) => "invalid_token",
            A::Expired => "token_expired",
            A::NotYetValid => "token_not_yet_valid",
            A::InvalidSignature => "invalid_token",
            A::InvalidIssuer => "invalid_token",
            A::InvalidAudience => "invalid_token",
            A::UnsupportedAlgorithm(_) => "invalid_token",
            A::UnknownKey(_) => "invalid_token",
            A::InvalidClaims(_) => "invalid_token",
            A::Config(_) => "invalid_token",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "payload_too_large"
            }
            _ => "invalid_body",
        };
        // serde's message names the field and the problem; keep it.
        ApiError::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut res = (self.status, body).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"engram\""),
            );
        }
        res
    }
}
