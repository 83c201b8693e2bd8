//! API keys: `egk_<id>_<secret>` tokens, shown once, stored as a SHA-256 of
//! the secret. The secret is 256 random bits, so a plain hash is enough (no
//! password-stretching needed) and comparison is constant-time.
//!
//! The token format lives here, beside the JWT verifier: [`mint`] makes a
//! key's credential (the engine stores the record, `StoreAdmin::create_api_key`)
//! and [`authenticate`] turns a presented token back into the key's
//! [`Principal`].

use engram_core::apikey::MintedKey;
use engram_core::{Error, Principal, StoreAdmin};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "egk_";

/// A new random key id and token, with the hash to store.
pub fn mint() -> MintedKey {
    let mut rng = rand::thread_rng();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let token = format!("{PREFIX}{id}_{secret}");
    let secret_hash = hash_secret(&secret);
    MintedKey {
        id,
        token,
        secret_hash,
    }
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

/// The principal an API key stands for: its tenant, role, permissions and
/// namespace patterns, with `key:<id>` as the subject. Unknown, malformed
/// and revoked keys are all just "invalid" (401): the answer does not tell
/// them apart. A store that cannot be read is the store's error (503).
pub async fn authenticate(keys: &StoreAdmin, token: &str) -> Result<Principal, Error> {
    let invalid = || Error::Unauthenticated("invalid API key".into());
    let (id, secret) = parse(token).ok_or_else(invalid)?;
    let key = keys.key_by_id(id).await?.ok_or_else(invalid)?;
    if key.revoked_at.is_some() || !verify_secret(secret, &key.secret_hash) {
        return Err(invalid());
    }
    let mut p = Principal::new(key.tenant, format!("key:{}", key.id), key.role)
        .with_permissions(key.permissions);
    p.namespaces = key.namespaces;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_verify() {
        let k = mint();
        assert!(is_api_key(&k.token));
        let (pid, secret) = parse(&k.token).expect("well-formed");
        assert_eq!(pid, k.id);
        assert!(verify_secret(secret, &k.secret_hash));
        assert!(!verify_secret(
            &secret.replace('a', "b").replace('0', "1"),
            &k.secret_hash
        ));
        assert_ne!(k.token, mint().token);
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
