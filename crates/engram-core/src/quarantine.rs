//! Quarantine: what happens to a stored row that cannot be decoded.
//!
//! One bad row must never stall the change feed, a worker or the
//! re-embedding back-fill for everyone else. Stores return such rows as
//! [`Corrupt`] in place of the decoded value; here they are recorded in the
//! store's quarantine (one entry per memory key, kept across restarts and
//! shared by every node), counted in Prometheus (`engram_quarantined_total`
//! by source; `engram_quarantined_rows`, refreshed at each scrape), and
//! skipped: the indexes drop the key (its state is unknown), a job records a
//! failed attempt (so it backs off and is dead-lettered like any job that
//! cannot be embedded), a list or search leaves the row out. Readiness fails
//! while rows are quarantined (see [`crate::probe`]); `GET /v1/quarantine`
//! lists a tenant's entries to its admins.
//!
//! An entry is released as soon as the row decodes again in the feed (it was
//! repaired, or purged: a hard delete rewrites every content column).

use chrono::Utc;
use std::collections::HashSet;

use crate::error::Result;
use crate::traits::{RetryPolicy, Store};
use crate::types::{
    ClaimedJob, Corrupt, Decoded, JobFailure, Key, QuarantineEntry, QuarantineSource,
};

/// An entry for a corrupt row met at `source` (and feed position `seq`).
pub fn entry(c: &Corrupt, source: QuarantineSource, seq: Option<u64>) -> QuarantineEntry {
    let now = Utc::now();
    QuarantineEntry {
        key: c.key,
        memory_id: c.id,
        tenant: c.tenant.clone(),
        source,
        seq,
        error: c.error.clone(),
        first_seen: now,
        last_seen: now,
    }
}

/// Record these entries (logged and counted), unless empty.
pub async fn record(store: &dyn Store, entries: Vec<QuarantineEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    for e in &entries {
        tracing::error!(
            key = e.key,
            memory = ?e.memory_id,
            tenant = e.tenant.as_deref().unwrap_or("?"),
            source = e.source.as_str(),
            error = %e.error,
            "a stored row cannot be decoded: quarantined, the rest goes on"
        );
        metrics::counter!("engram_quarantined_total", "source" => e.source.as_str()).increment(1);
    }
    store.quarantine(entries).await
}

/// Split rows a store decoded for `source`: the decodable values, and the
/// entries for those it could not decode (to [`record`]).
pub fn split<T>(rows: Vec<Decoded<T>>, source: QuarantineSource) -> (Vec<T>, Vec<QuarantineEntry>) {
    let mut ok = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for r in rows {
        match r {
            Ok(v) => ok.push(v),
            Err(c) => bad.push(entry(&c, source, None)),
        }
    }
    (ok, bad)
}

/// Claimed jobs as a queue hands them to workers: undecodable rows are
/// quarantined and their jobs get a failed attempt with the decoding error
/// (so they back off, and are dead-lettered after `policy.max_attempts`,
/// visible under `/v1/jobs?state=dead`), instead of failing every claim.
pub async fn claimed(
    store: &dyn Store,
    rows: Vec<Decoded<ClaimedJob>>,
    policy: RetryPolicy,
) -> Result<Vec<ClaimedJob>> {
    let corrupt: Vec<Corrupt> = rows
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    let (jobs, entries) = split(rows, QuarantineSource::Job);
    if corrupt.is_empty() {
        return Ok(jobs);
    }
    record(store, entries).await?;
    let failures: Vec<JobFailure> = corrupt
        .into_iter()
        .filter_map(|c| {
            c.job_id.map(|job_id| JobFailure {
                job_id,
                error: format!("stored row cannot be decoded: {}", c.error),
            })
        })
        .collect();
    store.fail_jobs(failures, policy, Utc::now()).await?;
    Ok(jobs)
}

/// How many rows are quarantined: a tenant's, or all.
pub async fn count(store: &dyn Store, tenant: Option<&str>) -> Result<u64> {
    let mut n = 0;
    let mut after = None;
    loop {
        let page = store.quarantined(tenant, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        n += page.len() as u64;
    }
    Ok(n)
}

/// Every quarantined key (store-wide), read page by page.
pub async fn keys(store: &dyn Store) -> Result<HashSet<Key>> {
    let mut out = HashSet::new();
    let mut after = None;
    loop {
        let page = store.quarantined(None, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        out.extend(page.iter().map(|e| e.key));
    }
    Ok(out)
}
