//! engram-nats against a real nats-server with JetStream and a real SQLite
//! store. The server must be running (`scripts/services.sh`); these tests
//! fail, not skip, without it. `ENGRAM_TEST_NATS_URL` overrides the address.
//! Every test uses its own prefix (hence its own streams), so they run in
//! parallel.

use async_nats::jetstream;
use engram_core::conformance::{audit, new_memory, tenant};
use engram_core::{
    ClaimedJob, Embedded, Error, JobQueue, JobState, ModelInfo, RetryPolicy, State, Store,
};
use engram_nats::{NatsError, NatsOptions, NatsQueue};
use engram_sqlite::SqliteStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const DEFAULT_URL: &str = "nats://127.0.0.1:14222";

/// The test server's URL; panics (failing the test) when nothing listens there.
fn nats_url() -> String {
    let url = std::env::var("ENGRAM_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let hostport = url
        .split("://")
        .last()
        .unwrap_or(&url)
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
    match reachable {
        Some(Ok(_)) => url,
        other => panic!(
            "NATS is not reachable at {url} ({other:?}): start it with scripts/services.sh \
             (or point ENGRAM_TEST_NATS_URL at a nats-server with JetStream)"
        ),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    tenant: String,
    url: String,
    opts: NatsOptions,
    js: jetstream::Context,
}

impl Fixture {
    async fn new(case: &str, tune: impl FnOnce(&mut NatsOptions)) -> Fixture {
        let url = nats_url();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("engram.db"))
                .await
                .expect("open store"),
        );
        let mut opts = NatsOptions {
            prefix: format!(
                "enats-{case}-{}",
                &Uuid::now_v7().simple().to_string()[20..]
            ),
            lease: Duration::from_secs(2),
            max_deliver: 3,
            republish_after: Duration::from_secs(30),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(1),
            },
            dispatch_interval: Duration::from_millis(100),
            ..Default::default()
        };
        tune(&mut opts);
        let client = async_nats::connect(&url).await.expect("test client");
        Fixture {
            _dir: dir,
            store,
            tenant: tenant(case),
            url,
            opts,
            js: jetstream::new(client),
        }
    }

    async fn queue(&self) -> NatsQueue {
        NatsQueue::connect(&self.url, self.store.clone(), self.opts.clone())
            .await
            .expect("connect")
    }

    /// Insert `n` memories (each with its embedding job); their ids.
    async fn insert(&self, n: usize) -> Vec<Uuid> {
        let items: Vec<_> = (0..n)
            .map(|i| new_memory(&self.tenant, "ns", &format!("memory number {i}")))
            .collect();
        let ids = items.iter().map(|m| m.id).collect();
        let inserted = self.store.insert(items, &audit()).await.expect("insert");
        assert!(inserted.iter().all(|i| i.created));
        ids
    }

    async fn state(&self, id: Uuid) -> State {
        self.store
            .get(&self.tenant, id)
            .await
            .expect("get")
            .expect("memory exists")
            .state
    }

    async fn all_ready(&self, ids: &[Uuid]) -> bool {
        for id in ids {
            if self.state(*id).await != State::Ready {
                return false;
            }
        }
        true
    }

    async fn messages(&self, stream: &str) -> u64 {
        self.js
            .get_stream(stream)
            .await
            .expect("stream")
            .get_info()
            .await
            .expect("stream info")
            .state
            .messages
    }

    /// Wait until the jobs stream holds `n` messages (acks are asynchronous).
    async fn wait_for_messages(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.messages(&self.opts.stream_name()).await;
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobs stream holds {got} messages, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn dead_letters(&self) -> Vec<serde_json::Value> {
        let stream = self
            .js
            .get_stream(self.opts.dead_stream_name())
            .await
            .expect("dead stream");
        let last = stream.get_info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&m.payload).expect("dead letter is JSON"));
            }
        }
        out
    }

    async fn cleanup(&self) {
        for s in [self.opts.stream_name(), self.opts.dead_stream_name()] {
            let _ = self.js.delete_stream(s).await;
        }
    }
}

fn embedded(job: &ClaimedJob) -> Embedded {
    Embedded {
        job_id: job.job_id,
        key: job.key,
        checksum: job.checksum.clone(),
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        model: ModelInfo {
            name: "test-model".into(),
            version: "v1".into(),
            dims: 4,
        },
        also: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_complete_every_job_exactly_once() {
    let fx = Fixture::new("once", |_| {}).await;
    let (qa, qb) = (Arc::new(fx.queue().await), Arc::new(fx.queue().await));
    let ids = fx.insert(60).await;
    qa.enqueued().await.expect("enqueued");

    let claims: Arc<Mutex<HashMap<u64, Vec<&'static str>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (name, q) in [("a", qa.clone()), ("b", qb.clone())] {
        let (claims, stop) = (claims.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let jobs = q.claim(7, Duration::from_millis(300)).await.expect("claim");
                {
                    let mut c = claims.lock().unwrap();
                    for j in &jobs {
                        c.entry(j.job_id).or_default().push(name);
                    }
                }
                // Make the two workers' claims overlap in time.
                tokio::time::sleep(Duration::from_millis(5)).await;
                q.complete(jobs.iter().map(embedded).collect())
                    .await
                    .expect("complete");
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fx.all_ready(&ids).await {
        assert!(Instant::now() < deadline, "not every memory became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }

    let claims = claims.lock().unwrap().clone();
    assert_eq!(claims.len(), ids.len(), "every job was claimed");
    for (job, by) in &claims {
        assert_eq!(by.len(), 1, "job {job} claimed more than once: {by:?}");
    }
    let by_a = claims.values().filter(|by| by[0] == "a").count();
    println!("worker a claimed {by_a}, worker b {}", claims.len() - by_a);
    let jobs = fx
        .store
        .list_jobs(&fx.tenant, None, None, 100)
        .await
        .expect("jobs");
    assert!(jobs.is_empty(), "completed jobs are gone: {jobs:?}");
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    assert_eq!(qa.in_flight() + qb.in_flight(), 0);
    fx.cleanup().await;
}

/// Claim until `n` jobs are held (within 10 s).
async fn claim_all(q: &NatsQueue, n: usize) -> Vec<ClaimedJob> {
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < n {
        assert!(Instant::now() < deadline, "claimed only {}", held.len());
        held.extend(
            q.claim(10, Duration::from_millis(500))
                .await
                .expect("claim"),
        );
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_a_dead_worker_are_redelivered_after_the_lease() {
    let fx = Fixture::new("dies", |_| {}).await;
    let ids = fx.insert(5).await;
    let qa = fx.queue().await;
    let qb = fx.queue().await;

    let held = claim_all(&qa, ids.len()).await;
    let died_at = Instant::now();
    drop(qa); // dies without completing or acknowledging anything

    let mut got: HashMap<u64, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fx.all_ready(&ids).await {
        assert!(Instant::now() < deadline, "jobs were not redelivered");
        let jobs = qb
            .claim(10, Duration::from_millis(500))
            .await
            .expect("claim");
        if !jobs.is_empty() {
            assert!(
                died_at.elapsed() >= Duration::from_millis(1500),
                "redelivered after {:?}, before the 2 s lease ran out",
                died_at.elapsed()
            );
        }
        for j in &jobs {
            *got.entry(j.job_id).or_default() += 1;
        }
        qb.complete(jobs.iter().map(embedded).collect())
            .await
            .expect("complete");
    }
    let mut expected: Vec<u64> = held.iter().map(|j| j.job_id).collect();
    let mut redelivered: Vec<u64> = got.keys().copied().collect();
    expected.sort_unstable();
    redelivered.sort_unstable();
    assert_eq!(redelivered, expected);
    assert!(
        got.values().all(|n| *n == 1),
        "each redelivered once: {got:?}"
    );
    println!(
        "redelivered {} jobs {:?} after the worker died",
        got.len(),
        died_at.elapsed()
    );
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

/// A worker still busy renews its jobs: for three leases JetStream redelivers
/// none of its messages and the store hands none of its jobs to another
/// worker; then it completes them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_worker_renews_its_jobs_past_the_lease() {
    let fx = Fixture::new("renews", |_| {}).await;
    let ids = fx.insert(3).await;
    let qa = fx.queue().await;
    let qb = fx.queue().await;
    let every = qa.renew_every().expect("NATS jobs need renewing");
    assert!(every < Duration::from_secs(1), "{every:?} for a 2 s lease");

    let held = claim_all(&qa, ids.len()).await;
    let job_ids: Vec<u64> = held.iter().map(|j| j.job_id).collect();
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        qa.renew(&job_ids).await.expect("renew");
        let next = Instant::now() + every;
        while Instant::now() < next {
            let jobs = qb
                .claim(10, Duration::from_millis(100))
                .await
                .expect("claim");
            assert!(jobs.is_empty(), "renewed jobs handed out again: {jobs:?}");
        }
    }
    assert_eq!(qa.in_flight(), ids.len(), "still held by a");
    qa.complete(held.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert!(fx.all_ready(&ids).await);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_job_backs_off_then_is_dead_lettered() {
    let fx = Fixture::new("fails", |o| {
        o.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(2),
        };
    })
    .await;
    let q = fx.queue().await;
    let id = fx.insert(1).await[0];
    q.enqueued().await.expect("enqueued");

    let mut attempts: Vec<(Instant, u32)> = Vec::new();
    let mut job_id = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fx.state(id).await != State::Failed {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered; attempts {attempts:?}"
        );
        for j in q.claim(1, Duration::from_millis(300)).await.expect("claim") {
            attempts.push((Instant::now(), j.attempts));
            job_id = j.job_id;
            q.fail(vec![engram_core::JobFailure {
                job_id: j.job_id,
                error: "model exploded".into(),
            }])
            .await
            .expect("fail");
        }
    }
    let seen: Vec<u32> = attempts.iter().map(|a| a.1).collect();
    assert_eq!(seen, vec![0, 1, 2], "one claim per attempt");
    // Back-off: 400 ms after the first failure, 800 ms after the second.
    let gap1 = attempts[1].0 - attempts[0].0;
    let gap2 = attempts[2].0 - attempts[1].0;
    assert!(
        gap1 >= Duration::from_millis(380),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(780),
        "second retry after {gap2:?}"
    );
    assert!(gap2 < Duration::from_secs(5), "second retry after {gap2:?}");
    println!("retries after {gap1:?} and {gap2:?}");

    let job = fx
        .store
        .get_job(&fx.tenant, job_id)
        .await
        .expect("get_job")
        .expect("dead job kept");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.last_error.as_deref(), Some("model exploded"));
    let letters = fx.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["job_id"], job_id);
    assert_eq!(letters[0]["reason"], "failed");
    assert_eq!(letters[0]["attempts"], 3);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    // Nothing left to deliver.
    assert!(q
        .claim(1, Duration::from_millis(300))
        .await
        .expect("claim")
        .is_empty());
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_message_is_dead_lettered_after_max_deliver() {
    let fx = Fixture::new("poison", |o| {
        o.lease = Duration::from_secs(1);
        o.max_deliver = 2;
    })
    .await;
    let q = fx.queue().await;
    let id = fx.insert(1).await[0];
    q.enqueued().await.expect("enqueued");

    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.is_empty() {
        assert!(Instant::now() < deadline, "never delivered");
        first = q.claim(1, Duration::from_millis(500)).await.expect("claim");
    }
    let job_id = first[0].job_id;
    // The worker hangs on it: no complete, no fail. The redelivery (the
    // second and last) is not handed out but dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.state(id).await != State::Failed {
        assert!(Instant::now() < deadline, "poison job not dead-lettered");
        let again = q.claim(1, Duration::from_millis(300)).await.expect("claim");
        assert!(
            again.is_empty(),
            "the last delivery is not worked on: {again:?}"
        );
    }
    let job = fx
        .store
        .get_job(&fx.tenant, job_id)
        .await
        .expect("get_job")
        .expect("dead job kept");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(
        job.last_error.as_deref(),
        Some("delivered 2 times without completion")
    );
    let letters = fx.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["job_id"], job_id);
    assert_eq!(letters[0]["reason"], "poison");
    assert_eq!(letters[0]["delivered"], 2);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_message_is_republished_by_the_sweeper() {
    let fx = Fixture::new("lost", |o| {
        o.lease = Duration::from_secs(1);
        o.republish_after = Duration::from_secs(2);
    })
    .await;
    let q = fx.queue().await;
    let id = fx.insert(1).await[0];
    q.enqueued().await.expect("enqueued");
    fx.wait_for_messages(1, Duration::from_secs(5)).await;

    // Lose it.
    let stream = fx
        .js
        .get_stream(fx.opts.stream_name())
        .await
        .expect("stream");
    stream.purge().await.expect("purge");
    let lost_at = Instant::now();
    assert_eq!(fx.messages(&fx.opts.stream_name()).await, 0);

    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.is_empty() {
        assert!(Instant::now() < deadline, "lost job never republished");
        jobs = q.claim(1, Duration::from_millis(300)).await.expect("claim");
    }
    let after = lost_at.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "republished after {after:?}, before republish_after"
    );
    println!("lost job republished {after:?} after the purge");
    q.complete(jobs.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert_eq!(fx.state(id).await, State::Ready);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeper_does_not_duplicate_a_backlogged_message() {
    let fx = Fixture::new("backlog", |o| {
        o.lease = Duration::from_secs(1);
        o.republish_after = Duration::from_secs(1);
        // Rounds only when asked.
        o.dispatch_interval = Duration::from_secs(3600);
    })
    .await;
    let q = fx.queue().await;
    let id = fx.insert(1).await[0];
    assert_eq!(q.dispatch_now().await.expect("dispatch"), 1);
    assert_eq!(
        q.dispatch_now().await.expect("dispatch"),
        0,
        "announced already"
    );
    fx.wait_for_messages(1, Duration::from_secs(5)).await;
    // Nobody consumed it; past republish_after the sweeper tries again and
    // JetStream refuses a second message for the job: not an error.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        q.dispatch_now().await.expect("refused republish is fine"),
        1
    );
    assert_eq!(fx.messages(&fx.opts.stream_name()).await, 1);

    let jobs = q.claim(10, Duration::from_secs(2)).await.expect("claim");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    q.complete(jobs.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert_eq!(fx.state(id).await, State::Ready);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undeliverable_message_is_replaced() {
    let fx = Fixture::new("stuck", |o| {
        o.lease = Duration::from_secs(1);
        o.max_deliver = 2;
        o.republish_after = Duration::from_secs(1);
    })
    .await;
    let q = fx.queue().await;
    let id = fx.insert(1).await[0];
    q.enqueued().await.expect("enqueued");
    fx.wait_for_messages(1, Duration::from_secs(5)).await;

    // A worker takes both deliveries and dies holding the last one:
    // JetStream will never deliver that message again.
    let consumer: jetstream::consumer::PullConsumer = fx
        .js
        .get_stream(fx.opts.stream_name())
        .await
        .expect("stream")
        .get_consumer(&fx.opts.consumer_name())
        .await
        .expect("consumer");
    for delivery in 1..=2 {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .expect("pull");
        let m = futures::StreamExt::next(&mut batch)
            .await
            .expect("a delivery")
            .expect("message");
        assert_eq!(m.info().expect("info").delivered, delivery);
    }
    let died_at = Instant::now();

    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while jobs.is_empty() {
        assert!(Instant::now() < deadline, "stuck message never replaced");
        jobs = q.claim(1, Duration::from_millis(300)).await.expect("claim");
    }
    println!(
        "stuck message replaced {:?} after its last delivery",
        died_at.elapsed()
    );
    q.complete(jobs.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert_eq!(fx.state(id).await, State::Ready);
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stray_and_duplicate_messages_are_dropped() {
    let fx = Fixture::new("stray", |_| {}).await;
    let q = fx.queue().await;
    // A message for a job that does not exist, and one naming no job.
    fx.js
        .publish(fx.opts.job_subject(987_654_321), "987654321".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    fx.js
        .publish(format!("{}.jobs.garbage", fx.opts.prefix), "hello".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let id = fx.insert(1).await[0];
    q.enqueued().await.expect("enqueued");

    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.is_empty() {
        assert!(Instant::now() < deadline, "real job never delivered");
        jobs = q
            .claim(10, Duration::from_millis(300))
            .await
            .expect("claim");
    }
    assert_eq!(jobs.len(), 1, "only the real job is handed out: {jobs:?}");
    q.complete(jobs.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert_eq!(fx.state(id).await, State::Ready);

    // A late duplicate of the completed job is acknowledged away. Published
    // once the completed message has left the stream: the stream keeps one
    // message per job subject, so a duplicate racing the acknowledgement is
    // refused by the server ("maximum messages per subject exceeded")
    // instead of reaching the queue.
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.js
        .publish(
            fx.opts.job_subject(jobs[0].job_id),
            jobs[0].job_id.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert!(q
        .claim(10, Duration::from_millis(300))
        .await
        .expect("claim")
        .is_empty());
    fx.wait_for_messages(0, Duration::from_secs(5)).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_is_idempotent_across_concurrent_starts() {
    let fx = Fixture::new("setup", |_| {}).await;
    let (a, b) = tokio::join!(
        NatsQueue::connect(&fx.url, fx.store.clone(), fx.opts.clone()),
        NatsQueue::connect(&fx.url, fx.store.clone(), fx.opts.clone()),
    );
    let (a, b) = (a.expect("first start"), b.expect("second start"));
    // A node with a new lease updates the shared consumer in place.
    let changed = NatsOptions {
        lease: Duration::from_secs(3),
        ..fx.opts.clone()
    };
    let c = NatsQueue::connect(&fx.url, fx.store.clone(), changed)
        .await
        .expect("restart with a new lease");
    let info = fx
        .js
        .get_stream(fx.opts.stream_name())
        .await
        .expect("stream")
        .consumer_info(fx.opts.consumer_name())
        .await
        .expect("consumer");
    assert_eq!(info.config.ack_wait, Duration::from_secs(3));
    assert_eq!(info.config.max_deliver, 3);

    let id = fx.insert(1).await[0];
    b.enqueued().await.expect("enqueued");
    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.is_empty() {
        assert!(Instant::now() < deadline, "never delivered");
        jobs = a.claim(1, Duration::from_millis(300)).await.expect("claim");
    }
    a.complete(jobs.iter().map(embedded).collect())
        .await
        .expect("complete");
    assert_eq!(fx.state(id).await, State::Ready);
    drop((a, b, c));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_while_the_stream_exists() {
    let fx = Fixture::new("ping", |_| {}).await;
    let q = fx.queue().await;
    q.ping().await.expect("ping with the stream in place");
    // The job stream gone (deleted behind the queue's back): the readiness
    // check fails as an unavailable back-end, naming the stream.
    fx.cleanup().await;
    match q.ping().await {
        Err(Error::Unavailable { what, message, .. }) => {
            assert_eq!(what, "nats");
            assert!(message.contains(&fx.opts.stream_name()), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("engram.db"))
            .await
            .expect("open store"),
    );
    let opts = NatsOptions {
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    // Refused, and silently dropped (a non-routable address).
    for url in ["nats://127.0.0.1:1", "nats://10.255.255.1:4222"] {
        let started = Instant::now();
        let err = match NatsQueue::connect(url, store.clone(), opts.clone()).await {
            Ok(_) => panic!("connected to {url}"),
            Err(e) => e,
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{url}: took {took:?}");
        assert!(matches!(err, NatsError::Connect { .. }), "{url}: {err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to NATS at {url}")),
            "{text}"
        );
        match Error::from(err) {
            Error::Unavailable { what, .. } => assert_eq!(what, "nats"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        println!("{url}: {text} (after {took:?})");
    }
    // Bad options never reach the network.
    let bad = NatsOptions {
        prefix: "no spaces".into(),
        ..Default::default()
    };
    let err = NatsQueue::connect("nats://127.0.0.1:1", store, bad)
        .await
        .err()
        .expect("invalid prefix");
    assert!(matches!(Error::from(err), Error::Invalid { .. }));
}
