//! Operator configuration of the verifier.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where the verification keys come from and which claims to check.
///
/// Every field is optional in a config file (missing ones take the
/// [`Default`] values); unknown fields are an error so that a typo such as
/// `audiance` does not silently switch a check off.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 (and only HS256); at least 32 bytes.
    pub hs256_secret: Option<String>,
    /// PEM public keys: an RSA key verifies RS256 only, an Ed25519 key EdDSA only.
    pub public_keys: Vec<PathBuf>,
    /// Local JWKS file of RSA and Ed25519 (`OKP`) keys, each with a `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` value, when set.
    pub issuer: Option<String>,
    /// Required member of `aud` (a string or an array in the token), when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Claim holding the tenant.
    pub tenant_claim: String,
    /// Claim holding the role (`admin`, `writer` or `reader`).
    pub role_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            public_keys: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            tenant_claim: "tenant".into(),
            role_claim: "role".into(),
        }
    }
}

// Hand-written so that the secret never reaches a log line.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("public_keys", &self.public_keys)
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("tenant_claim", &self.tenant_claim)
            .field("role_claim", &self.role_claim)
            .finish()
    }
}
