//! End-to-end verification: tokens signed with the test keys in `fixtures/`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use engram_auth::{AuthError, JwtConfig, JwtVerifier};
use engram_core::{Permission, Principal, Role};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;

const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "engram";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// Every key source, with issuer and audience checks on.
fn full_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some(SECRET.into()),
        public_keys: vec![fixture("rsa_public.pem"), fixture("ed25519_public.pem")],
        jwks_file: Some(fixture("jwks.json")),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..JwtConfig::default()
    }
}

fn verifier(cfg: &JwtConfig) -> JwtVerifier {
    JwtVerifier::new(cfg).unwrap()
}

fn now() -> i64 {
    get_current_timestamp() as i64
}

fn claims() -> Value {
    json!({
        "sub": "agent-7",
        "tenant": "acme",
        "role": "writer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 600,
        "namespaces": ["agent:*", "shared"],
        "permissions": ["pii:read"],
    })
}

fn with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn without(name: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(name);
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa_private.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read("ed25519_private.pem")).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn hs(c: &Value) -> String {
    sign(Algorithm::HS256, None, c)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn expected() -> Principal {
    let mut p = Principal::new("acme", "agent-7", Role::Writer);
    p.namespaces = Some(vec!["agent:*".into(), "shared".into()]);
    p.permissions = vec![Permission::PiiRead];
    p
}

#[test]
fn valid_tokens_yield_the_full_principal() {
    let v = verifier(&full_config());
    let cases = [
        ("HS256", sign(Algorithm::HS256, None, &claims())),
        ("RS256 via PEM", sign(Algorithm::RS256, None, &claims())),
        ("EdDSA via PEM", sign(Algorithm::EdDSA, None, &claims())),
        (
            "RS256 via JWKS kid",
            sign(Algorithm::RS256, Some("rsa-test-1"), &claims()),
        ),
        (
            "EdDSA via JWKS kid",
            sign(Algorithm::EdDSA, Some("ed-test-1"), &claims()),
        ),
        (
            "aud array containing ours",
            hs(&with(json!({"aud": ["other", AUDIENCE]}))),
        ),
    ];
    for (name, token) in cases {
        assert_eq!(v.verify(&token), Ok(expected()), "{name}");
    }
}

#[test]
fn jwks_alone_verifies_by_kid() {
    let cfg = JwtConfig {
        jwks_file: Some(fixture("jwks.json")),
        ..JwtConfig::default()
    };
    let v = verifier(&cfg);
    // Without issuer/audience configured, those claims are not checked.
    let c = with(json!({"iss": "anyone", "aud": "anything"}));
    assert_eq!(
        v.verify(&sign(Algorithm::EdDSA, Some("ed-test-1"), &c)),
        Ok(expected())
    );
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("rsa-test-1"), &c)),
        Ok(expected())
    );
}

#[test]
fn optional_claims_and_custom_claim_names() {
    let cfg = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        tenant_claim: "https://engram/tenant".into(),
        role_claim: "engram_role".into(),
        ..JwtConfig::default()
    };
    let c = json!({"sub": "u1", "https://engram/tenant": "t1", "engram_role": "admin", "exp": now() + 60});
    let p = verifier(&cfg).verify(&hs(&c)).unwrap();
    assert_eq!(p, Principal::new("t1", "u1", Role::Admin));
    assert_eq!(p.namespaces, None);
    assert!(p.permissions.is_empty());
}

#[test]
fn refused_tokens_report_the_exact_reason() {
    let v = verifier(&full_config());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    let hs384 = {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::new(Algorithm::HS384), &claims(), &key).unwrap()
    };
    // HMAC keyed with the RSA public key text: the classic algorithm-confusion forgery.
    let confused = {
        let key = EncodingKey::from_secret(&read("rsa_public.pem"));
        encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
    };
    let tampered = {
        let token = hs(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&with(json!({"role": "admin"}))),
            parts[2]
        )
    };
    let fresh_signature_wrong_key = {
        let key = EncodingKey::from_secret(b"another-secret-another-secret-0123");
        encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
    };
    let crit = {
        let token = hs(&claims());
        let header = b64(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}));
        format!("{header}.{}", token.split_once('.').unwrap().1)
    };
    let rs_with_ed_kid = sign(Algorithm::RS256, Some("ed-test-1"), &claims());

    use AuthError::*;
    let cases: Vec<(&str, String, AuthError)> = vec![
        ("empty", String::new(), Missing),
        (
            "garbage",
            "not a token".into(),
            Malformed("expected three dot-separated parts".into()),
        ),
        (
            "bad header",
            "!!!.e30.e30".into(),
            Malformed("header is not base64url".into()),
        ),
        (
            "header without alg",
            "e30.e30.e30".into(),
            Malformed("header is not a JSON object with a string alg".into()),
        ),
        ("alg none", alg_none, UnsupportedAlgorithm("none".into())),
        (
            "too large",
            "a".repeat(engram_auth::MAX_TOKEN_BYTES + 1),
            Malformed(format!(
                "token exceeds {} bytes",
                engram_auth::MAX_TOKEN_BYTES
            )),
        ),
        (
            "crit header",
            crit,
            Malformed("unsupported crit header".into()),
        ),
        (
            "signature not base64url",
            format!("{}!", hs(&claims())),
            Malformed("payload or signature is not base64url".into()),
        ),
        ("HS384", hs384, UnsupportedAlgorithm("HS384".into())),
        ("alg confusion", confused, InvalidSignature),
        ("tampered payload", tampered, InvalidSignature),
        ("wrong secret", fresh_signature_wrong_key, InvalidSignature),
        ("expired", hs(&with(json!({"exp": now() - 3600}))), Expired),
        (
            "nbf in the future",
            hs(&with(json!({"nbf": now() + 3600}))),
            NotYetValid,
        ),
        (
            "no exp",
            hs(&without("exp")),
            InvalidClaims("exp is missing or invalid".into()),
        ),
        (
            "exp not a number",
            hs(&with(json!({"exp": "soon"}))),
            InvalidClaims("exp is missing or invalid".into()),
        ),
        (
            "wrong issuer",
            hs(&with(json!({"iss": "https://evil.test"}))),
            InvalidIssuer,
        ),
        ("no issuer", hs(&without("iss")), InvalidIssuer),
        (
            "wrong audience",
            hs(&with(json!({"aud": "other"}))),
            InvalidAudience,
        ),
        (
            "aud array without ours",
            hs(&with(json!({"aud": ["a", "b"]}))),
            InvalidAudience,
        ),
        ("no audience", hs(&without("aud")), InvalidAudience),
        (
            "missing sub",
            hs(&without("sub")),
            InvalidClaims("missing claim sub".into()),
        ),
        (
            "empty sub",
            hs(&with(json!({"sub": ""}))),
            InvalidClaims("sub must be a non-empty string".into()),
        ),
        (
            "missing tenant",
            hs(&without("tenant")),
            InvalidClaims("missing claim tenant".into()),
        ),
        (
            "tenant not a string",
            hs(&with(json!({"tenant": 7}))),
            InvalidClaims("tenant must be a non-empty string".into()),
        ),
        (
            "tenant too long",
            hs(&with(json!({"tenant": "t".repeat(129)}))),
            InvalidClaims(
                "tenant must be at most 128 characters, without control characters".into(),
            ),
        ),
        (
            "missing role",
            hs(&without("role")),
            InvalidClaims("missing claim role".into()),
        ),
        (
            "unknown role",
            hs(&with(json!({"role": "root"}))),
            InvalidClaims("role must be admin, writer or reader".into()),
        ),
        (
            "unknown permission",
            hs(&with(json!({"permissions": ["pii:read", "pii:write"]}))),
            InvalidClaims("unknown permission \"pii:write\"".into()),
        ),
        (
            "namespaces not an array",
            hs(&with(json!({"namespaces": "agent:*"}))),
            InvalidClaims("namespaces must be an array of non-empty strings".into()),
        ),
        (
            "empty namespace",
            hs(&with(json!({"namespaces": ["a", ""]}))),
            InvalidClaims("namespaces must be an array of non-empty strings".into()),
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("rotated-away"), &claims()),
            UnknownKey("rotated-away".into()),
        ),
        (
            "kid of a key of another type",
            rs_with_ed_kid,
            UnsupportedAlgorithm("RS256 with key \"ed-test-1\"".into()),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.verify(&token), Err(want), "{name}");
    }
}

#[test]
fn each_key_type_verifies_only_its_own_algorithm() {
    let only_hs = verifier(&JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    });
    let only_rsa = verifier(&JwtConfig {
        public_keys: vec![fixture("rsa_public.pem")],
        ..JwtConfig::default()
    });
    let rs = sign(Algorithm::RS256, None, &claims());
    let ed = sign(Algorithm::EdDSA, None, &claims());
    let confused = {
        let key = EncodingKey::from_secret(&read("rsa_public.pem"));
        encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
    };
    let no_key = |alg: &str| {
        Err(AuthError::UnsupportedAlgorithm(format!(
            "{alg} (no key configured for it)"
        )))
    };
    assert_eq!(only_hs.verify(&rs), no_key("RS256"));
    assert_eq!(only_hs.verify(&ed), no_key("EdDSA"));
    assert_eq!(only_rsa.verify(&confused), no_key("HS256"));
    assert_eq!(only_rsa.verify(&ed), no_key("EdDSA"));
    // An RSA key does not verify a token signed by the Ed25519 key, nor the reverse.
    let only_ed = verifier(&JwtConfig {
        public_keys: vec![fixture("ed25519_public.pem")],
        ..JwtConfig::default()
    });
    assert_eq!(only_ed.verify(&rs), no_key("RS256"));
    assert!(only_ed.verify(&ed).is_ok());
}

#[test]
fn leeway_tolerates_small_clock_skew() {
    let cfg = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        leeway_secs: 30,
        ..JwtConfig::default()
    };
    let v = verifier(&cfg);
    assert!(v
        .verify(&hs(&with(json!({"exp": now() - 10, "nbf": now() + 10}))))
        .is_ok());
    assert_eq!(
        v.verify(&hs(&with(json!({"exp": now() - 60})))),
        Err(AuthError::Expired)
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let cfg = full_config();
    assert!(!format!("{cfg:?}").contains(SECRET));
    assert!(format!("{cfg:?}").contains("[redacted]"));
    assert!(!format!("{:?}", verifier(&cfg)).contains(SECRET));
}

#[test]
fn config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let config_err = |cfg: JwtConfig| match JwtVerifier::new(&cfg) {
        Err(AuthError::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    };

    assert!(config_err(JwtConfig::default()).contains("no verification key"));
    let short = config_err(JwtConfig {
        hs256_secret: Some("short-secret".into()),
        ..JwtConfig::default()
    });
    assert!(short.contains("at least 32 bytes") && !short.contains("short-secret"));
    let private = config_err(JwtConfig {
        public_keys: vec![fixture("rsa_private.pem")],
        ..JwtConfig::default()
    });
    assert!(private.contains("expected a public key PEM"), "{private}");
    let missing = config_err(JwtConfig {
        public_keys: vec![dir.path().join("nope.pem")],
        ..JwtConfig::default()
    });
    assert!(missing.contains("cannot read"), "{missing}");

    let jwks = |text: &str| {
        config_err(JwtConfig {
            jwks_file: Some(write("jwks.json", text)),
            ..JwtConfig::default()
        })
    };
    let fixture_jwks: Value = serde_json::from_slice(&read("jwks.json")).unwrap();
    let (rsa, ed) = (&fixture_jwks["keys"][0], &fixture_jwks["keys"][1]);
    let mut no_kid = rsa.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut wrong_alg = rsa.clone();
    wrong_alg["alg"] = json!("PS256");
    let mut enc = ed.clone();
    enc["use"] = json!("enc");
    let oct = json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(SECRET)});
    let mut small_rsa = rsa.clone();
    small_rsa["n"] = json!(URL_SAFE_NO_PAD.encode([0xffu8; 128]));
    for (keys, want) in [
        (json!([rsa, rsa]), "duplicate kid"),
        (json!([no_kid]), "has no kid"),
        (json!([wrong_alg]), "alg must be RS256"),
        (json!([enc]), "not a signature key"),
        (json!([oct]), "unsupported key type"),
        (json!([small_rsa]), "at least 2048 bits (found 1024)"),
    ] {
        let msg = jwks(&json!({ "keys": keys }).to_string());
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains(SECRET));
    }
    assert!(jwks("{").contains("not a JWKS document"));
}

#[test]
fn config_deserializes_with_defaults_and_refuses_unknown_fields() {
    let cfg: JwtConfig = serde_json::from_value(json!({"hs256_secret": SECRET})).unwrap();
    assert_eq!(cfg.leeway_secs, 30);
    assert_eq!(cfg.tenant_claim, "tenant");
    assert_eq!(cfg.role_claim, "role");
    assert!(cfg.public_keys.is_empty() && cfg.jwks_file.is_none() && cfg.issuer.is_none());
    assert!(serde_json::from_value::<JwtConfig>(json!({"audiance": "x"})).is_err());
}
