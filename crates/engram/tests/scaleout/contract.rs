//! One contract, both deployments: the same cases run over HTTP against a
//! real `engram serve` in the embedded mode (SQLite, usearch HNSW, tantivy,
//! the store's job queue, in-process cache) and in the scale-out mode
//! (PostgreSQL with pgvector and full-text search, NATS JetStream, Redis).
//! CRUD, idempotency, soft delete and restore, every filter operator in every
//! search mode (and `k` stays `k` under a filter), list filters, and a
//! rebuild of the derived indexes. The store-level cases (dead-letter queue,
//! change feed, audit chain) are in `engram_core::conformance`, run against
//! both stores by their crates.

use super::*;

/// A deployment under test: its node, and how to start it again.
struct Deployment {
    cluster: Cluster,
    args: Vec<String>,
    url: String,
    _data: Option<tempfile::TempDir>,
}

impl Deployment {
    async fn new(mode: &str) -> Deployment {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let tag = &suffix[20..];
        let (mut env, data) = match mode {
            "embedded" => (Vec::new(), Some(tempfile::tempdir().unwrap())),
            _ => {
                let db = fresh_database(&format!("engram_contract_{tag}")).await;
                (scale_out_env(&db, &format!("contract{tag}")), None)
            }
        };
        env.push(("ENGRAM_AUTH__ENABLED".into(), "false".into()));
        let cluster = Cluster {
            env,
            logs: tempfile::tempdir().unwrap(),
            data_dir: data.as_ref().map(|d| d.path().to_path_buf()),
        };
        let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        Deployment {
            cluster,
            args: ["serve", "--listen", &addr, "--workers", "1"]
                .map(String::from)
                .to_vec(),
            url: format!("http://{addr}"),
            _data: data,
        }
    }

    async fn start(&self, http: &reqwest::Client) -> Node {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut node = self.cluster.spawn("node", &args, Some(self.url.clone()));
        node.wait_ready(http).await;
        node
    }

    /// `engram rebuild` with the node's configuration (the node stopped).
    fn rebuild(&self) {
        let mut node = self.cluster.spawn("rebuild", &["rebuild"], None);
        let status = node.child.wait().unwrap();
        assert!(
            status.success(),
            "engram rebuild: {status}\n{}",
            node.log_text()
        );
    }
}

async fn post(http: &reqwest::Client, url: &str, path: &str, body: Value) -> (u16, Value) {
    call(
        http,
        reqwest::Method::POST,
        format!("{url}{path}"),
        Some(body),
    )
    .await
}

async fn get(http: &reqwest::Client, url: &str, path: &str) -> (u16, Value) {
    call(http, reqwest::Method::GET, format!("{url}{path}"), None).await
}

/// The hits of a search, which must answer 200.
async fn hits(http: &reqwest::Client, url: &str, body: Value) -> Vec<Value> {
    let (s, v) = post(http, url, "/v1/search", body.clone()).await;
    assert_eq!(s, 200, "{body} -> {v}");
    v["hits"].as_array().unwrap().clone()
}

/// `metadata.i` of each hit of a search.
async fn hit_numbers(http: &reqwest::Client, url: &str, body: Value) -> Vec<i64> {
    let hits = hits(http, url, body).await;
    hits.iter()
        .map(|h| h["metadata"]["i"].as_i64().unwrap())
        .collect()
}

async fn hit_ids(http: &reqwest::Client, url: &str, body: Value) -> Vec<String> {
    let hits = hits(http, url, body).await;
    hits.iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// Ids found by a keyword search in namespace `ns`.
async fn search_texts(http: &reqwest::Client, url: &str, ns: &str, query: &str) -> Vec<String> {
    let body = json!({"query": query, "namespaces": [ns], "mode": "keyword", "k": 10});
    hit_ids(http, url, body).await
}

/// Poll until `f` holds (derived indexes follow the store asynchronously).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crud_soft_delete_and_restore(http: &reqwest::Client, url: &str) {
    let (s, v) = post(
        http,
        url,
        "/v1/memories?wait=true",
        json!({"namespace": "crud", "text": "The espresso machine descales on Fridays",
               "metadata": {"room": "kitchen", "floor": 2}, "tags": ["facilities"], "kind": "fact"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["state"].as_str()),
        (Some("created"), Some("ready"))
    );
    let id = v["id"].as_str().unwrap().to_string();
    let (s, m) = get(http, url, &format!("/v1/memories/{id}")).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["text"], "The espresso machine descales on Fridays");
    assert_eq!(m["metadata"], json!({"room": "kitchen", "floor": 2}));
    assert_eq!(
        (m["tags"].clone(), m["kind"].clone()),
        (json!(["facilities"]), json!("fact"))
    );
    assert_eq!(m["embedding_model"], "all-MiniLM-L6-v2", "{m}");
    assert!(m["embedding_version"].is_string(), "{m}");

    // A metadata change keeps the embedding and is filterable at once.
    let (s, v) = call(
        http,
        reqwest::Method::PATCH,
        format!("{url}/v1/memories/{id}?wait=true"),
        Some(json!({"metadata": {"room": "kitchen", "floor": 3}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "ready", "{v}");
    let found = hit_ids(
        http,
        url,
        json!({"query": "espresso", "namespaces": ["crud"],
        "mode": "keyword", "filter": {"metadata.floor": 3}}),
    )
    .await;
    assert_eq!(found, vec![id.clone()]);

    // A text change re-embeds: the new words find it, the old ones not.
    let (s, v) = call(
        http,
        reqwest::Method::PATCH,
        format!("{url}/v1/memories/{id}?wait=true"),
        Some(json!({"text": "The kettle limescale filter is swapped monthly"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        search_texts(http, url, "crud", "kettle limescale").await,
        vec![id.clone()]
    );
    assert!(search_texts(http, url, "crud", "espresso descales")
        .await
        .is_empty());
    let body = json!({"query": "how often is the kettle filter changed", "namespaces": ["crud"], "mode": "vector", "k": 1});
    let (_, v) = post(http, url, "/v1/search", body).await;
    assert_eq!(v["hits"][0]["id"], id.as_str(), "{v}");

    // Soft delete: gone from get, list and search at once; restore brings it back.
    let (s, _) = call(
        http,
        reqwest::Method::DELETE,
        format!("{url}/v1/memories/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = get(http, url, &format!("/v1/memories/{id}")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("memory_not_found")),
        "{v}"
    );
    let (_, page) = get(http, url, "/v1/memories?namespace=crud").await;
    assert_eq!(page["memories"], json!([]), "{page}");
    assert!(search_texts(http, url, "crud", "kettle limescale")
        .await
        .is_empty());
    let (s, v) = post(http, url, &format!("/v1/memories/{id}/restore"), json!({})).await;
    assert_eq!(s, 200, "{v}");
    eventually("a restored memory is searchable again", || async {
        search_texts(http, url, "crud", "kettle limescale").await == vec![id.clone()]
    })
    .await;

    // An unknown id.
    let (s, v) = get(http, url, &format!("/v1/memories/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("memory_not_found"))
    );
}

async fn idempotency(http: &reqwest::Client, url: &str) {
    let create = |body: Value| post(http, url, "/v1/memories", body);
    let (s, a) =
        create(json!({"namespace": "idem", "text": "Rotate the TLS certificate before May"})).await;
    assert_eq!((s, a["status"].as_str()), (202, Some("created")), "{a}");
    // The same normalised text: the existing id.
    let (s, b) =
        create(json!({"namespace": "idem", "text": "  Rotate the TLS   certificate before May\n"}))
            .await;
    assert_eq!(
        (s, b["status"].as_str(), &b["id"]),
        (202, Some("duplicate"), &a["id"]),
        "{b}"
    );
    // The same client id with other text: the existing id.
    let (_, c) =
        create(json!({"namespace": "idem", "text": "first attempt", "client_id": "req-7"})).await;
    let (_, d) =
        create(json!({"namespace": "idem", "text": "retried attempt", "client_id": "req-7"})).await;
    assert_eq!(
        (d["status"].as_str(), &d["id"]),
        (Some("duplicate"), &c["id"]),
        "{d}"
    );
    // Another namespace is another memory.
    let (_, e) =
        create(json!({"namespace": "idem2", "text": "Rotate the TLS certificate before May"}))
            .await;
    assert_eq!(e["status"], "created");
    assert_ne!(e["id"], a["id"]);
    // A batch repeating itself stores each text once.
    let (s, v) = post(
        http,
        url,
        "/v1/memories?wait=true",
        json!({"namespace": "idem", "memories": [{"text": "batch twin"}, {"text": "batch  twin"}]}),
    )
    .await;
    assert!(s == 201 || s == 202, "{v}");
    let m = v["memories"].as_array().unwrap();
    assert_eq!(m[0]["id"], m[1]["id"], "{v}");
    let (_, page) = post(
        http,
        url,
        "/v1/memories/list",
        json!({"namespace": "idem", "limit": 100}),
    )
    .await;
    assert_eq!(page["memories"].as_array().unwrap().len(), 3, "{page}");
}

const N: i64 = 24;

/// A filter and which `i` of the fixture it admits.
type FilterCase = (Value, Box<dyn Fn(i64) -> bool>);

fn filter_cases() -> Vec<FilterCase> {
    vec![
        (json!({"metadata.group": "a"}), Box::new(|i| i % 3 == 0)),
        (
            json!({"metadata.group": {"$ne": "a"}}),
            Box::new(|i| i % 3 != 0),
        ),
        (
            json!({"metadata.group": {"$in": ["b", "c"]}}),
            Box::new(|i| i % 3 != 0),
        ),
        (
            json!({"metadata.group": {"$nin": ["b"]}}),
            Box::new(|i| i % 3 != 1),
        ),
        (
            json!({"metadata.i": {"$gte": 5, "$lt": 12}}),
            Box::new(|i| (5..12).contains(&i)),
        ),
        (json!({"metadata.score": {"$gt": 3.5}}), Box::new(|i| i > 7)),
        (
            json!({"metadata.at": {"$lte": "2026-01-10T00:00:00Z"}}),
            Box::new(|i| i <= 9),
        ),
        (
            json!({"metadata.at": {"$gt": "2026-01-20T00:00:00+02:00"}}),
            Box::new(|i| i >= 19),
        ),
        (
            json!({"metadata.opt": {"$exists": true}}),
            Box::new(|i| i % 2 == 0),
        ),
        (
            json!({"metadata.opt": {"$exists": false}}),
            Box::new(|i| i % 2 == 1),
        ),
        (
            json!({"tags": {"$in": ["urgent", "vip"]}}),
            Box::new(|i| i % 4 == 0 || i % 5 == 0),
        ),
        (
            json!({"tags": {"$nin": ["urgent"]}}),
            Box::new(|i| i % 4 != 0),
        ),
        (json!({"kind": "fact"}), Box::new(|i| i % 2 == 0)),
        (
            json!({"$not": {"kind": "message"}}),
            Box::new(|i| i % 2 == 0),
        ),
        (
            json!({"$or": [{"metadata.group": "a"}, {"tags": {"$in": ["vip"]}}]}),
            Box::new(|i| i % 3 == 0 || i % 5 == 0),
        ),
        (
            json!({"$and": [{"metadata.i": {"$lt": 20}}, {"$not": {"metadata.group": "b"}}]}),
            Box::new(|i| i < 20 && i % 3 != 1),
        ),
        (
            json!({"created_at": {"$gt": "2000-01-01T00:00:00Z"}}),
            Box::new(|_| true),
        ),
        (json!({"metadata.missing": "x"}), Box::new(|_| false)),
    ]
}

async fn load_filter_fixture(http: &reqwest::Client, url: &str) {
    let memories: Vec<Value> = (0..N)
        .map(|i| {
            let group = ["a", "b", "c"][(i % 3) as usize];
            let mut meta = json!({
                "i": i,
                "group": group,
                "score": i as f64 / 2.0,
                "at": format!("2026-01-{:02}T00:00:00Z", i + 1),
            });
            if i % 2 == 0 {
                meta["opt"] = json!(true);
            }
            let mut tags = Vec::new();
            if i % 4 == 0 {
                tags.push("urgent");
            }
            if i % 5 == 0 {
                tags.push("vip");
            }
            json!({"text": format!("contract drill entry {i}: inspect pump number {i}"),
                   "metadata": meta, "tags": tags,
                   "kind": if i % 2 == 0 { "fact" } else { "message" }})
        })
        .collect();
    let (s, v) = post(
        http,
        url,
        "/v1/memories?wait=true",
        json!({"namespace": "filters", "memories": memories}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

/// Every filter in every search mode and in list; returns what each search
/// found (to compare after a rebuild).
async fn filters_in_every_mode(http: &reqwest::Client, url: &str) -> Vec<Vec<i64>> {
    let mut seen = Vec::new();
    for (filter, admits) in filter_cases() {
        let want: Vec<i64> = (0..N).filter(|&i| admits(i)).collect();
        for mode in ["vector", "keyword", "hybrid"] {
            let body = json!({"query": "contract drill pump", "namespaces": ["filters"],
                              "mode": mode, "k": 50, "filter": filter});
            let mut got = hit_numbers(http, url, body).await;
            seen.push(got.clone());
            got.sort_unstable();
            assert_eq!(got, want, "{mode} search with {filter}");
        }
        let (s, page) = post(
            http,
            url,
            "/v1/memories/list",
            json!({"namespace": "filters", "limit": 100, "filter": filter}),
        )
        .await;
        assert_eq!(s, 200, "{page}");
        let listed: Vec<i64> = page["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["metadata"]["i"].as_i64().unwrap())
            .collect();
        assert_eq!(listed, want, "list with {filter}");
    }
    // k stays k: a filter admitting 8 of 24 still gives k = 5 hits.
    for mode in ["vector", "keyword", "hybrid"] {
        let body = json!({"query": "contract drill pump", "namespaces": ["filters"], "mode": mode,
                          "k": 5, "filter": {"metadata.group": "a"}});
        let got = hit_numbers(http, url, body).await;
        assert_eq!(got.len(), 5, "{mode}: {got:?}");
        assert!(got.iter().all(|i| i % 3 == 0), "{mode}: {got:?}");
    }
    // A bad filter is a 400 with a code, in both modes alike.
    let (s, v) = post(
        http,
        url,
        "/v1/search",
        json!({"query": "x", "filter": {"metadata.i": {"$regex": "."}}}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_filter")),
        "{v}"
    );
    seen
}

async fn contract(mode: &str) {
    let http = client(60);
    let d = Deployment::new(mode).await;
    let node = d.start(&http).await;
    crud_soft_delete_and_restore(&http, &d.url).await;
    idempotency(&http, &d.url).await;
    load_filter_fixture(&http, &d.url).await;
    let before = filters_in_every_mode(&http, &d.url).await;

    // Rebuild the derived indexes with the node stopped (killed: nothing
    // depends on a clean shutdown); the same searches give the same hits.
    drop(node);
    d.rebuild();
    let _node = d.start(&http).await;
    let after = filters_in_every_mode(&http, &d.url).await;
    assert_eq!(before, after, "search results changed across a rebuild");
    assert_eq!(
        search_texts(&http, &d.url, "idem", "rotate certificate")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_mode_meets_the_contract() {
    contract("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_out_mode_meets_the_contract() {
    contract("scale-out").await;
}
