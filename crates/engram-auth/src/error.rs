//! The one error type of the crate.

/// Why a token was refused, or why the verifier could not be built.
///
/// Every variant but [`AuthError::Config`] is the caller's fault (HTTP 401);
/// `Config` is the operator's (fail at start-up, or HTTP 500). Messages never
/// contain key material, and values taken from a token are clipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token issuer is not accepted")]
    InvalidIssuer,
    #[error("token audience is not accepted")]
    InvalidAudience,
    #[error("token algorithm is not accepted: {0}")]
    UnsupportedAlgorithm(String),
    #[error("token names an unknown key id: {0}")]
    UnknownKey(String),
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    #[error("JWT configuration: {0}")]
    Config(String),
}

/// A token-supplied value made safe to put in a message or a log line:
/// control characters dropped, at most 64 characters kept.
pub(crate) fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_drops_control_characters_and_bounds_length() {
        assert_eq!(super::clip("a\nb\u{1b}[31m"), "ab[31m");
        assert_eq!(super::clip(&"x".repeat(100)).len(), 64);
    }
}
