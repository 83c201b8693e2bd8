//! Limits of the HTTP layer itself, answered in the JSON error shape like
//! everything else.
//!
//! hyper rejects request heads beyond its own limits with bare, empty
//! responses before any middleware runs; the binary therefore sets hyper's
//! limits well above these (see `engram`'s `serve.rs`), so that what a
//! client can reasonably send past them gets `uri_too_long` /
//! `headers_too_large` here. What remains hyper's: a URI over 64 KiB (its
//! fixed maximum), a head over the binary's buffer, malformed HTTP and a
//! client that never finishes its head (the connection is closed).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engram_core::Code;

use crate::error::ApiError;

/// Longest path and query string.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most request headers, and their total size (names and values).
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// 414 / 431 as JSON for heads past the limits above.
pub(crate) async fn head_limits(req: Request, next: Next) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            Code::UriTooLong,
            format!("the URI is {uri} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            Code::HeadersTooLarge,
            format!(
                "{} headers of {bytes} bytes; the limits are {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The last word on error bodies: any error response a layer produced
/// without the JSON shape (a tower layer's bare status) gets it, with the
/// code of its status.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return res;
    }
    let code = match status {
        StatusCode::NOT_FOUND => Code::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => Code::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::URI_TOO_LONG => Code::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Code::HeadersTooLarge,
        StatusCode::TOO_MANY_REQUESTS => Code::RateLimited,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidBody,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::Forbidden,
        StatusCode::SERVICE_UNAVAILABLE => Code::BackendUnavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::Timeout,
        s if s.is_server_error() => Code::Internal,
        _ => Code::InvalidRequest,
    };
    let retry_after = res.headers().get(header::RETRY_AFTER).cloned();
    let message = status
        .canonical_reason()
        .unwrap_or("request failed")
        .to_lowercase();
    let mut out = ApiError::new(code, message).into_response();
    // The status stays what the layer chose (e.g. 400 for a code whose
    // table status differs), and so does its Retry-After.
    *out.status_mut() = status;
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}
