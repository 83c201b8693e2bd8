//! Re-embedding in the scale-out mode with real parts: the nodes move from
//! the local model to a remote OpenAI-compatible embedder (an embedded engram
//! serving `/v1/embeddings`), over PostgreSQL, NATS and Redis, while searches
//! keep being answered.

use super::*;

const TEXTS: [&str; 6] = [
    "The espresso machine in the kitchen needs descaling every month",
    "Our Kubernetes cluster autoscaler adds nodes when pods are pending",
    "Grandmother's apple pie recipe uses cinnamon and brown sugar",
    "Migrating birds navigate using the Earth's magnetic field",
    "PostgreSQL vacuum reclaims space left by dead tuples",
    "Saturn's rings are made mostly of water ice particles",
];

async fn top1(http: &reqwest::Client, node: &str, query: &str) -> Option<String> {
    let (status, v) = call(
        http,
        reqwest::Method::POST,
        format!("{node}/v1/search"),
        Some(json!({ "query": query, "k": 1, "mode": "vector", "namespaces": ["notes"] })),
    )
    .await;
    assert_eq!(status, 200, "search: {v}");
    v["hits"][0]["id"].as_str().map(str::to_string)
}

/// Add a memory to `notes`; its id.
async fn add(http: &reqwest::Client, node: &str, text: &str) -> String {
    let (s, v) = call(
        http,
        reqwest::Method::POST,
        format!("{node}/v1/memories"),
        Some(json!({ "namespace": "notes", "text": text })),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// The model version recorded on a memory's vector.
async fn embedding_version(http: &reqwest::Client, node: &str, id: &str) -> Value {
    let (s, m) = call(
        http,
        reqwest::Method::GET,
        format!("{node}/v1/memories/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{m}");
    m["embedding_version"].clone()
}

async fn stats(http: &reqwest::Client, node: &str) -> Value {
    let (status, v) = call(http, reqwest::Method::GET, format!("{node}/v1/stats"), None).await;
    assert_eq!(status, 200, "stats: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_out_mode_moves_to_a_remote_embedder_while_serving() {
    let http = client(30);
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    // The remote embedder: an embedded engram's /v1/embeddings (the same
    // all-MiniLM-L6-v2, recorded under another version).
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = Cluster {
        env: vec![("ENGRAM_AUTH__ENABLED".into(), "false".into())],
        logs: tempfile::tempdir().unwrap(),
        data_dir: Some(remote_dir.path().to_path_buf()),
    };
    let mut embedder = remote.serve("remote-embedder", "127.0.0.1");
    embedder.wait_ready(&http).await;

    let db = fresh_database(&format!("reembed_{suffix}")).await;
    let mut cluster = Cluster {
        env: scale_out_env(&db, &format!("reembed-{suffix}")),
        logs: tempfile::tempdir().unwrap(),
        data_dir: None,
    };
    let mut api = cluster.serve("api", "127.0.0.1");
    let mut worker = cluster.worker("worker");
    api.wait_ready(&http).await;
    let mut ids = Vec::new();
    for t in TEXTS {
        ids.push(add(&http, api.url(), t).await);
    }
    wait_all_ready(&http, &mut api, &mut worker, &ids).await;
    let old_version = stats(&http, api.url()).await["model"]["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Restart every node with the remote embedder as the next model.
    drop(api);
    drop(worker);
    cluster.env.extend(
        [
            ("ENGRAM_EMBEDDER__NEXT__KIND", "openai".to_string()),
            (
                "ENGRAM_EMBEDDER__NEXT__BASE_URL",
                format!("{}/v1", embedder.url()),
            ),
            ("ENGRAM_EMBEDDER__NEXT__MODEL", "all-MiniLM-L6-v2".into()),
            ("ENGRAM_EMBEDDER__NEXT__VERSION", "remote-1".into()),
            ("ENGRAM_EMBEDDER__NEXT__DIMS", "384".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    let mut api = cluster.serve("api-next", "127.0.0.1");
    api.wait_ready(&http).await;
    // Searches right away, before any worker moved anything: the old model.
    for (t, id) in TEXTS.iter().zip(&ids) {
        assert_eq!(
            top1(&http, api.url(), t).await.as_deref(),
            Some(id.as_str())
        );
    }
    let r = &stats(&http, api.url()).await["reembed"];
    assert_eq!(r["target"]["version"], "remote-1", "{r}");
    assert_eq!(r["progress"].as_f64(), Some(0.0), "{r}");
    let mut worker = cluster.worker("worker-next");

    // Until the switch and after it, every search finds its memory.
    let started = Instant::now();
    let mut searches = 0;
    loop {
        let k = searches % TEXTS.len();
        let got = top1(&http, api.url(), TEXTS[k]).await;
        assert_eq!(got.as_deref(), Some(ids[k].as_str()), "during the move");
        searches += 1;
        let s = stats(&http, api.url()).await;
        if s["model"]["version"] == "remote-1" {
            assert!(s.get("reembed").is_none(), "{s}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no switch: {s}\napi:\n{}\nworker:\n{}",
            api.log_text(),
            worker.log_text()
        );
        worker.check_alive();
        api.check_alive();
    }
    assert!(searches > 0);
    for (t, id) in TEXTS.iter().zip(&ids) {
        assert_eq!(
            top1(&http, api.url(), t).await.as_deref(),
            Some(id.as_str())
        );
        assert_eq!(embedding_version(&http, api.url(), id).await, "remote-1");
    }
    // The worker follows the switch: a new write gets the new model.
    let new_id = add(
        &http,
        api.url(),
        "The lighthouse keeper logs every passing ship",
    )
    .await;
    wait_all_ready(&http, &mut api, &mut worker, std::slice::from_ref(&new_id)).await;
    assert_eq!(
        embedding_version(&http, api.url(), &new_id).await,
        "remote-1"
    );
    assert_ne!(old_version, "remote-1");

    // A node configured with only the old model now refuses to start.
    drop(api);
    let old_env: Vec<(String, String)> = cluster
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("ENGRAM_EMBEDDER__NEXT__"))
        .cloned()
        .collect();
    let stale = Cluster {
        env: old_env,
        logs: tempfile::tempdir().unwrap(),
        data_dir: None,
    };
    let mut old = stale.serve("api-old", "127.0.0.1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = old.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            old.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = old.log_text();
    assert!(
        log.contains("remote-1") && log.contains("embedder.next"),
        "{log}"
    );
}
