//! Engine errors and request rejections to HTTP responses.
//!
//! Every error leaves as `{"error":{"code","message"}}`. The code comes from
//! the engine ([`engram_core::Error::code`]) or from the HTTP layer's own
//! rejections below; its status always comes from the one table,
//! [`engram_core::codes`].

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use engram_core::{Code, Error};
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The status of this error's code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body every error has.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        let retry_after = e.retry_after().map(|d| d.as_secs().max(1));
        if code.status() >= 500 {
            tracing::error!(error = %e, code = code.as_str(), "request failed");
        }
        ApiError {
            code,
            message: e.to_string(),
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
            A::Missing => Code::Unauthenticated,
            A::Expired => Code::TokenExpired,
            A::NotYetValid => Code::TokenNotYetValid,
            A::Malformed(_)
            | A::InvalidSignature
            | A::InvalidIssuer
            | A::InvalidAudience
            | A::UnsupportedAlgorithm(_)
            | A::UnknownKey(_)
            | A::InvalidClaims(_)
            | A::Config(_) => Code::InvalidToken,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Whether a body read failed because it took too long (tower-http's
/// request body timeout).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonDataError(_) => Code::InvalidBody,
            JsonRejection::JsonSyntaxError(_) => Code::MalformedJson,
            JsonRejection::MissingJsonContentType(_) => Code::UnsupportedMediaType,
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Code::PayloadTooLarge
            }
            JsonRejection::BytesRejection(b) if timed_out(b) => Code::RequestTimeout,
            _ => Code::InvalidBody,
        };
        // serde's message names the field and the problem; keep it.
        ApiError::new(code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(Code::InvalidPath, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(Code::InvalidQuery, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = (status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"engram\""),
            );
        }
        res
    }
}
