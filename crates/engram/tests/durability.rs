//! Crash test in the spirit of Qdrant's crasher: run the real `engram serve`,
//! write in a loop, `kill -9` it at random moments, restart, and check that
//! every acknowledged memory is there, becomes searchable, and exists once.

use engram_client::{Client, ListRequest, NewMemory, SearchRequest};
use engram_testkit::{free_port, Node, NodeBuilder};
use futures::TryStreamExt;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn start(data: &Path, port: u16) -> Node {
    NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))
        .data_dir(data)
        .port(port)
        .log_to(&data.with_extension("log"))
        .env("ENGRAM_PERSIST_INTERVAL_SECS", "1")
        // Authentication is tested elsewhere; here every write is anonymous.
        .no_auth()
        // Jobs claimed by a killed server come back after this lease.
        .env("ENGRAM_JOB_LEASE_SECS", "2")
        .start()
        .await
}

fn memory(n: u64) -> NewMemory {
    let mut m = NewMemory::text(format!("crash test memory {n} with marker zq{n}x"));
    m.client_id = Some(format!("c{n}"));
    m.metadata = json!({"n": n}).as_object().cloned();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut rng = rand::thread_rng();
    // client_id -> id of every acknowledged write.
    let mut acked: HashMap<String, Uuid> = HashMap::new();
    let mut next = 0u64;
    let rounds = 8;
    for round in 0..rounds {
        let server = start(&data, port).await;
        let c = server.client(None);

        // Everything acknowledged before is still there after the restart.
        for (cid, id) in &acked {
            if let Err(e) = c.get(*id).await {
                panic!("round {round}: acknowledged {cid} ({id}) lost: {e}");
            }
        }

        // Write with 4 requests in flight; kill after a random number of
        // writes, so the kill lands while requests are being handled.
        let kill_at = next + rng.gen_range(20..100);
        let mut in_flight = tokio::task::JoinSet::new();
        while next < kill_at {
            while in_flight.len() < 4 {
                let m = memory(next);
                next += 1;
                let c: Client = c.clone();
                in_flight.spawn(async move {
                    let cid = m.client_id.clone()?;
                    let out = c.add("crash", vec![m], false).await.ok()?;
                    Some((cid, out.first()?.id))
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
    let server = start(&data, port).await;
    let c = server.client(None);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats = c.stats().await.unwrap();
        if stats.pending == 0 && stats.caught_up {
            assert_eq!(stats.failed, 0, "{stats:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "embedding never finished: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No duplicates: each client id appears exactly once.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let all: Vec<_> = c
        .list_all(ListRequest {
            namespace: Some("crash".into()),
            limit: Some(500),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    for m in all {
        *seen.entry(m.client_id.unwrap()).or_default() += 1;
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
            let mut q = SearchRequest::new(format!("crash test memory {n} with marker zq{n}x"));
            q.mode = Some(mode.into());
            q.k = Some(3);
            let hits = c.search(&q).await.unwrap().hits;
            assert!(
                hits.iter().any(|h| h.id == *id),
                "{cid} not found by {mode} search: {hits:?}"
            );
        }
    }
    // A retried write of an acknowledged client id returns the same memory.
    let (cid, id) = acked.iter().next().unwrap();
    let mut retry = NewMemory::text("retry");
    retry.client_id = Some(cid.clone());
    let r = c.add("crash", vec![retry], false).await.unwrap();
    assert_eq!(r[0].id, *id);
    assert_eq!(r[0].status, "duplicate");
}
