//! Hermetic unit tests of the request mapping; the tools end to end (both
//! transports, a real MCP client) are in the binary's `tests/clients.rs`.

use super::*;

#[test]
fn segments_are_encoded_one_by_one_and_the_query_is_form_encoded() {
    let r = ApiRequest::new(
        http::Method::POST,
        &["v1", "sessions", "chat/2026 12?x", "messages"],
    )
    .query("wait", true)
    .query("filter", "{\"a\":\"b c\"}");
    assert_eq!(
        r.path_and_query(),
        "/v1/sessions/chat%2F2026%2012%3Fx/messages?wait=true&filter=%7B%22a%22%3A%22b+c%22%7D"
    );
    assert_eq!(
        ApiRequest::new(http::Method::GET, &["v1", "memories"]).path_and_query(),
        "/v1/memories"
    );
}

#[test]
fn failures_keep_engrams_code_and_report_other_bodies_whole() {
    let f = Failure::from_body(
        403,
        &json!({"error": {"code": "forbidden", "message": "reader keys cannot write"}}),
    );
    assert_eq!(
        (f.status, f.code.as_str(), f.message.as_str()),
        (Some(403), "forbidden", "reader keys cannot write")
    );
    let f = Failure::from_body(502, &json!({"detail": "bad gateway"}));
    assert_eq!(f.code, "unexpected_response");
    assert!(f.message.contains("bad gateway") && f.message.contains("502"));
}

#[test]
fn outcomes_are_structured_objects_and_errors_carry_the_code() {
    let ok = outcome(Ok(json!({"hits": []}))).unwrap();
    assert_eq!(ok.is_error, Some(false));
    assert_eq!(ok.structured_content, Some(json!({"hits": []})));
    let wrapped = outcome(Ok(Value::Null)).unwrap();
    assert_eq!(wrapped.structured_content, Some(json!({"result": null})));
    let err = outcome(Err(Failure::new(Some(404), "not_found", "no such memory"))).unwrap();
    assert_eq!(err.is_error, Some(true));
    assert_eq!(
        err.structured_content,
        Some(json!({"error": {"code": "not_found", "message": "no such memory"}}))
    );
}
