//! Test databases on a real PostgreSQL with pgvector, and rows written the
//! way the store writes them.
//!
//! The server comes from `ENGRAM_TEST_PG_URL` (default
//! `postgres://engram@127.0.0.1:55432/engram`); its role must be able to
//! create databases, and `vector` must be installable (preinstalled in
//! `template1`). Tests fail, never skip, when it is unreachable.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use engram_core::{DocAttrs, Key, Kind};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub const DEFAULT_URL: &str = "postgres://engram@127.0.0.1:55432/engram";

pub fn server_url() -> String {
    std::env::var("ENGRAM_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A fresh database with the store's schema, dropped by [`TestDb::finish`].
pub struct TestDb {
    pub pool: PgPool,
    name: String,
    admin: PgPool,
    next_seq: i64,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);

/// Drop test databases left by failed runs of processes that are gone
/// (their names carry the pid).
async fn drop_stale_databases(admin: &PgPool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'engram_pgidx_%'")
            .fetch_all(admin)
            .await
            .expect("list test databases");
    for name in names {
        let pid = name.rsplit('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin)
                .await;
        }
    }
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        let url = server_url();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL with pgvector is required at {url} (set ENGRAM_TEST_PG_URL): {e}"
                )
            });
        if !SWEPT.swap(true, Ordering::SeqCst) {
            drop_stale_databases(&admin).await;
        }
        let name = format!(
            "engram_pgidx_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .expect("drop stale test database");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        let opts = PgConnectOptions::from_str(&url)
            .expect("database URL")
            .database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .expect("connect to test database");
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .expect("apply migrations");
        TestDb {
            pool,
            name,
            admin,
            next_seq: 0,
        }
    }

    /// Drop the database (left in place when a test fails, for inspection).
    /// An autovacuum worker (a superuser process the test role may not
    /// terminate) can hold it for a moment: retry, and at worst leave it.
    pub async fn finish(self) {
        self.pool.close().await;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        for attempt in 1..=40 {
            match sqlx::raw_sql(&sql).execute(&self.admin).await {
                Ok(_) => return,
                Err(e) if attempt == 40 => {
                    eprintln!("leaving test database {} behind: {e}", self.name)
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }

    /// Insert memories as the store would (namespaces first), giving each the
    /// next change seq and advancing `meta.seq`. Returns their keys in order.
    pub async fn insert(&mut self, rows: &[Doc]) -> Vec<Key> {
        let mut keys = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(500) {
            let mut ns =
                QueryBuilder::<Postgres>::new("INSERT INTO namespaces (tenant, name, created_at) ");
            ns.push_values(chunk, |mut b, d| {
                b.push_bind(d.attrs.tenant.clone())
                    .push_bind(d.attrs.namespace.clone())
                    .push_bind(d.attrs.created_at);
            });
            ns.push(" ON CONFLICT DO NOTHING");
            ns.build()
                .execute(&self.pool)
                .await
                .expect("insert namespaces");

            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO memories (id, tenant, namespace, kind, state, checksum, seq, \
                 created_at, updated_at, expires_at, deleted_at, tags, metadata, text, embedding, \
                 occurred_at) ",
            );
            let first_seq = self.next_seq + 1;
            self.next_seq += chunk.len() as i64;
            qb.push_values(chunk.iter().enumerate(), |mut b, (i, d)| {
                let id = uuid::Uuid::now_v7();
                b.push_bind(id)
                    .push_bind(d.attrs.tenant.clone())
                    .push_bind(d.attrs.namespace.clone())
                    .push_bind(d.attrs.kind.as_str())
                    .push_bind(d.state)
                    .push_bind(id.to_string())
                    .push_bind(first_seq + i as i64)
                    .push_bind(d.attrs.created_at)
                    .push_bind(d.attrs.updated_at)
                    .push_bind(d.attrs.expires_at)
                    .push_bind(d.deleted_at)
                    .push_bind(d.attrs.tags.clone())
                    .push_bind(Json(Value::Object(d.attrs.metadata.clone())))
                    .push_bind(d.text.clone())
                    .push_bind(d.embedding.clone())
                    .push_unseparated("::real[]::vector")
                    .push_bind(d.attrs.occurred_at);
            });
            qb.push(" RETURNING key");
            let rows = qb
                .build()
                .fetch_all(&self.pool)
                .await
                .expect("insert memories");
            keys.extend(rows.iter().map(|r| r.get::<i64, _>(0) as Key));
        }
        sqlx::query("UPDATE meta SET value = $1 WHERE name = 'seq'")
            .bind(self.next_seq)
            .execute(&self.pool)
            .await
            .expect("advance meta.seq");
        keys
    }

    /// Filter attributes of every memory as the store reads them back
    /// (metadata decoded from jsonb by serde_json), by key.
    pub async fn read_attrs(&self) -> Vec<(Key, DocAttrs)> {
        let rows = sqlx::query(
            "SELECT key, tenant, namespace, kind, tags, metadata, created_at, updated_at, expires_at, \
             occurred_at FROM memories ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read attrs");
        rows.iter()
            .map(|r| {
                let key: i64 = r.get("key");
                let kind: String = r.get("kind");
                let metadata: Json<Map<String, Value>> = r.get("metadata");
                (
                    key as Key,
                    DocAttrs {
                        tenant: r.get("tenant"),
                        namespace: r.get("namespace"),
                        kind: Kind::parse(&kind).expect("kind"),
                        tags: r.get("tags"),
                        metadata: metadata.0,
                        created_at: r.get("created_at"),
                        updated_at: r.get("updated_at"),
                        expires_at: r.get("expires_at"),
                        occurred_at: r.get("occurred_at"),
                        session: None,
                    },
                )
            })
            .collect()
    }
}

/// One memory row to insert.
#[derive(Debug, Clone)]
pub struct Doc {
    pub attrs: DocAttrs,
    pub text: String,
    pub state: &'static str,
    pub deleted_at: Option<DateTime<Utc>>,
    pub embedding: Option<Vec<f32>>,
}

impl Doc {
    /// A ready, live memory of tenant `t1` in namespace `ns`.
    pub fn new(text: &str, embedding: Option<Vec<f32>>) -> Doc {
        let t: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        Doc {
            attrs: DocAttrs {
                tenant: "t1".into(),
                namespace: "ns".into(),
                kind: Kind::Fact,
                tags: Vec::new(),
                metadata: Map::new(),
                created_at: t,
                updated_at: t,
                expires_at: None,
                occurred_at: t,
                session: None,
            },
            text: text.into(),
            state: "ready",
            deleted_at: None,
            embedding,
        }
    }

    pub fn tenant(mut self, t: &str) -> Doc {
        self.attrs.tenant = t.into();
        self
    }

    pub fn namespace(mut self, ns: &str) -> Doc {
        self.attrs.namespace = ns.into();
        self
    }

    pub fn meta(mut self, m: Value) -> Doc {
        self.attrs.metadata = m.as_object().cloned().expect("metadata object");
        self
    }

    pub fn state(mut self, s: &'static str) -> Doc {
        self.state = s;
        self
    }

    pub fn deleted(mut self) -> Doc {
        self.deleted_at = Some(Utc::now());
        self
    }

    pub fn expires(mut self, t: DateTime<Utc>) -> Doc {
        self.attrs.expires_at = Some(t);
        self
    }
}
