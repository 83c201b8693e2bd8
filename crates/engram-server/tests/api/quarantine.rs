//! One bad row never takes the node down: a row that cannot be decoded is
//! quarantined (listed, counted, failing readiness) while every other write
//! keeps becoming searchable, and readiness fails when the indexer stalls.
//! Rows are damaged straight in the SQLite file, past the schema's guards,
//! as a damaged disk or a hand edit would.

use super::*;

/// A second connection to the app's database, with the guard triggers
/// dropped so that it can write what the store never would.
async fn raw(app: &App) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", app._dir.path().join("engram.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for t in ["memories_guard_update", "memories_guard_update_json"] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {t}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

/// Run `set` (SQL assignments) on memory `id` with a fresh seq, so the
/// change feed meets it again, as it would a write.
async fn rewrite(pool: &sqlx::SqlitePool, id: &str, set: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE meta SET value = value + 1 WHERE name = 'seq'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE memories SET {set}, seq = (SELECT value FROM meta WHERE name = 'seq') WHERE id = ?"
    ))
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn wait_ready(app: &App, want: StatusCode) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = app.call("GET", "/readyz?verbose=true", None).await;
        if s == want {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness stayed {s}, wanted {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_row_is_quarantined_and_everything_else_keeps_flowing() {
    let app = app().await;
    let bad = app
        .add("ns", "the lighthouse keeper logs the tides", json!({}))
        .await;
    app.add("other", "another tenant's namespace is busy too", json!({}))
        .await;
    let pool = raw(&app).await;
    rewrite(&pool, &bad, "kind = 'bogus'").await;

    // Writes after it, in any namespace, still become searchable.
    let after = app.add("ns", "the ferry leaves at dawn", json!({})).await;
    let hits = app
        .search(json!({"query": "when does the ferry leave", "namespaces": ["ns"]}))
        .await;
    assert_eq!(hits[0]["id"], after.as_str(), "{hits:?}");
    app.add("other", "still flowing elsewhere", json!({})).await;

    // The row is quarantined, listed for admins, counted, and left out.
    let (s, q) = app.call("GET", "/v1/quarantine", None).await;
    assert_eq!(s, StatusCode::OK, "{q}");
    let entries = q["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{q}");
    assert_eq!(entries[0]["memory_id"], bad.as_str());
    assert_eq!(entries[0]["source"], "feed");
    assert!(
        entries[0]["error"].as_str().unwrap().contains("kind"),
        "{q}"
    );
    let (_, stats) = app.call("GET", "/v1/stats", None).await;
    assert_eq!(stats["quarantined"], 1, "{stats}");
    let (s, page) = app.call("GET", "/v1/memories?namespace=ns", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![after.as_str()]);
    let (s, v) = app.call("GET", &format!("/v1/memories/{bad}"), None).await;
    assert_error(s, &v, StatusCode::INTERNAL_SERVER_ERROR, "corrupt_record");
    let res = app
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("engram_quarantined_rows 1"), "{text}");
    assert!(
        text.contains("engram_quarantined_total{source=\"feed\"}"),
        "{text}"
    );

    // Readiness tells the truth and names the row (never its content).
    let v = wait_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(v["status"], "failing", "{v}");
    assert_eq!(v["checks"]["quarantine"]["ok"], false, "{v}");
    assert_eq!(v["checks"]["index"]["ok"], true, "{v}");
    let (s, _) = app.call("GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    // Repaired (with a new seq, as any write), the row is released.
    rewrite(&pool, &bad, "kind = 'fact'").await;
    let v = wait_ready(&app, StatusCode::OK).await;
    assert_eq!(v["checks"]["quarantine"]["ok"], true, "{v}");
    let (_, q) = app.call("GET", "/v1/quarantine", None).await;
    assert_eq!(q["entries"], json!([]), "{q}");
    let hits = app
        .search(json!({"query": "who logs the tides", "namespaces": ["ns"]}))
        .await;
    assert_eq!(hits[0]["id"], bad.as_str(), "{hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_indexer_cannot_advance() {
    let app = app_opts(Opts {
        index_stall_after: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let a = app.add("ns", "first memory", json!({})).await;
    wait_ready(&app, StatusCode::OK).await;
    // A seq that is not an integer: the feed cannot be read past it (the
    // one row damage no code path can step over, since seq is the feed's
    // order). The schema's guards prevent it; a damaged file may not.
    let pool = raw(&app).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE meta SET value = value + 1 WHERE name = 'seq'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE memories SET seq = (SELECT value FROM meta WHERE name = 'seq') - 0.5 WHERE id = ?",
    )
    .bind(&a)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, _) = app
        .call(
            "POST",
            "/v1/memories",
            Some(json!({"namespace": "ns", "text": "waits behind the damage"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v = wait_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    let err = v["checks"]["index"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("stalled"), "{v}");
    assert!(err.contains("last error"), "{v}");
    // Repaired, the indexer catches up and readiness recovers.
    sqlx::query("UPDATE memories SET seq = CAST(seq + 0.5 AS INTEGER) WHERE id = ?")
        .bind(&a)
        .execute(&pool)
        .await
        .unwrap();
    wait_ready(&app, StatusCode::OK).await;
    let hits = app
        .search(json!({"query": "waits behind the damage", "namespaces": ["ns"]}))
        .await;
    assert!(!hits.is_empty());
}
