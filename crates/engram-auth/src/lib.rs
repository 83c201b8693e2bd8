//! Authentication for engram: each kind of credential becomes the engine's
//! [`Principal`]. API keys ([`apikey`]: the `egk_` token format, minting,
//! and checking a presented token against the stored hash) and JWTs:
//!
//! [`JwtVerifier`] checks a compact JWS token (the part after `Bearer `) and
//! turns its claims into the engine's [`Principal`]: `sub` is the subject, a
//! configurable claim (default `tenant`) the tenant, another (default `role`)
//! the role, and the optional `namespaces` and `permissions` arrays restrict
//! or extend what the caller may do.
//!
//! Keys come from [`JwtConfig`]: an HS256 shared secret, RSA or Ed25519
//! public key PEM files, and a local JWKS file. Each key verifies exactly one
//! algorithm, fixed by its type (secret → HS256, RSA → RS256, Ed25519 →
//! EdDSA); the token's `alg` header only selects among the keys, so `none`,
//! other algorithms and algorithm confusion (an HS256 token "signed" with
//! the RSA public key) are refused. Nothing is fetched over the network.
//!
//! `exp` is required, `nbf` is honoured, and `iss`/`aud` are checked when
//! configured (a token's `aud` is not checked when no audience is configured).
//!
//! ```no_run
//! use engram_auth::{JwtConfig, JwtVerifier};
//! let cfg = JwtConfig { jwks_file: Some("/etc/engram/jwks.json".into()), ..JwtConfig::default() };
//! let verifier = JwtVerifier::new(&cfg)?;
//! let principal = verifier.verify("eyJ...")?;
//! # Ok::<(), engram_auth::AuthError>(())
//! ```

pub mod apikey;
mod claims;
mod config;
mod error;
mod keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use engram_core::Principal;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use claims::MAX_TENANT_CHARS;
pub use config::JwtConfig;
pub use error::AuthError;

use error::clip;
use keys::Key;

/// Tokens longer than this are refused before any decoding, bounding the
/// work an unauthenticated caller can cause.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies bearer tokens against the configured keys. Cheap to clone;
/// build it once at start-up.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: Vec<Key>,
    /// Whether a `kid` in the header must name a JWKS key.
    has_jwks: bool,
    /// Time, issuer and audience checks; `algorithms` is set per token.
    validation: Validation,
    tenant_claim: String,
    role_claim: String,
}

/// The header fields read before choosing a key.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl JwtVerifier {
    /// Loads the configured keys; fails when a key file is unreadable or
    /// invalid, or when no key is configured at all.
    pub fn new(cfg: &JwtConfig) -> Result<Self, AuthError> {
        if cfg.tenant_claim.is_empty() || cfg.role_claim.is_empty() {
            return Err(AuthError::Config(
                "tenant_claim and role_claim must not be empty".into(),
            ));
        }
        let mut keys = Vec::new();
        if let Some(secret) = &cfg.hs256_secret {
            keys.push(keys::hs256(secret)?);
        }
        for path in &cfg.public_keys {
            keys.push(keys::from_pem_file(path)?);
        }
        if let Some(path) = &cfg.jwks_file {
            keys.extend(keys::from_jwks_file(path)?);
        }
        if keys.is_empty() {
            return Err(AuthError::Config(
                "no verification key: set hs256_secret, public_keys or jwks_file".into(),
            ));
        }

        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Otherwise the library would refuse every token that has an `aud`.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        Ok(JwtVerifier {
            keys,
            has_jwks: cfg.jwks_file.is_some(),
            validation,
            tenant_claim: cfg.tenant_claim.clone(),
            role_claim: cfg.role_claim.clone(),
        })
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "token exceeds {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = parse_header(token)?;
        let alg = keys::parse_alg(&header.alg)?;
        let candidates: Vec<&Key> = match &header.kid {
            // The HS secret has no kid, so a kid only ever selects a JWKS key.
            Some(kid) if self.has_jwks && alg != Algorithm::HS256 => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| AuthError::UnknownKey(clip(kid)))?;
                if key.alg != alg {
                    return Err(AuthError::UnsupportedAlgorithm(format!(
                        "{alg:?} with key {:?}",
                        clip(kid)
                    )));
                }
                vec![key]
            }
            _ => self.keys.iter().filter(|k| k.alg == alg).collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnsupportedAlgorithm(format!(
                "{alg:?} (no key configured for it)"
            )));
        }

        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        for key in candidates {
            // The signature is checked before the claims, so any error but a bad
            // signature comes from the right key (or a token no key can read).
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    return claims::principal(&data.claims, &self.tenant_claim, &self.role_claim)
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(AuthError::InvalidSignature)
    }
}

/// Reads the header ourselves: the library cannot represent `alg: none` or
/// unknown algorithms, and would report them as a JSON error.
fn parse_header(token: &str) -> Result<Header, AuthError> {
    let malformed = |what: &str| AuthError::Malformed(what.to_owned());
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|_| malformed("header is not a JSON object with a string alg"))?;
    // RFC 7515 §4.1.11: extensions we do not understand must be refused.
    if header.crit.is_some() {
        return Err(malformed("unsupported crit header"));
    }
    Ok(header)
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::InvalidClaims(format!("{c} is missing or invalid"))
        }
        ErrorKind::InvalidClaimFormat(c) => {
            AuthError::InvalidClaims(format!("{c} has an invalid format"))
        }
        ErrorKind::Base64(_) => {
            AuthError::Malformed("payload or signature is not base64url".into())
        }
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("payload is not a JSON object".into())
        }
        ErrorKind::InvalidAlgorithm => {
            AuthError::UnsupportedAlgorithm("algorithm does not match the key".into())
        }
        // Keys are validated at load, so the backend refusing one is our fault, not the caller's.
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
            AuthError::Config("a configured key was refused by the crypto backend".into())
        }
        _ => AuthError::Malformed("token could not be decoded".into()),
    }
}
