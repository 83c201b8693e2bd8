//! Authentication, authorization, tenant isolation, audit, retention, legal
//! hold and PII redaction, through the HTTP API with auth switched on.

use super::*;
use engram_core::{NewApiKey, Permission, StoreAdmin};

/// Options of an app with authentication required and nothing anonymous.
pub(super) fn secured_opts() -> Opts {
    Opts {
        auth: Some(AuthSettings {
            jwt: None,
            anonymous: None,
        }),
        ..Opts::default()
    }
}

/// An app with authentication required and nothing anonymous.
async fn secured(rate_limit: Option<RateLimit>, jwt: Option<engram_auth::JwtVerifier>) -> App {
    app_opts(Opts {
        auth: Some(AuthSettings {
            jwt: jwt.map(Arc::new),
            anonymous: None,
        }),
        rate_limit,
        ..Opts::default()
    })
    .await
}

/// Mint an API key directly through the engine (as `engram keys create` does).
pub(super) async fn key(
    app: &App,
    tenant: &str,
    role: Role,
    namespaces: Option<Vec<&str>>,
    permissions: Vec<Permission>,
) -> String {
    let admin: StoreAdmin = app.engine.admin();
    let boot = Principal::new(tenant, "bootstrap", Role::Admin);
    admin
        .create_api_key(
            &boot,
            NewApiKey {
                name: format!("{role:?}"),
                role,
                namespaces: namespaces.map(|n| n.into_iter().map(String::from).collect()),
                permissions,
            },
            engram_auth::apikey::mint(),
        )
        .await
        .unwrap()
        .token
}

async fn add_as(app: &App, ns: &str, text: &str) -> String {
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories?wait=true",
            Some(json!({"namespace": ns, "text": text})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Every id found anywhere in a JSON value (keys `id` and `memory_id`, and `ids` arrays).
fn ids_in(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if matches!(k.as_str(), "id" | "memory_id" | "target") {
                        if let Some(s) = x.as_str() {
                            out.push(s.to_string());
                        }
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::String(s) => out.push(s.clone()),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_by_role_and_tenant() {
    let app = secured(None, None).await;
    let acme_admin = app.as_(&key(&app, "acme", Role::Admin, None, vec![]).await);
    let acme_writer = app.as_(&key(&app, "acme", Role::Writer, None, vec![]).await);
    let acme_reader = app.as_(&key(&app, "acme", Role::Reader, None, vec![]).await);
    let globex = app.as_(&key(&app, "globex", Role::Admin, None, vec![]).await);

    // Data in both tenants, in a namespace of the same name.
    let acme_id = add_as(&acme_admin, "agent:a", "acme quarterly roadmap is secret").await;
    let spare = add_as(&acme_admin, "agent:a", "acme spare memory to delete").await;
    let globex_id = add_as(&globex, "agent:a", "globex holiday plan").await;
    let acme_job = {
        let (_, v) = acme_admin.call("GET", "/v1/jobs?limit=10", None).await;
        assert_eq!(v["jobs"], json!([]), "no pending jobs after wait");
        // A dead job id of acme does not exist; use a number globex cannot see either.
        1u64
    };

    // No credentials: 401 on every API route, health endpoints open.
    let anon = &app;
    for (m, u) in [
        ("GET", format!("/v1/memories/{acme_id}")),
        ("POST", "/v1/search".to_string()),
        ("GET", "/v1/memories".to_string()),
        ("GET", "/v1/namespaces".to_string()),
        ("GET", "/v1/jobs".to_string()),
        ("GET", "/v1/stats".to_string()),
        ("GET", "/v1/keys".to_string()),
        ("GET", "/v1/audit".to_string()),
        ("POST", "/v1/embeddings".to_string()),
        ("GET", "/v1/models".to_string()),
    ] {
        let (s, h, v) = anon
            .raw_full(m, &u, Some("{}"), Some("application/json"))
            .await;
        assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
        assert!(h.contains_key("www-authenticate"), "{m} {u}");
    }
    for u in ["/healthz", "/readyz"] {
        assert_eq!(anon.call("GET", u, None).await.0, StatusCode::OK, "{u}");
    }
    let bad = app.as_(
        "egk_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
    );
    let (s, v) = bad.call("GET", "/v1/stats", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, v) = app.as_("not.a.jwt").call("GET", "/v1/stats", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");

    // (caller, method, uri, body, expected status)
    let mem = format!("/v1/memories/{acme_id}");
    let create = json!({"namespace": "agent:a", "text": "written by a role"});
    let search = json!({"query": "acme quarterly roadmap", "k": 5});
    type Case<'a> = (&'a App, &'a str, &'a str, Option<Value>, StatusCode);
    let ok = StatusCode::OK;
    let forbidden = StatusCode::FORBIDDEN;
    let not_found = StatusCode::NOT_FOUND;
    let job = format!("/v1/jobs/{acme_job}");
    let retry = format!("/v1/jobs/{acme_job}/retry");
    let restore = format!("/v1/memories/{acme_id}/restore");
    let hard = format!("{mem}?hard=true");
    let cases: Vec<Case> = vec![
        // reads: every role of the tenant
        (&acme_reader, "GET", &mem, None, ok),
        (&acme_writer, "GET", &mem, None, ok),
        (&acme_admin, "GET", &mem, None, ok),
        (&acme_reader, "GET", "/v1/memories", None, ok),
        (
            &acme_reader,
            "POST",
            "/v1/memories/list",
            Some(json!({})),
            ok,
        ),
        (&acme_reader, "POST", "/v1/search", Some(search.clone()), ok),
        (&acme_reader, "GET", "/v1/namespaces", None, ok),
        (&acme_reader, "GET", "/v1/stats", None, ok),
        (&acme_reader, "GET", "/v1/jobs", None, ok),
        (&acme_reader, "GET", &job, None, not_found),
        (
            &acme_reader,
            "POST",
            "/v1/embeddings",
            Some(json!({"input": "hi"})),
            ok,
        ),
        // writes: writer and admin, not reader
        (
            &acme_reader,
            "POST",
            "/v1/memories",
            Some(create.clone()),
            forbidden,
        ),
        (
            &acme_writer,
            "POST",
            "/v1/memories",
            Some(create.clone()),
            StatusCode::ACCEPTED,
        ),
        (
            &acme_reader,
            "PATCH",
            &mem,
            Some(json!({"tags": ["r"]})),
            forbidden,
        ),
        (
            &acme_writer,
            "PATCH",
            &mem,
            Some(json!({"tags": ["w"]})),
            ok,
        ),
        (&acme_reader, "DELETE", &mem, None, forbidden),
        (&acme_reader, "POST", &restore, None, forbidden),
        (&acme_writer, "POST", &restore, None, StatusCode::CONFLICT),
        (&acme_reader, "POST", &retry, None, forbidden),
        (&acme_writer, "POST", &retry, None, not_found),
        // admin-only: hard delete, holds, namespace settings, keys, audit
        (&acme_writer, "DELETE", &hard, None, forbidden),
        (
            &acme_writer,
            "PATCH",
            &mem,
            Some(json!({"legal_hold": true})),
            forbidden,
        ),
        (
            &acme_writer,
            "PUT",
            "/v1/namespaces/agent:a",
            Some(json!({"default_ttl_seconds": 60})),
            forbidden,
        ),
        (
            &acme_admin,
            "PUT",
            "/v1/namespaces/agent:a",
            Some(json!({"default_ttl_seconds": null})),
            ok,
        ),
        (&acme_writer, "GET", "/v1/keys", None, forbidden),
        (
            &acme_reader,
            "POST",
            "/v1/keys",
            Some(json!({"name": "x", "role": "admin"})),
            forbidden,
        ),
        (&acme_admin, "GET", "/v1/keys", None, ok),
        (&acme_writer, "GET", "/v1/audit", None, forbidden),
        (&acme_reader, "GET", "/v1/audit/verify", None, forbidden),
        (&acme_writer, "GET", "/v1/audit/export", None, forbidden),
        (&acme_admin, "GET", "/v1/audit", None, ok),
        (&acme_admin, "GET", "/v1/audit/verify", None, ok),
        // the other tenant: acme's records do not exist for it
        (&globex, "GET", &mem, None, not_found),
        (
            &globex,
            "PATCH",
            &mem,
            Some(json!({"tags": ["g"]})),
            not_found,
        ),
        (&globex, "DELETE", &mem, None, not_found),
        (&globex, "DELETE", &hard, None, not_found),
        (&globex, "POST", &restore, None, not_found),
        (
            &globex,
            "PATCH",
            &mem,
            Some(json!({"legal_hold": true})),
            not_found,
        ),
        (&globex, "GET", &job, None, not_found),
        (&globex, "POST", &retry, None, not_found),
    ];
    for (who, m, u, body, want) in cases {
        let (s, v) = who.call(m, u, body).await;
        assert_eq!(s, want, "{m} {u}: {v}");
        if !s.is_success() {
            assert!(v["error"]["code"].is_string(), "{m} {u}: {v}");
        }
    }

    // Tenant isolation of everything that lists: no acme id ever reaches globex.
    let acme_ids = [acme_id.clone(), spare.clone()];
    let leaks = |v: &Value| ids_in(v).into_iter().any(|i| acme_ids.contains(&i));
    for (m, u, body) in [
        (
            "POST",
            "/v1/search",
            Some(json!({"query": "acme quarterly roadmap is secret", "k": 50})),
        ),
        (
            "POST",
            "/v1/search",
            Some(json!({"query": "acme quarterly roadmap is secret", "mode": "keyword"})),
        ),
        (
            "POST",
            "/v1/search",
            Some(json!({"query": "acme roadmap", "mode": "vector", "namespaces": ["agent:a"]})),
        ),
        ("GET", "/v1/memories?limit=1000", None),
        (
            "POST",
            "/v1/memories/list",
            Some(json!({"namespace": "agent:a"})),
        ),
        ("GET", "/v1/jobs?limit=1000", None),
        ("GET", "/v1/audit?limit=1000", None),
        ("GET", "/v1/audit/export", None),
        ("GET", "/v1/keys", None),
        ("GET", "/v1/namespaces", None),
    ] {
        let (s, v) = globex.call(m, u, body).await;
        assert_eq!(s, StatusCode::OK, "{m} {u}: {v}");
        assert!(!leaks(&v), "{m} {u} leaked an acme id: {v}");
    }
    // ... while globex sees its own.
    let (_, v) = globex
        .call(
            "POST",
            "/v1/search",
            Some(json!({"query": "globex holiday plan", "k": 5})),
        )
        .await;
    assert_eq!(v["hits"][0]["id"], globex_id.as_str());
    let (_, v) = globex.call("GET", "/v1/stats", None).await;
    assert_eq!(v["memories"], 1, "{v}");
    // Acme's keys are not revocable by globex.
    let (_, keys) = acme_admin.call("GET", "/v1/keys", None).await;
    let acme_key_id = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let (s, v) = globex
        .call("DELETE", &format!("/v1/keys/{acme_key_id}"), None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "key_not_found");

    // Writers delete softly; admins may restore and hard-delete.
    assert_eq!(
        acme_writer
            .call("DELETE", &format!("/v1/memories/{spare}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = acme_writer
        .call("POST", &format!("/v1/memories/{spare}/restore"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        acme_admin
            .call("DELETE", &format!("/v1/memories/{spare}?hard=true"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, _) = acme_admin
        .call("POST", &format!("/v1/memories/{spare}/restore"), None)
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a purged memory cannot be restored"
    );

    // The audit trail names the actors and verifies.
    let (_, v) = acme_admin.call("GET", "/v1/audit?limit=1000", None).await;
    let events = v["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "key_create",
        "create",
        "update",
        "delete",
        "restore",
        "purge",
        "namespace_update",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
    assert!(events
        .iter()
        .any(|e| e["action"] == "create" && e["actor"].as_str().unwrap().starts_with("key:")));
    let (_, v) = acme_admin.call("GET", "/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["events"].as_u64().unwrap() as usize, events.len());
    let (_, v) = acme_admin.call("GET", "/v1/audit/export", None).await;
    assert_eq!(v["head"]["hash"], v["verify"]["head"]);
    let exported = ids_in(&v["records"]);
    assert!(
        exported.contains(&acme_id) && !exported.contains(&spare),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_keys_and_revocation() {
    let app = secured(None, None).await;
    let admin = app.as_(&key(&app, "acme", Role::Admin, None, vec![]).await);
    let scoped_token = key(&app, "acme", Role::Writer, Some(vec!["agent:*"]), vec![]).await;
    let scoped = app.as_(&scoped_token);
    let agents = add_as(&admin, "agent:one", "deploys happen on fridays").await;
    let private = add_as(&admin, "user:bob", "deploys are bob's private worry").await;

    let (s, v) = scoped
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "agent:two", "text": "ok here"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = scoped
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "user:bob", "text": "not here"})),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = scoped
        .call("GET", &format!("/v1/memories/{private}"), None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "memory_not_found");
    let (s, _) = scoped
        .call("GET", &format!("/v1/memories/{agents}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    for mode in ["hybrid", "keyword", "vector"] {
        let hits = scoped
            .search(json!({"query": "deploys", "mode": mode, "k": 10}))
            .await;
        let ids: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
        assert!(
            ids.contains(&agents.as_str()) && !ids.contains(&private.as_str()),
            "{mode}: {ids:?}"
        );
    }
    let (s, v) = scoped
        .call(
            "POST",
            "/v1/search",
            Some(json!({"query": "deploys", "namespaces": ["user:bob"]})),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (_, page) = scoped.call("GET", "/v1/memories", None).await;
    assert!(!ids_in(&page).contains(&private));
    let (_, ns) = scoped.call("GET", "/v1/namespaces", None).await;
    assert!(ns["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["name"].as_str().unwrap().starts_with("agent:")));
    for u in ["/v1/jobs", "/v1/stats"] {
        let (s, v) = scoped.call("GET", u, None).await;
        assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    }

    // Keys created over the API: shown once, listed without secrets, revocable.
    let (s, created) = admin
        .call(
            "POST",
            "/v1/keys",
            Some(json!({"name": "ci", "role": "reader"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let (_, listed) = admin.call("GET", "/v1/keys", None).await;
    assert!(
        !listed.to_string().contains(&token[20..]),
        "secret listed: {listed}"
    );
    let reader = app.as_(&token);
    assert_eq!(
        reader.call("GET", "/v1/stats", None).await.0,
        StatusCode::OK
    );
    let (s, v) = admin
        .call(
            "DELETE",
            &format!("/v1/keys/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string());
    let (s, v) = reader.call("GET", "/v1/stats", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
    // A tampered secret of a live key is refused too.
    let mut forged = scoped_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (s, _) = app.as_(&forged).call("GET", "/v1/namespaces", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_tokens_carry_tenant_role_and_scope() {
    let secret = "a-test-secret-that-is-long-enough-for-hs256";
    let jwt = engram_auth::JwtVerifier::new(&engram_auth::JwtConfig {
        hs256_secret: Some(secret.into()),
        issuer: Some("https://idp.test".into()),
        ..engram_auth::JwtConfig::default()
    })
    .unwrap();
    let app = secured(None, Some(jwt)).await;
    let mint = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let exp = chrono::Utc::now().timestamp() + 600;
    let writer = app.as_(&mint(json!({"sub": "agent-7", "tenant": "initech", "role": "writer", "iss": "https://idp.test", "exp": exp})));
    let id = add_as(&writer, "agent:x", "the stapler belongs to milton").await;
    let (s, m) = writer
        .call("GET", &format!("/v1/memories/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    // The token's tenant holds it (the API no longer shows the tenant).
    let stored = app
        .engine
        .get(
            &Principal::new("initech", "t", Role::Admin),
            id.parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stored.tenant, "initech");
    let (s, v) = writer.call("GET", "/v1/audit", None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");

    let expired = app.as_(&mint(json!({"sub": "a", "tenant": "initech", "role": "admin", "iss": "https://idp.test", "exp": exp - 4000})));
    let (s, v) = expired.call("GET", "/v1/stats", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "token_expired");
    let wrong_iss = app.as_(&mint(json!({"sub": "a", "tenant": "initech", "role": "admin", "iss": "https://evil.test", "exp": exp})));
    let (s, v) = wrong_iss.call("GET", "/v1/stats", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "invalid_token");
    let admin = app.as_(&mint(json!({"sub": "ops", "tenant": "initech", "role": "admin", "iss": "https://idp.test", "exp": exp})));
    let (_, v) = admin.call("GET", "/v1/audit", None).await;
    let e = &v["events"][0];
    assert_eq!(
        (e["actor"].as_str(), e["action"].as_str()),
        (Some("agent-7"), Some("create"))
    );
    assert!(e["request_id"].is_string(), "request id recorded: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_is_redacted_for_callers_without_pii_read() {
    let app = secured(None, None).await;
    let writer = app.as_(&key(&app, "acme", Role::Writer, None, vec![]).await);
    let reader = app.as_(&key(&app, "acme", Role::Reader, None, vec![]).await);
    let cleared = app.as_(&key(&app, "acme", Role::Reader, None, vec![Permission::PiiRead]).await);
    let text = "Reach Alice at alice@example.com or +44 20 7946 0958 about the invoice";
    let id = add_as(&writer, "crm", text).await;
    let named = {
        let (s, v) = writer
            .call(
                "POST",
                "/v1/memories?wait=true",
                Some(
                    json!({"namespace": "crm", "text": "Bob Tables prefers tea", "pii": ["name"]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let plain = add_as(
        &writer,
        "crm",
        "The invoice is due on 2024-05-01 for 1,234.56 EUR",
    )
    .await;

    let (_, m) = cleared
        .call("GET", &format!("/v1/memories/{id}"), None)
        .await;
    assert_eq!(m["text"], text);
    assert_eq!(m["pii"], json!(["email", "phone"]));
    let (_, m) = reader
        .call("GET", &format!("/v1/memories/{id}"), None)
        .await;
    let redacted = m["text"].as_str().unwrap();
    assert!(
        !redacted.contains("alice@example.com") && !redacted.contains("7946"),
        "{redacted}"
    );
    assert!(
        redacted.contains("[EMAIL]")
            && redacted.contains("[PHONE]")
            && redacted.contains("invoice"),
        "{redacted}"
    );
    let (_, m) = reader
        .call("GET", &format!("/v1/memories/{named}"), None)
        .await;
    assert_eq!(m["text"], "[REDACTED]");
    let (_, m) = reader
        .call("GET", &format!("/v1/memories/{plain}"), None)
        .await;
    assert_eq!(
        m["text"], "The invoice is due on 2024-05-01 for 1,234.56 EUR",
        "no false positive"
    );

    // The same in list and search.
    let (_, page) = reader.call("GET", "/v1/memories?namespace=crm", None).await;
    let s = page.to_string();
    assert!(
        !s.contains("alice@example.com") && !s.contains("Bob Tables"),
        "{s}"
    );
    for mode in ["hybrid", "keyword", "vector"] {
        let hits = reader
            .search(json!({"query": "alice invoice", "mode": mode}))
            .await;
        let s = serde_json::to_string(&hits).unwrap();
        assert!(!s.contains("alice@example.com"), "{mode}: {s}");
        let hits = cleared
            .search(json!({"query": "alice invoice", "mode": mode}))
            .await;
        assert!(
            serde_json::to_string(&hits)
                .unwrap()
                .contains("alice@example.com"),
            "{mode}"
        );
    }
    // Editing the text re-detects.
    let (_, m) = writer
        .call(
            "PATCH",
            &format!("/v1/memories/{id}"),
            Some(json!({"text": "Alice moved; no contact details now"})),
        )
        .await;
    assert_eq!(m["pii"], json!([]), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legal_hold_ttl_sweep_and_hard_delete() {
    let app = secured(None, None).await;
    let admin = app.as_(&key(&app, "acme", Role::Admin, None, vec![]).await);
    let writer = app.as_(&key(&app, "acme", Role::Writer, None, vec![]).await);
    let held = add_as(&writer, "cases", "contract signed on the boat").await;
    let (s, m) = admin
        .call(
            "PATCH",
            &format!("/v1/memories/{held}"),
            Some(json!({"legal_hold": true})),
        )
        .await;
    assert_eq!((s, &m["legal_hold"]), (StatusCode::OK, &json!(true)), "{m}");
    for (m, u, body) in [
        ("DELETE", format!("/v1/memories/{held}"), None),
        ("DELETE", format!("/v1/memories/{held}?hard=true"), None),
        (
            "PATCH",
            format!("/v1/memories/{held}"),
            Some(json!({"text": "rewritten"})),
        ),
    ] {
        let who = if u.contains("hard") { &admin } else { &writer };
        let (s, v) = who.call(m, &u, body).await;
        assert_error(s, &v, StatusCode::CONFLICT, "legal_hold");
    }
    let (s, v) = writer
        .call(
            "PATCH",
            &format!("/v1/memories/{held}"),
            Some(json!({"legal_hold": false})),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");

    // One PATCH is one transaction: a release with a change that is refused
    // releases nothing and leaves no audit event.
    let (_, before) = admin.call("GET", "/v1/audit?limit=1000", None).await;
    for bad in [
        json!({"legal_hold": false, "metadata": {"": 1}}),
        json!({"legal_hold": false, "tags": [""]}),
        json!({"legal_hold": false, "text": ""}),
        json!({"legal_hold": false, "expires_at": "1999-01-01T00:00:00Z"}),
    ] {
        let (s, v) = admin
            .call("PATCH", &format!("/v1/memories/{held}"), Some(bad.clone()))
            .await;
        assert!(s.is_client_error(), "{bad}: {s} {v}");
        let (_, m) = admin
            .call("GET", &format!("/v1/memories/{held}"), None)
            .await;
        assert_eq!(m["legal_hold"], true, "{bad} released the hold: {m}");
    }
    let (_, after) = admin.call("GET", "/v1/audit?limit=1000", None).await;
    assert_eq!(before["events"], after["events"]);
    let (s, v) = admin.call("GET", "/v1/audit/verify", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");

    // TTL: a namespace default and a per-memory TTL; the sweeper expires
    // unheld memories and leaves the held one.
    let (s, v) = admin
        .call(
            "PUT",
            "/v1/namespaces/cases",
            Some(json!({"default_ttl_seconds": 1})),
        )
        .await;
    assert_eq!(
        (s, &v["default_ttl_seconds"]),
        (StatusCode::OK, &json!(1)),
        "{v}"
    );
    let short = add_as(&writer, "cases", "a note that expires by default").await;
    let (_, m) = writer
        .call("GET", &format!("/v1/memories/{short}"), None)
        .await;
    assert!(m["expires_at"].is_string(), "{m}");
    let (s, m) = admin
        .call("PATCH", &format!("/v1/memories/{held}"), Some(json!({"legal_hold": false, "expires_at": (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339()})))
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    admin
        .call(
            "PATCH",
            &format!("/v1/memories/{held}"),
            Some(json!({"legal_hold": true})),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let report = app.engine.sweep().await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    let (s, _) = writer
        .call("GET", &format!("/v1/memories/{short}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let hits = writer
        .search(json!({"query": "note that expires", "mode": "keyword"}))
        .await;
    assert!(hits.iter().all(|h| h["id"] != short.as_str()));
    let (s, m) = admin
        .call("GET", &format!("/v1/memories/{held}"), None)
        .await;
    // The hold suspends the TTL: the memory stays readable (and its hold
    // releasable) until the hold is lifted.
    assert_eq!(s, StatusCode::OK, "a held memory outlives its TTL: {m}");
    assert_eq!(m["legal_hold"], true);
    let (_, v) = admin.call("GET", "/v1/audit?action=expire", None).await;
    let targets: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [short.as_str()]);
    assert_eq!(v["events"][0]["actor"], "system:ttl");

    // Released, it is past its TTL: expired at once for readers.
    let (s, _) = admin
        .call(
            "PATCH",
            &format!("/v1/memories/{held}"),
            Some(json!({"legal_hold": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin
        .call("GET", &format!("/v1/memories/{held}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Hard delete: gone from get, search, list and export.
    let keep = add_as(&writer, "other", "purge me completely please").await;
    let (s, _) = admin
        .call("DELETE", &format!("/v1/memories/{keep}?hard=true"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for mode in ["keyword", "vector", "hybrid"] {
        let hits = admin
            .search(json!({"query": "purge me completely", "mode": mode}))
            .await;
        assert!(hits.iter().all(|h| h["id"] != keep.as_str()), "{mode}");
    }
    let (_, page) = admin.call("GET", "/v1/memories?limit=1000", None).await;
    assert!(!ids_in(&page).contains(&keep));
    let (_, bundle) = admin.call("GET", "/v1/audit/export", None).await;
    assert!(!ids_in(&bundle["records"]).contains(&keep));
    assert!(!bundle.to_string().contains("purge me completely"));
    assert_eq!(bundle["verify"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_caller_with_retry_after() {
    let limit = RateLimit {
        per_second: std::num::NonZeroU32::new(1).unwrap(),
        burst: std::num::NonZeroU32::new(3).unwrap(),
    };
    let app = secured(Some(limit), None).await;
    let a = app.as_(&key(&app, "acme", Role::Reader, None, vec![]).await);
    let b = app.as_(&key(&app, "acme", Role::Reader, None, vec![]).await);
    for _ in 0..3 {
        assert_eq!(
            a.call("GET", "/v1/namespaces", None).await.0,
            StatusCode::OK
        );
    }
    let (s, h, v) = a.raw_full("GET", "/v1/namespaces", None, None).await;
    assert_error(s, &v, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        b.call("GET", "/v1/namespaces", None).await.0,
        StatusCode::OK,
        "other callers unaffected"
    );
    assert_eq!(app.call("GET", "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_audited_when_configured() {
    let app = app_opts(Opts {
        audit_reads: true,
        ..Opts::default()
    })
    .await;
    let id = app.add("ns", "audited read target", json!({})).await;
    app.call("GET", &format!("/v1/memories/{id}"), None).await;
    app.search(json!({"query": "audited read target", "mode": "keyword"}))
        .await;
    let (_, v) = app.call("GET", "/v1/audit?action=read", None).await;
    let ev = v["events"].as_array().unwrap();
    let targets: Vec<&str> = ev.iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["get", "search"], "{v}");
    assert_eq!(ev[1]["details"]["ids"], json!([id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_origins_are_configured() {
    async fn preflight(app: &App, origin: &str) -> axum::http::HeaderMap {
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/v1/search")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap();
        app.router
            .clone()
            .oneshot(req)
            .await
            .unwrap()
            .headers()
            .clone()
    }
    let closed = app().await;
    assert!(!preflight(&closed, "https://ui.example.com")
        .await
        .contains_key("access-control-allow-origin"));
    let open = app_opts(Opts {
        cors_origins: vec!["https://ui.example.com".into()],
        ..Opts::default()
    })
    .await;
    let h = preflight(&open, "https://ui.example.com").await;
    assert_eq!(h["access-control-allow-origin"], "https://ui.example.com");
    assert!(!preflight(&open, "https://evil.example.com")
        .await
        .contains_key("access-control-allow-origin"));
}

/// A hold suspends the TTL: a held memory whose expiry passes stays readable,
/// so its hold can still be released; once released it is expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_memory_outlives_its_ttl_until_released() {
    let app = secured(None, None).await;
    let admin = app.as_(&key(&app, "acme", Role::Admin, None, vec![]).await);
    let (s, v) = admin
        .call(
            "POST",
            "/v1/memories?wait=true",
            Some(json!({"namespace": "cases", "text": "deposition notes", "ttl_seconds": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, m) = admin
        .call(
            "PATCH",
            &format!("/v1/memories/{id}"),
            Some(json!({"legal_hold": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, m) = admin.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "held past its TTL: {m}");
    let (s, m) = admin
        .call(
            "PATCH",
            &format!("/v1/memories/{id}"),
            Some(json!({"legal_hold": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the hold can be released: {m}");
    let (s, v) = admin.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "memory_not_found");
}
