//! [`engram_core::Store`] for [`PgStore`]: thin wrappers mapping errors.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engram_core::{
    ApiKey, AuditCtx, AuditEntry, AuditEvent, AuditQuery, Change, ClaimedJob, Decoded, DocAttrs,
    Embedded, Inserted, Job, JobFailure, JobState, Key, Memory, ModelInfo, ModelState,
    NamespaceInfo, NewMemory, QuarantineEntry, ReembedItem, ReembedProgress, Result, RetryPolicy,
    SessionRange, Store, StoreStats, StoreTx, TargetVector,
};
use std::time::Duration;
use uuid::Uuid;

use crate::PgStore;

#[async_trait]
impl Store for PgStore {
    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        Ok(Box::new(self.begin_write().await?))
    }

    async fn insert(&self, items: Vec<NewMemory>, audit: &AuditCtx) -> Result<Vec<Inserted>> {
        Ok(self.insert_memories(items, audit).await?)
    }

    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Memory>> {
        Ok(self.get_memory(tenant, id).await?)
    }

    async fn get_by_keys(&self, tenant: &str, keys: &[Key]) -> Result<Vec<Decoded<Memory>>> {
        Ok(self.memories_by_keys(tenant, keys).await?)
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>, audit: &AuditCtx) -> Result<()> {
        Ok(self.append_audit_entries(entries, audit).await?)
    }

    async fn audit_events(&self, tenant: &str, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        Ok(self.audit_page(tenant, query).await?)
    }

    async fn audit_head(&self, tenant: &str) -> Result<Option<(u64, String)>> {
        Ok(self.head(tenant).await?)
    }

    async fn create_api_key(&self, key: ApiKey, audit: &AuditCtx) -> Result<()> {
        Ok(self.insert_api_key(key, audit).await?)
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.get_api_key(id).await?)
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        Ok(self.api_keys(tenant).await?)
    }

    async fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<ApiKey>> {
        Ok(self.revoke_key(tenant, id, now, audit).await?)
    }

    async fn scan(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>> {
        Ok(self.scan_memories(tenant, namespaces, after, limit).await?)
    }

    async fn scan_by_time(
        &self,
        tenant: &str,
        namespaces: &[String],
        after: Option<(DateTime<Utc>, Key)>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Decoded<Memory>>> {
        Ok(self
            .scan_memories_by_time(tenant, namespaces, after, descending, limit)
            .await?)
    }

    async fn namespaces(&self, tenant: &str) -> Result<Vec<NamespaceInfo>> {
        Ok(self.list_namespaces(tenant).await?)
    }

    async fn session_messages(
        &self,
        tenant: &str,
        namespace: &str,
        session: &str,
        range: &SessionRange,
    ) -> Result<Vec<Decoded<Memory>>> {
        Ok(self.messages(tenant, namespace, session, range).await?)
    }

    async fn namespace_exists(&self, tenant: &str, namespace: &str) -> Result<bool> {
        Ok(self.has_namespace(tenant, namespace).await?)
    }

    async fn claim_jobs(
        &self,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        Ok(self.claim(limit, lease, now).await?)
    }

    async fn renew_leases(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        Ok(self.renew(ids, lease, now).await?)
    }

    async fn complete_jobs(&self, done: Vec<Embedded>, now: DateTime<Utc>) -> Result<()> {
        Ok(self.complete(done, now).await?)
    }

    async fn fail_jobs(
        &self,
        failures: Vec<JobFailure>,
        policy: RetryPolicy,
        now: DateTime<Utc>,
    ) -> Result<()> {
        Ok(self.fail(failures, policy, now).await?)
    }

    async fn claim_jobs_by_id(
        &self,
        ids: &[u64],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decoded<ClaimedJob>>> {
        Ok(self.claim_ids(ids, lease, now).await?)
    }

    async fn unpublished_jobs(
        &self,
        now: DateTime<Utc>,
        republish_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(u64, Option<DateTime<Utc>>)>> {
        Ok(self.unpublished(now, republish_before, limit).await?)
    }

    async fn mark_published(&self, ids: &[u64], now: DateTime<Utc>) -> Result<()> {
        Ok(self.mark_published(ids, now).await?)
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        Ok(self.jobs(tenant, state, after, limit).await?)
    }

    async fn get_job(&self, tenant: &str, job_id: u64) -> Result<Option<Job>> {
        Ok(self.job(tenant, job_id).await?)
    }

    async fn retry_job(
        &self,
        tenant: &str,
        job_id: u64,
        now: DateTime<Utc>,
        audit: &AuditCtx,
    ) -> Result<Option<Job>> {
        Ok(self.retry(tenant, job_id, now, audit).await?)
    }

    async fn changes_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Change>> {
        Ok(self.changes(after_seq, limit).await?)
    }

    async fn live_attrs(
        &self,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<(Key, DocAttrs)>>> {
        Ok(self.attrs_page(after, limit).await?)
    }

    async fn quarantine(&self, entries: Vec<QuarantineEntry>) -> Result<()> {
        Ok(self.put_quarantine(entries).await?)
    }

    async fn release_quarantine(&self, keys: &[Key]) -> Result<usize> {
        Ok(self.release(keys).await?)
    }

    async fn quarantined(
        &self,
        tenant: Option<&str>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>> {
        Ok(self.quarantine_page(tenant, after, limit).await?)
    }

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats> {
        Ok(self.store_stats(tenant).await?)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(crate::PgError::from)?;
        Ok(())
    }

    async fn model_state(&self) -> Result<ModelState> {
        Ok(PgStore::model_state(self).await?)
    }

    async fn init_model(&self, model: &ModelInfo) -> Result<ModelState> {
        Ok(PgStore::init_model(self, model).await?)
    }

    async fn begin_reembed(&self, target: &ModelInfo) -> Result<ModelState> {
        Ok(PgStore::begin_reembed(self, target).await?)
    }

    async fn reembed_todo(
        &self,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<ReembedItem>>> {
        Ok(PgStore::reembed_todo(self, after, limit).await?)
    }

    async fn put_target_vectors(
        &self,
        model: &ModelInfo,
        items: Vec<TargetVector>,
    ) -> Result<usize> {
        Ok(PgStore::put_target_vectors(self, model, items).await?)
    }

    async fn reembed_progress(&self) -> Result<ReembedProgress> {
        Ok(PgStore::reembed_progress(self).await?)
    }

    async fn switch_model(&self, target: &ModelInfo) -> Result<bool> {
        Ok(PgStore::switch_model(self, target).await?)
    }
}
