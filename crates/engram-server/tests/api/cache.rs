//! The search-result cache through the HTTP API: a ranking cached before a
//! write never serves a deleted or expired memory, picks up new memories once
//! they are searchable and metadata changes at once, and is never shared
//! between callers who see different namespaces.

use super::*;

/// `engram_cache_<what>_total{kind="result"}` as scraped now (the recorder
/// is shared by every test of this binary, so only increases mean anything).
async fn result_counter(app: &App, what: &str) -> f64 {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let prefix = format!("engram_cache_{what}_total{{kind=\"result\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn ids(hits: &[Value]) -> Vec<&str> {
    hits.iter().map(|h| h["id"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_rankings_follow_deletes_new_memories_and_metadata() {
    let app = app().await;
    assert!(app.engine.config().result_cache_ttl >= Duration::from_secs(10));
    let coffee = app
        .add(
            "kb",
            "The office coffee machine is on the third floor",
            json!({}),
        )
        .await;
    let queries = [
        json!({"query": "where is the coffee machine?", "k": 5}),
        json!({"query": "where is the coffee machine?", "k": 5, "mode": "vector"}),
        json!({"query": "coffee machine", "k": 5, "mode": "keyword"}),
    ];
    for q in &queries {
        let hits = app.search(q.clone()).await;
        assert_eq!(ids(&hits), [coffee.as_str()], "{q}");
    }
    // The same searches again come from the cache, with the same answer.
    let hits_before = result_counter(&app, "hits").await;
    for q in &queries {
        let hits = app.search(q.clone()).await;
        assert_eq!(ids(&hits), [coffee.as_str()], "{q}");
        assert_eq!(
            hits[0]["text"],
            "The office coffee machine is on the third floor"
        );
    }
    assert!(result_counter(&app, "hits").await >= hits_before + 3.0);

    // Deleted after its ranking was cached: never served again.
    let (s, _) = app
        .call("DELETE", &format!("/v1/memories/{coffee}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for q in &queries {
        let hits = app.search(q.clone()).await;
        assert!(hits.is_empty(), "{q}: {hits:?}");
    }

    // Created after the (empty) rankings were cached: found once searchable.
    let espresso = app
        .add(
            "kb",
            "The new coffee machine makes espresso, next to the kitchen",
            json!({"metadata": {"floor": 2}}),
        )
        .await;
    for q in &queries {
        let hits = app.search(q.clone()).await;
        assert_eq!(ids(&hits), [espresso.as_str()], "{q}");
    }

    // A metadata change shows in filtered searches at once.
    let on_floor_5 = json!({"query": "coffee machine", "k": 5, "filter": {"metadata.floor": 5}});
    assert!(app.search(on_floor_5.clone()).await.is_empty());
    let (s, v) = app
        .call(
            "PATCH",
            &format!("/v1/memories/{espresso}"),
            Some(json!({"metadata": {"floor": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        ids(&app.search(on_floor_5).await),
        [espresso.as_str()],
        "the filter sees the new metadata"
    );
    // A hard delete too.
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/memories/{espresso}?hard=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for q in &queries {
        assert!(app.search(q.clone()).await.is_empty(), "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_rankings_never_serve_expired_memories() {
    let app = app().await;
    let ttl = Duration::from_secs(6);
    let started = std::time::Instant::now();
    let brief = app
        .add(
            "kb",
            "The standup moved to half past nine this week",
            json!({"ttl_seconds": ttl.as_secs()}),
        )
        .await;
    let q = json!({"query": "when is the standup?", "k": 5});
    assert_eq!(ids(&app.search(q.clone()).await), [brief.as_str()]);
    assert_eq!(ids(&app.search(q.clone()).await), [brief.as_str()]);
    assert!(started.elapsed() < ttl, "too slow to test expiry");
    // No sweep runs here: the memory is still stored, only expired, and its
    // ranking is still cached (the TTL is 30 s).
    tokio::time::sleep((ttl + Duration::from_millis(500)).saturating_sub(started.elapsed())).await;
    assert!(app.search(q).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_seeing_different_namespaces_do_not_share_rankings() {
    let app = app().await;
    let public = app
        .add("kb", "The wifi password is on the fridge", json!({}))
        .await;
    let secret = app
        .add("hr", "The wifi password for admins is hunter2", json!({}))
        .await;
    let admin = Principal::new("acme", "admin", Role::Admin);
    let mut limited = Principal::new("acme", "reader", Role::Reader);
    limited.namespaces = Some(vec!["kb".into()]);
    let req = || engram_core::requests::SearchRequest {
        query: "wifi password".into(),
        namespaces: Vec::new(),
        filter: None,
        k: Some(5),
        mode: engram_core::requests::SearchMode::Hybrid,
        ..Default::default()
    };
    for _ in 0..2 {
        let all = app.engine.search(&admin, req()).await.unwrap().hits;
        let mut all: Vec<String> = all.iter().map(|h| h.id.to_string()).collect();
        all.sort();
        let mut want = vec![public.clone(), secret.clone()];
        want.sort();
        assert_eq!(all, want);
        let mine = app.engine.search(&limited, req()).await.unwrap().hits;
        let mine: Vec<String> = mine.iter().map(|h| h.id.to_string()).collect();
        assert_eq!(mine, vec![public.clone()]);
    }
}
