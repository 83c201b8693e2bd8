//! engram-redis: the [`Cache`] of the scale-out mode, shared by every node.
//!
//! Keys live under a configurable prefix: `<prefix>emb:…` and `<prefix>res:…`
//! hold query embeddings and search rankings (`SET … PX <ttl>`), and
//! `<prefix>gen:<tenant>` holds the tenant's write generation (`INCR`, never
//! expiring). What is cached and when generations move is described in
//! [`engram_core::cache`].
//!
//! Every command is bounded by a timeout, so a slow or unreachable Redis
//! costs a search at most that long; the engine then carries on without the
//! cache.

use async_trait::async_trait;
use engram_core::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::Duration;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL {url}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot connect to Redis at {url}: no answer within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    #[error("Redis {op} failed: {source}")]
    Command {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {op} got no answer within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
}

impl From<RedisError> for engram_core::Error {
    fn from(e: RedisError) -> Self {
        engram_core::Error::unavailable("redis", e)
    }
}

/// Timeouts of a [`RedisCache`].
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    /// The most [`RedisCache::connect_with`] waits for Redis to answer.
    pub connect_timeout: Duration,
    /// The most one command waits (a cache lookup is worth little after that).
    pub op_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_millis(500),
        }
    }
}

/// A [`Cache`] in Redis, shared by every node that uses the same server and prefix.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`), keeping every
    /// key under `prefix` (e.g. `engram:`). Fails within 5 s with a clear
    /// error if Redis does not answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisError> {
        Self::connect_with(url, prefix, RedisOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        prefix: &str,
        o: RedisOptions,
    ) -> Result<Self, RedisError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|source| RedisError::InvalidUrl {
            url: shown.clone(),
            source,
        })?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(o.connect_timeout.min(Duration::from_secs(2))))
            .set_response_timeout(Some(o.op_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, cfg).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = match tokio::time::timeout(o.connect_timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => return Err(RedisError::Connect { url: shown, source }),
            Err(_) => {
                return Err(RedisError::ConnectTimeout {
                    url: shown,
                    timeout: o.connect_timeout,
                })
            }
        };
        Ok(RedisCache {
            conn,
            prefix: prefix.to_string(),
            op_timeout: o.op_timeout,
        })
    }

    /// The prefix every key of this cache starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn generation_key(&self, tenant: &str) -> String {
        format!("{}gen:{tenant}", self.prefix)
    }

    async fn run<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Ok(r) => r.map_err(|source| RedisError::Command { op, source }),
            Err(_) => Err(RedisError::Timeout {
                op,
                timeout: self.op_timeout,
            }),
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> engram_core::Result<Option<Vec<u8>>> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.key(key)).clone();
        Ok(self.run("GET", cmd.query_async(&mut c)).await?)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> engram_core::Result<()> {
        let ms = ttl.as_millis().min(u64::MAX as u128) as u64;
        if ms == 0 {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(ms)
            .clone();
        Ok(self.run("SET", cmd.query_async::<()>(&mut c)).await?)
    }

    async fn generation(&self, tenant: &str) -> engram_core::Result<u64> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.generation_key(tenant)).clone();
        let g: Option<u64> = self.run("GET", cmd.query_async(&mut c)).await?;
        Ok(g.unwrap_or(0))
    }

    async fn bump(&self, tenant: &str) -> engram_core::Result<u64> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("INCR").arg(self.generation_key(tenant)).clone();
        Ok(self.run("INCR", cmd.query_async(&mut c)).await?)
    }
}

/// A URL with its password replaced, for errors and logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(redact_url("redis://token@cache"), "redis://***@cache");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[tokio::test]
    async fn a_bad_url_is_a_clear_error() {
        let e = RedisCache::connect("http://:pw@nowhere", "x:")
            .await
            .unwrap_err();
        assert!(matches!(e, RedisError::InvalidUrl { .. }), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e: engram_core::Error = e.into();
        assert!(matches!(
            e,
            engram_core::Error::Unavailable { what: "redis", .. }
        ));
    }
}
