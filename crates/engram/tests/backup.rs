//! Restore drill with the real binary: back up to S3 (s3s-fs, started by
//! `scripts/services.sh start s3`) while a client keeps writing, restore into
//! another data directory, and check the restored server has the same
//! records, searchable, with an intact audit chain. A damaged backup is
//! refused and leaves nothing behind.

use engram_client::{Client, ListRequest, NewMemory, SearchRequest};
use engram_testkit::{model_dir, Node, NodeBuilder};
use futures::TryStreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The S3 settings as `ENGRAM_*` variables, under a prefix of this run.
fn s3_env(prefix: &str) -> Vec<(String, String)> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    vec![
        ("ENGRAM_OBJECTS".into(), "s3".into()),
        (
            "ENGRAM_S3__ENDPOINT".into(),
            env("ENGRAM_TEST_S3_ENDPOINT", "http://127.0.0.1:19000"),
        ),
        ("ENGRAM_S3__ALLOW_HTTP".into(), "true".into()),
        (
            "ENGRAM_S3__BUCKET".into(),
            env("ENGRAM_TEST_S3_BUCKET", "engram"),
        ),
        ("ENGRAM_S3__PREFIX".into(), prefix.into()),
        (
            "ENGRAM_S3__ACCESS_KEY_ID".into(),
            env("ENGRAM_TEST_S3_ACCESS_KEY", "engram"),
        ),
        (
            "ENGRAM_S3__SECRET_ACCESS_KEY".into(),
            env("ENGRAM_TEST_S3_SECRET_KEY", "engram-secret-key"),
        ),
    ]
}

fn engram(args: &[&str], data: &Path, env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--model-dir")
        .arg(model_dir())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("running engram")
}

async fn start(data: &Path) -> Node {
    NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))
        .data_dir(data)
        .no_auth()
        .log_inherit()
        .start()
        .await
}

/// Every memory: id -> text.
async fn all(c: &Client) -> HashMap<String, String> {
    let all: Vec<_> = c
        .list_all(ListRequest {
            limit: Some(500),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    all.into_iter()
        .map(|m| (m.id.to_string(), m.text))
        .collect()
}

async fn add(c: &Client, text: &str, wait: bool) -> Option<String> {
    let out = c
        .add("drill", vec![NewMemory::text(text)], wait)
        .await
        .ok()?;
    Some(out.first()?.id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_backup_under_write_load_restores_the_same_searchable_records() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = start(&a_dir).await;
    let http = a.client(None);
    for i in 0..30 {
        add(
            &http,
            &format!("seed memory {i}: the lighthouse keeper logs storm {i}"),
            true,
        )
        .await
        .unwrap();
    }
    let marker = add(
        &http,
        "The backup drill marker: quokkas audit the vault on Thursdays",
        true,
    )
    .await
    .unwrap();

    // A client keeps writing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot_free::Acked::default());
    let writer = {
        let (http, stop, acked) = (http.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Some(id) = add(
                    &http,
                    &format!("load memory {n} written during the backup"),
                    false,
                )
                .await
                {
                    acked.push(id);
                }
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_backup = acked.snapshot();
    let prefix = format!("drill-{}-{}", std::process::id(), chrono_free_now());
    let env = s3_env(&prefix);
    let out = engram(&["backup", "create", "--name", "drill"], &a_dir, &env);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = &manifest["meta"]["snapshot"];
    assert!(
        acked.snapshot().len() > before_backup.len(),
        "writes went on during the backup"
    );

    // Listed and verifiable.
    let out = engram(&["backup", "list"], &a_dir, &env);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let out = engram(&["backup", "verify", "drill"], &a_dir, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restore elsewhere and compare with the source.
    let out = engram(&["restore", "drill"], &b_dir, &env);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = all(&http).await;
    let b = start(&b_dir).await;
    let bc = b.client(None);
    let restored = all(&bc).await;
    assert_eq!(
        restored.len() as u64,
        snap["live"].as_u64().unwrap(),
        "{snap}"
    );
    for id in &before_backup {
        assert!(
            restored.contains_key(id),
            "acknowledged before the backup, missing: {id}"
        );
    }
    for (id, text) in &restored {
        assert_eq!(
            source.get(id),
            Some(text),
            "restored record differs from the source: {id}"
        );
    }
    assert!(
        restored.len() < source.len(),
        "writes after the snapshot are not in it"
    );

    // Memories still pending at the snapshot get embedded by the restored
    // node (their jobs were in the backup); then everything is searchable.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = bc.stats().await.unwrap();
        if stats.pending == 0 && stats.caught_up {
            assert_eq!(stats.failed, 0, "{stats:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restored node never caught up: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mode in ["vector", "keyword"] {
        let mut q = SearchRequest::new("which animals inspect the vault");
        q.mode = Some(mode.into());
        q.k = Some(3);
        let r = bc.search(&q).await.unwrap();
        assert_eq!(r.hits[0].id.to_string(), marker, "{mode}: {r:?}");
    }
    let v = bc.get_json("/v1/audit/verify", &[]).await.unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // The data directory of a restore must be empty.
    let out = engram(&["restore", "drill"], &b_dir, &env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a database"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_and_nothing_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, c_dir, store) = (
        dir.path().join("a"),
        dir.path().join("c"),
        dir.path().join("backups"),
    );
    {
        let a = start(&a_dir).await;
        let http = a.client(None);
        for i in 0..5 {
            add(&http, &format!("memory {i}"), true).await.unwrap();
        }
    }
    let loc = store.display().to_string();
    let out = engram(
        &["backup", "create", "--name", "x", "--dir", &loc],
        &a_dir,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = store.join("x/engram.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&db, bytes).unwrap();

    let out = engram(&["backup", "verify", "x", "--dir", &loc], &a_dir, &[]);
    assert!(!out.status.success());
    let out = engram(&["restore", "x", "--dir", &loc], &c_dir, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt") && err.contains("SHA-256"), "{err}");
    assert!(!c_dir.join("engram.db").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&c_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn chrono_free_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

mod parking_lot_free {
    /// Ids acknowledged by the server, in order.
    #[derive(Default)]
    pub struct Acked(std::sync::Mutex<Vec<String>>);

    impl Acked {
        pub fn push(&self, id: String) {
            self.0.lock().unwrap().push(id);
        }
        pub fn snapshot(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }
}
