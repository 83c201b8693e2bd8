//! Crash test in the spirit of Qdrant's crasher: run the real `engram serve`,
//! write in a loop, `kill -9` it at random moments, restart, and check that
//! every acknowledged memory is there, becomes searchable, and exists once.

use engram_testkit::{free_port, model_dir};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data: &Path, port: u16) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_engram"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--model-dir")
            .arg(model_dir())
            .env("ENGRAM_PERSIST_INTERVAL_SECS", "1")
            // Authentication is tested elsewhere; here every write is anonymous.
            .env("ENGRAM_AUTH__ENABLED", "false")
            // Jobs claimed by a killed server come back after this lease.
            .env("ENGRAM_JOB_LEASE_SECS", "2")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting engram");
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_healthy(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("engram exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("engram did not become healthy");
    }

    fn kill9(&mut self) {
        // SIGKILL: no shutdown hooks, no flushing.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn post_json(http: &reqwest::Client, url: String, body: &Value) -> Value {
    http.post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = rand::thread_rng();
    // client_id -> id of every acknowledged write.
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut next = 0u64;
    let rounds = 8;
    for round in 0..rounds {
        let mut server = Server::start(&data, port);
        server.wait_healthy(&http).await;

        // Everything acknowledged before is still there after the restart.
        for (cid, id) in &acked {
            let r = http
                .get(format!("{}/v1/memories/{id}", server.url))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "round {round}: acknowledged {cid} ({id}) lost"
            );
        }

        // Write with 4 requests in flight; kill after a random number of
        // writes, so the kill lands while requests are being handled.
        let kill_at = next + rng.gen_range(20..100);
        let mut in_flight = tokio::task::JoinSet::new();
        while next < kill_at {
            while in_flight.len() < 4 {
                let cid = format!("c{next}");
                let body = json!({
                    "namespace": "crash",
                    "text": format!("crash test memory {next} with marker zq{next}x"),
                    "client_id": cid,
                    "metadata": {"n": next},
                });
                next += 1;
                let req = http.post(format!("{}/v1/memories", server.url)).json(&body);
                in_flight.spawn(async move {
                    match req.send().await {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.ok()?;
                            Some((cid, v["id"].as_str()?.to_string()))
                        }
                        _ => None,
                    }
                });
            }
            if let Some(Ok(Some((cid, id)))) = in_flight.join_next().await {
                acked.insert(cid, id);
            }
        }
        server.kill9();
        // Responses that arrived before the kill count as acknowledged.
        while let Some(r) = in_flight.join_next().await {
            if let Ok(Some((cid, id))) = r {
                acked.insert(cid, id);
            }
        }
    }
    assert!(
        acked.len() > 100,
        "too few writes to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{} of {next} writes acknowledged across {rounds} kills",
        acked.len()
    );

    // Final start: everything acknowledged is present, becomes searchable, once.
    let mut server = Server::start(&data, port);
    server.wait_healthy(&http).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats: Value = http
            .get(format!("{}/v1/stats", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["pending"] == 0 && stats["caught_up"] == true {
            assert_eq!(stats["failed"], 0, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "embedding never finished: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No duplicates: each client id appears exactly once.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let body = json!({"namespace": "crash", "limit": 500, "cursor": cursor});
        let page: Value = post_json(&http, format!("{}/v1/memories/list", server.url), &body).await;
        for m in page["memories"].as_array().unwrap() {
            *seen
                .entry(m["client_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(seen.values().all(|&n| n == 1), "duplicated memories");
    for (cid, id) in &acked {
        assert!(
            seen.contains_key(cid),
            "acknowledged {cid} missing from list"
        );
        // Searchable by its unique marker, through the keyword and the vector index.
        let n = &cid[1..];
        for mode in ["keyword", "vector"] {
            let hits: Value = post_json(&http, format!("{}/v1/search", server.url), &json!({"query": format!("crash test memory {n} with marker zq{n}x"), "mode": mode, "k": 3})).await;
            let ids: Vec<&str> = hits["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap())
                .collect();
            assert!(
                ids.contains(&id.as_str()),
                "{cid} not found by {mode} search: {hits}"
            );
        }
    }
    // A retried write of an acknowledged client id returns the same memory.
    let (cid, id) = acked.iter().next().unwrap();
    let r: Value = post_json(
        &http,
        format!("{}/v1/memories", server.url),
        &json!({"namespace": "crash", "text": "retry", "client_id": cid}),
    )
    .await;
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["status"], "duplicate");
}
