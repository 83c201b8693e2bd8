//! Who is calling: bearer tokens (API keys or JWTs) to a [`Principal`], and
//! per-caller rate limits.
//!
//! Authentication happens here, at the edge; authorization happens inside
//! the engine, which every handler calls with the principal built here.

use axum::http::header;
use axum::http::request::Parts;
use engram_auth::{apikey, JwtVerifier};
use engram_core::{Code, Principal};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::error::ApiError;
use crate::AppState;

/// How requests are authenticated.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// Verifies JWT bearer tokens; `None` when no JWT keys are configured.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// The principal of requests without credentials. `None` (the default)
    /// means every API route requires credentials; set only for local
    /// development (`auth.enabled = false`).
    pub anonymous: Option<Principal>,
}

/// Requests per second allowed per caller (tenant + subject), with a burst.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A keyed token bucket per caller.
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<(String, String)>,
}

impl Limiter {
    pub fn new(r: RateLimit) -> Self {
        Limiter {
            inner: RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst)),
        }
    }

    /// `Err(seconds to wait)` when the caller is over its rate.
    fn check(&self, p: &Principal) -> Result<(), u64> {
        let key = (p.tenant.clone(), p.subject.clone());
        self.inner.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })?;
        // Buckets of callers that went quiet are dropped now and then.
        if self.inner.len() > 10_000 {
            self.inner.retain_recent();
        }
        Ok(())
    }
}

/// The bearer token of a request: `Authorization: Bearer <t>` or `X-API-Key: <t>`.
fn credentials(parts: &Parts) -> Result<Option<&str>, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| unauthenticated("the Authorization header is not valid text"))?;
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(unauthenticated(
                "use `Authorization: Bearer <API key or JWT>`",
            ));
        }
        return Ok(Some(token.trim()));
    }
    if let Some(v) = parts.headers.get("x-api-key") {
        return v
            .to_str()
            .map(|t| Some(t.trim()))
            .map_err(|_| unauthenticated("the X-API-Key header is not valid text"));
    }
    Ok(None)
}

pub(crate) fn unauthenticated(msg: &str) -> ApiError {
    ApiError::new(Code::Unauthenticated, msg)
}

/// Authenticate a request and apply the caller's rate limit.
pub(crate) async fn authenticate(parts: &Parts, s: &AppState) -> Result<Principal, ApiError> {
    let p = match credentials(parts)? {
        Some(token) if apikey::is_api_key(token) => {
            apikey::authenticate(&s.engine.admin(), token).await?
        }
        Some(token) => match &s.cfg.auth.jwt {
            Some(v) => v.verify(token)?,
            None => {
                return Err(unauthenticated(
                    "JWT authentication is not configured on this server; use an API key",
                ))
            }
        },
        None => match &s.cfg.auth.anonymous {
            Some(p) => p.clone(),
            None => {
                return Err(unauthenticated(
                    "credentials required: send `Authorization: Bearer <API key or JWT>`",
                ))
            }
        },
    };
    if let Some(l) = &s.limiter {
        l.check(&p).map_err(|secs| {
            let mut e = ApiError::new(
                Code::RateLimited,
                "too many requests from this caller; retry later",
            );
            e.retry_after = Some(secs.max(1));
            e
        })?;
    }
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(p.with_request_id(request_id))
}
