//! Loading verification keys, each bound to exactly one algorithm.
//!
//! Binding the algorithm to the key (not trusting the token's `alg` to say
//! how to use a key) is what rules out algorithm confusion: the RSA public
//! key is never an HMAC secret, and the HS secret never meets an RS256 token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};
use std::path::Path;

use crate::error::{clip, AuthError};

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
const MIN_HS256_SECRET_BYTES: usize = 32;
/// Smaller RSA keys are breakable. (`RsaPublicKey::new` already refuses
/// more than 4096 bits, as the verifier would.)
const MIN_RSA_BITS: usize = 2048;

/// A verification key and the single algorithm it may verify.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub alg: Algorithm,
    /// Set for JWKS keys only.
    pub kid: Option<String>,
    pub key: DecodingKey,
}

/// The accepted `alg` header values; everything else (`none`, HS384, PS256, …) is refused.
pub(crate) fn parse_alg(alg: &str) -> Result<Algorithm, AuthError> {
    match alg {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthError::UnsupportedAlgorithm(clip(other))),
    }
}

pub(crate) fn hs256(secret: &str) -> Result<Key, AuthError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::Config(format!(
            "hs256_secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
        )));
    }
    Ok(Key {
        alg: Algorithm::HS256,
        kid: None,
        key: DecodingKey::from_secret(secret.as_bytes()),
    })
}

/// An RSA or Ed25519 public key PEM; the type is read from the PEM itself.
pub(crate) fn from_pem_file(path: &Path) -> Result<Key, AuthError> {
    let name = path.display();
    let pem = read(path)?;
    // The label is checked first: a private key must not pass for a public one.
    let label = pem
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"));
    let err = |what: &str| AuthError::Config(format!("{name}: {what}"));
    let rsa_key = match label {
        Some("PUBLIC KEY") => RsaPublicKey::from_public_key_pem(&pem).ok(),
        Some("RSA PUBLIC KEY") => RsaPublicKey::from_pkcs1_pem(&pem).ok(),
        Some(other) => return Err(err(&format!("expected a public key PEM, found {other:?}"))),
        None => return Err(err("not a PEM file")),
    };
    if let Some(key) = rsa_key {
        rsa(key, None).map_err(|e| err(&e))
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        ed25519(key, None).map_err(|e| err(&e))
    } else {
        Err(err("not an RSA (up to 4096 bits) or Ed25519 public key"))
    }
}

/// Every key of a local JWKS file; each needs a unique `kid`.
pub(crate) fn from_jwks_file(path: &Path) -> Result<Vec<Key>, AuthError> {
    let name = path.display();
    let set: JwkSet = serde_json::from_str(&read(path)?)
        .map_err(|e| AuthError::Config(format!("{name}: not a JWKS document: {e}")))?;
    let mut keys: Vec<Key> = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = match jwk.common.key_id.as_deref() {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => return Err(AuthError::Config(format!("{name}: key #{i} has no kid"))),
        };
        let err = |what: &str| AuthError::Config(format!("{name}: key {kid:?}: {what}"));
        if keys.iter().any(|k| k.kid.as_deref() == Some(&*kid)) {
            return Err(err("duplicate kid"));
        }
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(err("not a signature key (use != \"sig\")"));
        }
        let key = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                rsa_components(&p.n, &p.e).and_then(|key| rsa(key, Some(kid.clone())))
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                DecodingKey::from_ed_components(&p.x)
                    .map_err(|_| "x is not base64url".to_owned())
                    .and_then(|key| ed25519(key, Some(kid.clone())))
            }
            _ => Err("unsupported key type (only RSA and Ed25519 keys are accepted)".to_owned()),
        }
        .map_err(|e| err(&e))?;
        // A JWK may pin its algorithm; it must then be the one its type is bound to.
        let pinned = jwk.common.key_algorithm;
        let bound = if key.alg == Algorithm::RS256 {
            KeyAlgorithm::RS256
        } else {
            KeyAlgorithm::EdDSA
        };
        if pinned.is_some_and(|a| a != bound) {
            return Err(err(&format!("alg must be {bound:?} for this key type")));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))
}

fn rsa_components(n: &str, e: &str) -> Result<RsaPublicKey, String> {
    let decode = |v: &str| {
        URL_SAFE_NO_PAD
            .decode(v)
            .map(|b| BigUint::from_bytes_be(&b))
            .map_err(|_| "n or e is not base64url".to_owned())
    };
    RsaPublicKey::new(decode(n)?, decode(e)?)
        .map_err(|_| "invalid RSA key (bad exponent or modulus above 4096 bits)".to_owned())
}

fn rsa(key: RsaPublicKey, kid: Option<String>) -> Result<Key, String> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus must be at least {MIN_RSA_BITS} bits (found {bits})"
        ));
    }
    let key = DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be());
    Ok(Key {
        alg: Algorithm::RS256,
        kid,
        key,
    })
}

/// An Ed25519 key, checked now to be a valid curve point rather than failing every token later.
fn ed25519(key: DecodingKey, kid: Option<String>) -> Result<Key, String> {
    // With an empty signature this only builds the verifier, which parses the key.
    jsonwebtoken::crypto::verify("", b"", &key, Algorithm::EdDSA)
        .map_err(|_| "invalid Ed25519 public key".to_owned())?;
    Ok(Key {
        alg: Algorithm::EdDSA,
        kid,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_algorithms_are_accepted() {
        assert_eq!(parse_alg("HS256"), Ok(Algorithm::HS256));
        assert_eq!(parse_alg("RS256"), Ok(Algorithm::RS256));
        assert_eq!(parse_alg("EdDSA"), Ok(Algorithm::EdDSA));
        for alg in ["none", "None", "hs256", "HS512", "PS256", "ES256", ""] {
            assert!(
                matches!(parse_alg(alg), Err(AuthError::UnsupportedAlgorithm(_))),
                "{alg}"
            );
        }
    }

    #[test]
    fn rsa_keys_need_2048_to_4096_bits() {
        let n = |bytes: usize| URL_SAFE_NO_PAD.encode(vec![0xabu8; bytes]);
        let load = |n: &str, e: &str| rsa_components(n, e).and_then(|k| rsa(k, None));
        assert!(load(&n(256), "AQAB").is_ok());
        assert_eq!(
            load(&n(255), "AQAB").unwrap_err(),
            "RSA modulus must be at least 2048 bits (found 2040)"
        );
        assert!(load(&n(513), "AQAB")
            .unwrap_err()
            .contains("above 4096 bits"));
        assert!(load(&n(256), "AA").unwrap_err().contains("bad exponent"));
    }
}
