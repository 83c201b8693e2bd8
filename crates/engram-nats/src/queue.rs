//! [`NatsQueue`]: setup, the dispatcher (outbox + sweeper) and the
//! [`JobQueue`] implementation.

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
    context::{PublishError, PublishErrorKind},
    message::{Acker, PublishMessage, StreamMessage},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    AckKind,
};
use chrono::{DateTime, TimeDelta, Utc};
use engram_core::{ClaimedJob, Embedded, JobFailure, JobQueue, RetryPolicy, Store};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::{NatsError, NatsOptions};

/// Publishes in flight at once in one dispatcher round.
const PUBLISH_CONCURRENCY: usize = 64;

/// Header carrying the job id on job and dead-letter messages.
pub const JOB_ID_HEADER: &str = "Engram-Job-Id";

/// A JetStream-backed [`JobQueue`]. See the [crate docs](crate) for the design.
///
/// Dropping it stops its dispatcher and abandons the messages of the jobs it
/// still holds (JetStream redelivers them after the lease).
pub struct NatsQueue {
    inner: Arc<Inner>,
    dispatcher: tokio::task::JoinHandle<()>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    consumer: PullConsumer,
    store: Arc<dyn Store>,
    opts: NatsOptions,
    /// Messages of the jobs this instance has claimed and not yet finished.
    inflight: Mutex<HashMap<u64, InFlight>>,
    wake: Notify,
}

struct InFlight {
    acker: Acker,
    /// Failed attempts before this claim.
    attempts: u32,
    since: Instant,
}

/// What became of one announcement publish.
enum Announce {
    Stored,
    /// JetStream dropped it as a duplicate of an earlier `Nats-Msg-Id`.
    Duplicate,
    /// The job's subject already holds a message (one message per job).
    SubjectFull,
}

impl NatsQueue {
    /// Connect to `url` (bounded by `opts.connect_timeout`), create or update
    /// the streams and the consumer, and start the dispatcher.
    pub async fn connect(
        url: &str,
        store: Arc<dyn Store>,
        opts: NatsOptions,
    ) -> Result<Self, NatsError> {
        opts.validate()?;
        let connecting = async_nats::ConnectOptions::new()
            .name("engram")
            .connection_timeout(opts.connect_timeout)
            .request_timeout(Some(opts.request_timeout))
            .connect(url);
        // The outer bound covers name resolution and the handshake too.
        let client = match tokio::time::timeout(opts.connect_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(NatsError::Connect {
                    url: redact_url(url),
                    message: e.to_string(),
                })
            }
            Err(_) => {
                return Err(NatsError::Connect {
                    url: redact_url(url),
                    message: format!("no answer within {:?}", opts.connect_timeout),
                })
            }
        };
        Self::start(client, store, opts).await
    }

    /// Like [`connect`](Self::connect), on a client the caller made (to share
    /// one connection, or to set credentials or TLS).
    pub async fn start(
        client: async_nats::Client,
        store: Arc<dyn Store>,
        opts: NatsOptions,
    ) -> Result<Self, NatsError> {
        opts.validate()?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(opts.request_timeout);
        // Each step is bounded by request_timeout; the whole setup by a few of them.
        let bound = opts.request_timeout.saturating_mul(8);
        let (stream, consumer) = tokio::time::timeout(bound, setup(&js, &opts))
            .await
            .map_err(|_| NatsError::Setup(format!("no answer within {bound:?}")))??;
        let inner = Arc::new(Inner {
            client,
            js,
            stream,
            consumer,
            store,
            opts,
            inflight: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let dispatcher = tokio::spawn(dispatch_loop(inner.clone()));
        Ok(NatsQueue { inner, dispatcher })
    }

    /// One dispatcher round now: publish up to `dispatch_batch` unannounced
    /// (or presumed lost) jobs. Returns how many were announced; fails if
    /// any could not be (they are retried in a later round).
    pub async fn dispatch_now(&self) -> engram_core::Result<usize> {
        match self.inner.dispatch_once().await? {
            (n, 0) => Ok(n),
            (n, failed) => Err(engram_core::Error::unavailable(
                "nats",
                format!("{failed} of {n} job announcements failed"),
            )),
        }
    }

    pub fn options(&self) -> &NatsOptions {
        &self.inner.opts
    }

    /// The underlying connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Jobs claimed through this instance and not yet completed or failed.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.inflight).len()
    }
}

impl Drop for NatsQueue {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

#[async_trait::async_trait]
impl JobQueue for NatsQueue {
    async fn enqueued(&self) -> engram_core::Result<()> {
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn claim(&self, limit: usize, wait: Duration) -> engram_core::Result<Vec<ClaimedJob>> {
        self.inner.claim(limit, wait).await
    }

    async fn complete(&self, done: Vec<Embedded>) -> engram_core::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = done.iter().map(|e| e.job_id).collect();
        // Store first: if this fails the messages stay unacknowledged and
        // come back after the lease.
        self.inner.store.complete_jobs(done, Utc::now()).await?;
        for (id, f) in self.inner.take_inflight(&ids) {
            if let Err(e) = f.acker.ack().await {
                // Harmless: the redelivered message finds its job done.
                tracing::warn!(job = id, error = %e, "ack of a completed job failed");
            }
        }
        Ok(())
    }

    async fn fail(&self, failures: Vec<JobFailure>) -> engram_core::Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let errors: HashMap<u64, String> = failures
            .iter()
            .map(|f| (f.job_id, f.error.clone()))
            .collect();
        let ids: Vec<u64> = errors.keys().copied().collect();
        let policy = self.inner.opts.retry;
        // The store schedules the retry (and marks the job unannounced, so the
        // dispatcher publishes it again when due) or dead-letters it.
        self.inner
            .store
            .fail_jobs(failures, policy, Utc::now())
            .await?;
        for (id, f) in self.inner.take_inflight(&ids) {
            let attempts = f.attempts.saturating_add(1);
            if attempts >= policy.max_attempts {
                let error = errors.get(&id).map_or("", String::as_str);
                self.inner
                    .publish_dead_letter(id, "failed", error, None, Some(attempts))
                    .await;
            }
            // Acknowledged, not left to redeliver: the retry is a new message.
            // Waiting for the server's confirmation keeps the window in which
            // the old message still blocks the job's subject short.
            if let Err(e) = f.acker.double_ack().await {
                tracing::warn!(job = id, error = %e, "ack of a failed job failed");
            }
        }
        Ok(())
    }

    /// A third of the store lease (see [`NatsQueue::renew`]).
    fn renew_every(&self) -> Option<Duration> {
        let o = &self.inner.opts;
        Some(o.lease.saturating_sub(o.lease_margin()) / 3)
    }

    /// Tell JetStream the messages are still being worked on (a progress
    /// ack restarts their ack deadline) and renew the store leases, which
    /// end a margin before that deadline as at claim time: a redelivered
    /// message still always finds its job's lease expired.
    async fn renew(&self, job_ids: &[u64]) -> engram_core::Result<()> {
        let mut renewed = Vec::with_capacity(job_ids.len());
        // Taken out and put back: no lock is held across the acks. Only the
        // worker holding these jobs completes or fails them, after this.
        for (id, mut f) in self.inner.take_inflight(job_ids) {
            match f.acker.ack_with(AckKind::Progress).await {
                Ok(()) => renewed.push(id),
                Err(e) => tracing::warn!(job = id, error = %e, "progress ack failed"),
            }
            f.since = Instant::now();
            lock(&self.inner.inflight).insert(id, f);
        }
        let o = &self.inner.opts;
        let lease = o.lease.saturating_sub(o.lease_margin());
        self.inner
            .store
            .renew_leases(&renewed, lease, Utc::now())
            .await?;
        Ok(())
    }

    /// A round trip to JetStream: the job stream's info (bounded by the
    /// request timeout).
    async fn ping(&self) -> engram_core::Result<()> {
        let bound = self.inner.opts.request_timeout;
        match tokio::time::timeout(bound, self.inner.stream.get_info()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NatsError::request(
                &format!("stream {} info", self.inner.opts.stream_name()),
                e,
            )
            .into()),
            Err(_) => Err(NatsError::Timeout(format!(
                "stream {} info: no answer within {bound:?}",
                self.inner.opts.stream_name()
            ))
            .into()),
        }
    }
}

async fn setup(
    js: &jetstream::Context,
    opts: &NatsOptions,
) -> Result<(stream::Stream, PullConsumer), NatsError> {
    let jobs = stream::Config {
        name: opts.stream_name(),
        description: Some(
            "engram embedding job announcements; the store holds the job state".into(),
        ),
        subjects: vec![opts.jobs_filter()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        // One message per job: a job is never announced twice at once, and a
        // republish after a loss is refused while the old message lives.
        max_messages_per_subject: 1,
        discard: DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Default::default()
    };
    let dead = stream::Config {
        name: opts.dead_stream_name(),
        description: Some("engram dead-lettered embedding jobs".into()),
        subjects: vec![opts.dead_subject()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        max_age: opts.dead_letter_max_age,
        ..Default::default()
    };
    ensure_stream(js, jobs).await?;
    ensure_stream(js, dead).await?;
    let stream = js
        .get_stream(opts.stream_name())
        .await
        .map_err(|e| NatsError::Setup(format!("stream {}: {e}", opts.stream_name())))?;
    let consumer = pull::Config {
        durable_name: Some(opts.consumer_name()),
        description: Some("engram embedding workers".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: opts.lease,
        max_deliver: i64::from(opts.max_deliver),
        backoff: opts.redelivery_backoff(),
        filter_subject: opts.jobs_filter(),
        max_ack_pending: opts.max_ack_pending,
        ..Default::default()
    };
    let mut last = None;
    for attempt in 0..3 {
        // Create-or-update: identical configs from nodes starting together both succeed.
        match stream.create_consumer(consumer.clone()).await {
            Ok(c) => return Ok((stream, c)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    Err(NatsError::Setup(format!(
        "consumer {} on {}: {}",
        opts.consumer_name(),
        opts.stream_name(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Create-or-update, retried: two nodes creating the same stream at once can
/// see each other's half-finished create.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), NatsError> {
    let mut last = String::new();
    for attempt in 0..3 {
        match js.create_or_update_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    Err(NatsError::Setup(format!("stream {}: {last}", config.name)))
}

async fn dispatch_loop(inner: Arc<Inner>) {
    loop {
        let more = match inner.dispatch_once().await {
            // A full round without failures: there may be more right away.
            Ok((n, failed)) => n >= inner.opts.dispatch_batch && failed == 0,
            Err(e) => {
                tracing::warn!(error = %e, "job dispatch round failed");
                false
            }
        };
        if !more {
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.opts.dispatch_interval) => {}
            }
        }
    }
}

impl Inner {
    /// Publish the outbox: `(attempted, failed)`.
    async fn dispatch_once(&self) -> engram_core::Result<(usize, usize)> {
        let now = Utc::now();
        let republish_before = now - delta(self.opts.republish_after);
        let jobs = self
            .store
            .unpublished_jobs(now, republish_before, self.opts.dispatch_batch)
            .await?;
        if jobs.is_empty() {
            return Ok((0, 0));
        }
        let ids: Vec<u64> = jobs.iter().map(|(id, _)| *id).collect();
        // Recorded before publishing, not after: once a message is out a
        // worker may claim and fail its job, which marks it unannounced for
        // the retry; marking afterwards would overwrite that and strand it.
        self.store.mark_published(&ids, now).await?;
        let results: Vec<(u64, Result<(), NatsError>)> = futures::stream::iter(jobs)
            .map(|(id, at)| async move { (id, self.publish_job(id, at).await) })
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .collect()
            .await;
        let mut failed = Vec::new();
        for (id, r) in results {
            if let Err(e) = r {
                if failed.is_empty() {
                    tracing::warn!(job = id, error = %e, "publishing a job announcement failed");
                }
                failed.push(id);
            }
        }
        if !failed.is_empty() {
            // An announcement time older than republish_after makes them due
            // again in the next round.
            let long_ago = republish_before - TimeDelta::seconds(1);
            self.store.mark_published(&failed, long_ago).await?;
        }
        Ok((ids.len(), failed.len()))
    }

    /// Make sure the job has a message in the stream.
    async fn publish_job(
        &self,
        id: u64,
        announced: Option<DateTime<Utc>>,
    ) -> Result<(), NatsError> {
        let subject = self.opts.job_subject(id);
        let base = format!("job-{id}-{}", announced.map_or(0, |t| t.timestamp_micros()));
        let mut msg_id = base.clone();
        for _ in 0..3 {
            match self.announce(&subject, id, &msg_id).await? {
                Announce::Stored => return Ok(()),
                Announce::Duplicate => {
                    // Another node published it just now (its message is in
                    // the stream), or the id is the one an earlier, already
                    // consumed announcement used: a job failed and rescheduled
                    // within the duplicate window is unannounced again with
                    // the same id. Then it must go out under a fresh one.
                    if self.last_message(&subject).await?.is_some() {
                        return Ok(());
                    }
                }
                Announce::SubjectFull => match self.last_message(&subject).await? {
                    None => {} // consumed meanwhile: publish again
                    Some(existing) => {
                        if !self.is_stuck(&existing).await? {
                            return Ok(());
                        }
                        tracing::warn!(
                            job = id,
                            seq = existing.sequence,
                            "job message is past its redeliveries; replacing it"
                        );
                        self.stream
                            .purge()
                            .filter(subject.clone())
                            .await
                            .map_err(|e| NatsError::request("purge", e))?;
                    }
                },
            }
            msg_id = format!("{base}-{}", Utc::now().timestamp_micros());
        }
        Err(NatsError::Request(format!(
            "job {id}: announcement not stored after 3 attempts"
        )))
    }

    async fn announce(&self, subject: &str, id: u64, msg_id: &str) -> Result<Announce, NatsError> {
        let msg = PublishMessage::build()
            .payload(id.to_string().into())
            .message_id(msg_id)
            .header(JOB_ID_HEADER, id.to_string());
        let ack = self
            .js
            .send_publish(subject.to_string(), msg)
            .await
            .map_err(|e| NatsError::request("publish", e))?
            .await;
        match ack {
            Ok(ack) if ack.duplicate => Ok(Announce::Duplicate),
            Ok(_) => Ok(Announce::Stored),
            Err(e) if subject_full(&e) => Ok(Announce::SubjectFull),
            Err(e) => Err(NatsError::request("publish ack", e)),
        }
    }

    async fn last_message(&self, subject: &str) -> Result<Option<StreamMessage>, NatsError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(NatsError::request("message lookup", e)),
        }
    }

    /// Whether a job's message can no longer be delivered: JetStream stops
    /// after `max_deliver` deliveries, and a worker that died holding the
    /// last one leaves the message in place for good (blocking its subject).
    async fn is_stuck(&self, m: &StreamMessage) -> Result<bool, NatsError> {
        let age_nanos = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX) as i128
            - m.time.unix_timestamp_nanos();
        let limit = self
            .opts
            .redelivery_horizon()
            .saturating_add(self.opts.republish_after);
        if age_nanos <= limit.as_nanos() as i128 {
            return Ok(false);
        }
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| NatsError::request("consumer info", e))?;
        // Never delivered yet: only backlogged.
        Ok(m.sequence <= info.delivered.stream_sequence)
    }

    async fn claim(&self, limit: usize, wait: Duration) -> engram_core::Result<Vec<ClaimedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.prune_inflight();
        let msgs = self.fetch(limit, wait).await?;
        let Some(earliest) = msgs.iter().map(|(_, at)| *at).min() else {
            return Ok(Vec::new());
        };
        let mut candidates = Vec::with_capacity(msgs.len());
        for (msg, _) in msgs {
            let Some(id) = job_id_of(&msg) else {
                tracing::warn!(subject = %msg.subject, "dropping a message that names no job");
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "term failed");
                }
                continue;
            };
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            if delivered >= i64::from(self.opts.max_deliver) {
                self.dead_letter_poison(id, msg, delivered).await;
                continue;
            }
            candidates.push((id, msg));
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<u64> = candidates.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        // The ack deadline started when the server sent the first message;
        // the store lease ends a margin before it, so a redelivered message
        // always finds its job's lease expired.
        let lease = self
            .opts
            .lease
            .saturating_sub(self.opts.lease_margin())
            .saturating_sub(earliest.elapsed())
            .max(Duration::from_millis(1));
        // On error the messages stay unacknowledged and are redelivered.
        let rows = self.store.claim_jobs_by_id(&ids, lease, Utc::now()).await?;
        // Undecodable rows are quarantined and their jobs failed (a retry is
        // a new message), so their messages are dropped below like any job
        // that is not runnable.
        let claimed = engram_core::quarantine::claimed(&*self.store, rows, self.opts.retry).await?;
        let attempts: HashMap<u64, u32> = claimed.iter().map(|j| (j.job_id, j.attempts)).collect();
        let mut drop_msgs = Vec::new();
        {
            let mut inflight = lock(&self.inflight);
            let mut taken = HashSet::new();
            for (id, msg) in candidates {
                match attempts.get(&id) {
                    Some(&attempts) if taken.insert(id) => {
                        let (_, acker) = msg.split();
                        inflight.insert(
                            id,
                            InFlight {
                                acker,
                                attempts,
                                since: Instant::now(),
                            },
                        );
                    }
                    _ => drop_msgs.push((id, msg)),
                }
            }
        }
        // Not claimable: done, dead, deleted, or leased elsewhere (a duplicate).
        for (id, msg) in drop_msgs {
            tracing::debug!(
                job = id,
                "dropping the message of a job that is not runnable"
            );
            if let Err(e) = msg.ack().await {
                tracing::warn!(job = id, error = %e, "ack failed");
            }
        }
        Ok(claimed)
    }

    /// Up to `limit` messages: what is there now, else the first to arrive
    /// within `wait` plus whatever is there then.
    async fn fetch(&self, limit: usize, wait: Duration) -> Result<Vec<Received>, NatsError> {
        let mut out = self.fetch_available(limit).await?;
        if !out.is_empty() || wait < Duration::from_millis(10) {
            return Ok(out);
        }
        // A pull request for exactly one message ends when it arrives, so no
        // request outlives this call to be served to nobody.
        let deadline = tokio::time::Instant::now() + wait + self.opts.request_timeout;
        let batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages();
        let batch = match tokio::time::timeout_at(deadline, batch).await {
            Ok(b) => b.map_err(|e| NatsError::request("pull", e))?,
            Err(_) => return Err(NatsError::Timeout("pull: no answer".into())),
        };
        out = drain(batch, deadline, "pull").await?;
        if !out.is_empty() && limit > 1 {
            match self.fetch_available(limit - 1).await {
                Ok(more) => out.extend(more),
                Err(e) => tracing::warn!(error = %e, "fetching the rest of a batch failed"),
            }
        }
        Ok(out)
    }

    /// What the consumer has for us right now, up to `limit` messages.
    async fn fetch_available(&self, limit: usize) -> Result<Vec<Received>, NatsError> {
        let deadline = tokio::time::Instant::now() + self.opts.request_timeout;
        let batch = self.consumer.fetch().max_messages(limit).messages();
        let batch = match tokio::time::timeout_at(deadline, batch).await {
            Ok(b) => b.map_err(|e| NatsError::request("fetch", e))?,
            Err(_) => return Err(NatsError::Timeout("fetch: no answer".into())),
        };
        drain(batch, deadline, "fetch").await
    }

    /// A message JetStream will not deliver again: record the job dead,
    /// publish a dead letter and terminate the message.
    async fn dead_letter_poison(&self, id: u64, msg: jetstream::Message, delivered: i64) {
        let error = format!("delivered {delivered} times without completion");
        let policy = RetryPolicy {
            max_attempts: 1,
            ..self.opts.retry
        };
        let failure = JobFailure {
            job_id: id,
            error: error.clone(),
        };
        if let Err(e) = self
            .store
            .fail_jobs(vec![failure], policy, Utc::now())
            .await
        {
            // Left unacknowledged; the sweeper replaces it once it is stuck.
            tracing::error!(job = id, error = %e, "could not dead-letter a poison job");
            return;
        }
        tracing::warn!(job = id, delivered, "poison job dead-lettered");
        self.take_inflight(&[id]);
        self.publish_dead_letter(id, "poison", &error, Some(delivered), None)
            .await;
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            tracing::warn!(job = id, error = %e, "term of a poison message failed");
        }
    }

    /// A copy of a dead-lettered job on `<prefix>.dead`, for operators; the
    /// store's job row stays the record. Best effort.
    async fn publish_dead_letter(
        &self,
        id: u64,
        reason: &str,
        error: &str,
        delivered: Option<i64>,
        attempts: Option<u32>,
    ) {
        let body = serde_json::json!({
            "job_id": id,
            "reason": reason,
            "error": error,
            "delivered": delivered,
            "attempts": attempts,
            "at": Utc::now(),
        });
        let msg = PublishMessage::build()
            .payload(body.to_string().into())
            .header(JOB_ID_HEADER, id.to_string());
        let sent = match self.js.send_publish(self.opts.dead_subject(), msg).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(job = id, error = %e, "publishing a dead letter failed");
        }
    }

    fn take_inflight(&self, ids: &[u64]) -> Vec<(u64, InFlight)> {
        let mut inflight = lock(&self.inflight);
        ids.iter()
            .filter_map(|id| inflight.remove(id).map(|f| (*id, f)))
            .collect()
    }

    /// Forget messages held for longer than JetStream redelivers them (their
    /// worker gave up without completing or failing them).
    fn prune_inflight(&self) {
        let horizon = self.opts.redelivery_horizon();
        lock(&self.inflight).retain(|_, f| f.since.elapsed() < horizon);
    }
}

/// A delivered message and when it arrived.
type Received = (jetstream::Message, Instant);

/// The messages of one pull request, until it ends or `deadline` passes: the
/// client library would wait forever for the end of a request whose answer
/// a lost connection never brings. Messages that arrived are kept even when
/// the request then fails: they are ours until their ack deadline.
async fn drain(
    mut batch: pull::Batch,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<Vec<Received>, NatsError> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, batch.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(m))) => out.push((m, Instant::now())),
            Ok(Some(Err(e))) if out.is_empty() => return Err(NatsError::request(what, e)),
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "{what} ended early");
                break;
            }
            Err(_) if out.is_empty() => {
                return Err(NatsError::Timeout(format!("{what}: no answer")));
            }
            Err(_) => break,
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The job a message announces: its payload, else its subject's last token.
fn job_id_of(msg: &jetstream::Message) -> Option<u64> {
    std::str::from_utf8(&msg.payload)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| msg.subject.rsplit('.').next()?.parse().ok())
}

/// JetStream refused the publish because the job's subject already holds its
/// one message (`max_msgs_per_subject` with discard-new-per-subject).
fn subject_full(e: &PublishError) -> bool {
    if e.kind() != PublishErrorKind::Other {
        return false;
    }
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|je| {
            je.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED
                && je.to_string().contains("per subject")
        })
}

/// `nats://user:secret@host` → `nats://***@host`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("nats://a:b@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("tok@h"), "***@h");
    }
}
