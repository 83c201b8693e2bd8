//! API keys: `egk_<id>_<secret>` tokens, shown once, stored as a SHA-256 of
//! the secret. The secret is 256 random bits, so a plain hash is enough (no
//! password-stretching needed) and comparison is constant-time.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::{Permission, Role};

const PREFIX: &str = "egk_";

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    pub permissions: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub secret_hash: String,
}

/// What an admin asks for when creating a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// A freshly created key: the only time the token is available.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Send as `Authorization: Bearer <token>`; it is not stored and cannot be shown again.
    pub token: String,
}

/// A new random key id and token, with the hash to store.
pub fn generate() -> (String, String, String) {
    let mut rng = rand::thread_rng();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let token = format!("{PREFIX}{id}_{secret}");
    let hash = hash_secret(&secret);
    (id, token, hash)
}

/// Whether a bearer token looks like an API key (rather than a JWT).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Split a token into `(id, secret)`; `None` if it is not well-formed.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 64)).then_some((id, secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    presented.len() == stored_hash.len()
        && presented
            .bytes()
            .zip(stored_hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_verify() {
        let (id, token, hash) = generate();
        assert!(is_api_key(&token));
        let (pid, secret) = parse(&token).expect("well-formed");
        assert_eq!(pid, id);
        assert!(verify_secret(secret, &hash));
        assert!(!verify_secret(
            &secret.replace('a', "b").replace('0', "1"),
            &hash
        ));
        let (_, other, _) = generate();
        assert_ne!(token, other);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for t in [
            "",
            "egk_",
            "egk_abc_def",
            "egk_0123456789abcdef",
            "egk_0123456789abcdeg_0000000000000000000000000000000000000000000000000000000000000000",
            "xyz_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
            "egk_0123456789abcdef_000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(parse(t).is_none(), "{t}");
        }
    }
}
