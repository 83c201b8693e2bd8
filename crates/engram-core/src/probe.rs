//! Readiness in detail (`GET /readyz?verbose=true`, `engram probe`): each
//! back-end checked on its own, with its own timeout and latency.
//!
//! The store, the indexes, the job queue and the embedder are needed to
//! serve writes and searches: any of them failing makes the node `failing`.
//! The LLM only serves `/v1/ask`: when it alone fails the node is `degraded`
//! (retrieval still works).

use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// Readiness fails when the indexes are this many changes behind the store.
pub const MAX_INDEX_LAG: u64 = 10_000;

/// How the indexer is doing, for readiness: when it last made progress (or
/// found nothing to do) and its last error.
#[derive(Debug, Clone)]
pub struct IndexerHealth {
    pub last_progress: Instant,
    pub last_error: Option<String>,
}

impl IndexerHealth {
    pub(crate) fn new() -> Self {
        IndexerHealth {
            last_progress: Instant::now(),
            last_error: None,
        }
    }
}

/// The overall verdict of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ProbeStatus {
    /// Everything answered.
    Ok,
    /// Retrieval works; the LLM of `/v1/ask` does not.
    Degraded,
    /// Writes or searches cannot be served.
    Failing,
}

impl ProbeStatus {
    /// Whether the node can take traffic (`ok` or `degraded`).
    pub fn serving(self) -> bool {
        self != ProbeStatus::Failing
    }
}

/// One check: did it pass, how long it took, and why not.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeCheck {
    pub ok: bool,
    /// Wall time of the check, in milliseconds.
    pub ms: f64,
    /// Not run: nothing to check (no LLM configured).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// What was checked against (the LLM model, the index lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProbeCheck {
    fn skipped(detail: &str) -> Self {
        ProbeCheck {
            ok: true,
            ms: 0.0,
            skipped: true,
            detail: Some(detail.to_string()),
            error: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeChecks {
    pub store: ProbeCheck,
    pub index: ProbeCheck,
    /// Rows that cannot be decoded (see [`crate::quarantine`]).
    pub quarantine: ProbeCheck,
    pub queue: ProbeCheck,
    pub embedder: ProbeCheck,
    pub llm: ProbeCheck,
}

/// `{"status": "ok"|"degraded"|"failing", "checks": {"store": {"ok", "ms", ...}, ...}}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeReport {
    pub status: ProbeStatus,
    pub checks: ProbeChecks,
}

impl ProbeReport {
    fn from_checks(checks: ProbeChecks) -> Self {
        let core = [
            &checks.store,
            &checks.index,
            &checks.quarantine,
            &checks.queue,
            &checks.embedder,
        ];
        let status = if core.iter().any(|c| !c.ok) {
            ProbeStatus::Failing
        } else if !checks.llm.ok {
            ProbeStatus::Degraded
        } else {
            ProbeStatus::Ok
        };
        ProbeReport { status, checks }
    }
}

/// Run one check under `timeout`; `Ok(detail)` passes.
async fn timed<F>(timeout: Duration, check: F) -> ProbeCheck
where
    F: Future<Output = Result<Option<String>>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, check).await;
    let ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let (ok, detail, error) = match outcome {
        Ok(Ok(detail)) => (true, detail, None),
        Ok(Err(e)) => (false, None, Some(e.to_string())),
        Err(_) => (false, None, Some(format!("no answer within {timeout:?}"))),
    };
    ProbeCheck {
        ok,
        ms,
        skipped: false,
        detail,
        error,
    }
}

impl Engine {
    /// Check every back-end at once, each bounded by `timeout`. Never fails:
    /// a failure is part of the report.
    pub async fn probe(&self, timeout: Duration) -> ProbeReport {
        let store = timed(timeout, async {
            self.store.ping().await?;
            Ok(None)
        });
        let index = timed(timeout, self.index_health());
        let quarantine = timed(timeout, self.quarantine_health());
        let queue = timed(timeout, async {
            self.queue.ping().await?;
            Ok(None)
        });
        let embedder = timed(timeout, async {
            let active = self.active();
            let model = active.embedder.model();
            let v = active
                .embedder
                .embed(&["engram readiness probe".to_string()])
                .await?;
            match v.first() {
                Some(v) if v.len() == model.dims => Ok(Some(model.name.clone())),
                Some(v) => Err(Error::Embedding(format!(
                    "{} returned {} dimensions, expected {}",
                    model.name,
                    v.len(),
                    model.dims
                ))),
                None => Err(Error::Embedding(format!(
                    "{} returned no vector",
                    model.name
                ))),
            }
        });
        let llm = async {
            let Some(llm) = self.llm() else {
                return ProbeCheck::skipped("no LLM configured");
            };
            timed(timeout, async {
                let model = llm.model();
                let listed = llm.models().await?;
                if listed.iter().any(|m| m == model) {
                    Ok(Some(model.to_string()))
                } else {
                    Err(Error::LlmFailed(format!(
                        "the LLM server does not list the configured model {model:?} (it lists {listed:?})"
                    )))
                }
            })
            .await
        };
        let (store, index, quarantine, queue, embedder, llm) =
            tokio::join!(store, index, quarantine, queue, embedder, llm);
        ProbeReport::from_checks(ProbeChecks {
            store,
            index,
            quarantine,
            queue,
            embedder,
            llm,
        })
    }

    /// The indexes follow the store: not too far behind, and not stalled
    /// (no progress for `index_stall_after` while changes wait). `Ok` holds
    /// the lag for the report.
    pub async fn index_health(&self) -> Result<Option<String>> {
        let max = self.store.stats(None).await?.max_seq;
        let indexed = *self.indexed.borrow();
        let lag = max.saturating_sub(indexed);
        let health = self
            .indexer_health
            .lock()
            .expect("indexer health lock")
            .clone();
        let idle = health.last_progress.elapsed();
        if lag > 0 && idle >= self.cfg.index_stall_after {
            let why = health
                .last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            return Err(Error::unavailable(
                "index",
                format!(
                    "stalled: no progress for {}s with {lag} changes waiting (at {indexed} of {max}){why}",
                    idle.as_secs()
                ),
            ));
        }
        if lag > MAX_INDEX_LAG {
            return Err(Error::unavailable(
                "index",
                format!("catching up: {indexed} of {max} changes applied"),
            ));
        }
        Ok(Some(format!("{lag} changes behind the store")))
    }

    /// No more quarantined rows than `max_quarantined` (store-wide). The
    /// report names the first keys, never their content.
    pub async fn quarantine_health(&self) -> Result<Option<String>> {
        let limit = self.cfg.max_quarantined.saturating_add(1).min(100);
        let rows = self.store.quarantined(None, None, limit).await?;
        if rows.len() > self.cfg.max_quarantined {
            let keys: Vec<String> = rows.iter().take(10).map(|r| r.key.to_string()).collect();
            let more = if rows.len() >= limit { " or more" } else { "" };
            return Err(Error::unavailable(
                "store",
                format!(
                    "{}{more} rows cannot be decoded and are quarantined (memory keys {}); \
                     admins list them under /v1/quarantine",
                    rows.len(),
                    keys.join(", ")
                ),
            ));
        }
        Ok(Some(format!("{} rows quarantined", rows.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool) -> ProbeCheck {
        ProbeCheck {
            ok,
            ms: 1.0,
            skipped: false,
            detail: None,
            error: (!ok).then(|| "down".to_string()),
        }
    }

    fn report(core_ok: bool, llm: ProbeCheck) -> ProbeReport {
        ProbeReport::from_checks(ProbeChecks {
            store: check(true),
            index: check(true),
            quarantine: check(core_ok),
            queue: check(true),
            embedder: check(true),
            llm,
        })
    }

    #[test]
    fn only_the_llm_failing_is_degraded() {
        assert_eq!(report(true, check(true)).status, ProbeStatus::Ok);
        assert_eq!(
            report(true, ProbeCheck::skipped("none")).status,
            ProbeStatus::Ok
        );
        assert_eq!(report(true, check(false)).status, ProbeStatus::Degraded);
        assert_eq!(report(false, check(true)).status, ProbeStatus::Failing);
        assert_eq!(report(false, check(false)).status, ProbeStatus::Failing);
        assert!(ProbeStatus::Degraded.serving() && !ProbeStatus::Failing.serving());
    }

    #[test]
    fn serializes_as_documented() {
        let v = serde_json::to_value(report(true, check(false))).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["checks"]["store"]["ok"], true);
        assert_eq!(v["checks"]["store"]["ms"], 1.0);
        assert!(v["checks"]["store"].get("error").is_none());
        assert!(v["checks"]["store"].get("skipped").is_none());
        assert_eq!(v["checks"]["llm"]["ok"], false);
        assert_eq!(v["checks"]["llm"]["error"], "down");
        let v = serde_json::to_value(ProbeCheck::skipped("no LLM configured")).unwrap();
        assert_eq!(v["skipped"], true);
    }
}
