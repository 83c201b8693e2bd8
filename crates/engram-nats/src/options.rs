//! Configuration of a [`NatsQueue`](crate::NatsQueue) and the names derived from it.

use engram_core::RetryPolicy;
use std::time::Duration;

use crate::NatsError;

/// How a [`NatsQueue`](crate::NatsQueue) names and tunes its JetStream objects.
///
/// Every node of one deployment must use the same `prefix`, `lease` and
/// `max_deliver` (the consumer is shared; the last node to start wins).
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Subject prefix: jobs go to `<prefix>.jobs.<job id>`, dead letters to
    /// `<prefix>.dead`. Dot-separated tokens of letters, digits, `_` and `-`.
    /// The stream names are derived from it (see [`NatsOptions::stream_name`]).
    pub prefix: String,
    /// How long a claimed job belongs to its worker. It is the consumer's
    /// `ack_wait` (the first redelivery comes after it) and, minus a safety
    /// margin, the store lease. Set it above the longest time a worker needs
    /// for one batch, or jobs are redelivered while still being embedded.
    pub lease: Duration,
    /// Deliveries of one message before it is a poison job: the delivery
    /// numbered `max_deliver` is not worked on but dead-lettered. At least 2.
    pub max_deliver: u32,
    /// A job still runnable this long after its message was published is
    /// assumed lost and published again (the sweeper). Keep it above the
    /// time a backlog takes to drain, or backlogged jobs get extra copies.
    pub republish_after: Duration,
    /// Retry schedule of failed attempts (the store applies it).
    pub retry: RetryPolicy,
    /// Bound on connecting to the server.
    pub connect_timeout: Duration,
    /// Bound on every JetStream request (publish ack, stream API).
    pub request_timeout: Duration,
    /// How often the dispatcher looks for jobs to publish without being woken.
    pub dispatch_interval: Duration,
    /// Jobs the dispatcher publishes per round.
    pub dispatch_batch: usize,
    /// Unacknowledged messages the consumer hands out across all workers.
    pub max_ack_pending: i64,
    /// How long dead letters are kept on `<prefix>.dead`.
    pub dead_letter_max_age: Duration,
    /// Stream replicas (1 for a single server; 3 for a cluster).
    pub replicas: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            prefix: "engram".into(),
            lease: Duration::from_secs(60),
            max_deliver: 5,
            republish_after: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            dispatch_interval: Duration::from_secs(1),
            dispatch_batch: 256,
            max_ack_pending: 10_000,
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// Longest single redelivery delay, as a multiple of the lease.
const MAX_BACKOFF_FACTOR: u32 = 16;

impl NatsOptions {
    pub(crate) fn validate(&self) -> Result<(), NatsError> {
        let bad = |m: String| Err(NatsError::InvalidOptions(m));
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if self.prefix.len() > 64 || !self.prefix.split('.').all(token_ok) {
            return bad(format!(
                "prefix {:?}: 1 to 64 characters, dot-separated tokens of letters, digits, _ and -",
                self.prefix
            ));
        }
        if self.lease < Duration::from_millis(500) {
            return bad(format!("lease {:?} is below 500ms", self.lease));
        }
        if self.max_deliver < 2 {
            return bad(format!(
                "max_deliver {} is below 2 (the last delivery is dead-lettered, not worked on)",
                self.max_deliver
            ));
        }
        if self.republish_after < self.lease {
            return bad(format!(
                "republish_after {:?} is below the lease {:?}",
                self.republish_after, self.lease
            ));
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts is 0".into());
        }
        if self.dispatch_batch == 0 || self.dispatch_interval.is_zero() {
            return bad("dispatch_batch and dispatch_interval must be positive".into());
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("connect_timeout and request_timeout must be positive".into());
        }
        if self.replicas == 0 || self.max_ack_pending == 0 {
            return bad("replicas and max_ack_pending must be positive".into());
        }
        Ok(())
    }

    fn name_base(&self) -> String {
        self.prefix.replace('.', "_").to_ascii_uppercase()
    }

    /// The work-queue stream holding job announcements: `<PREFIX>_JOBS`
    /// (dots become `_`, so `a.b` and `a_b` share a stream: don't).
    pub fn stream_name(&self) -> String {
        format!("{}_JOBS", self.name_base())
    }

    /// The stream keeping dead letters: `<PREFIX>_DEAD`.
    pub fn dead_stream_name(&self) -> String {
        format!("{}_DEAD", self.name_base())
    }

    /// The durable pull consumer every worker of every node shares.
    pub fn consumer_name(&self) -> String {
        "workers".into()
    }

    /// Subject of a job's announcement.
    pub fn job_subject(&self, job_id: u64) -> String {
        format!("{}.jobs.{job_id}", self.prefix)
    }

    /// Wildcard covering every job announcement.
    pub fn jobs_filter(&self) -> String {
        format!("{}.jobs.*", self.prefix)
    }

    /// Subject dead letters are published to.
    pub fn dead_subject(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Redelivery delays after a missed ack: delivery `n` (1-based) may stay
    /// unacknowledged for `backoff[min(n, len) - 1]`. The first entry is the
    /// lease (JetStream makes it the `ack_wait`), then doubling, capped.
    pub fn redelivery_backoff(&self) -> Vec<Duration> {
        (0..self.max_deliver.saturating_sub(1).max(1))
            .map(|i| {
                let factor = 1u32 << i.min(16);
                self.lease.saturating_mul(factor.min(MAX_BACKOFF_FACTOR))
            })
            .collect()
    }

    /// Longest time JetStream keeps redelivering one message: the sum of the
    /// ack deadlines of all `max_deliver` deliveries.
    pub fn redelivery_horizon(&self) -> Duration {
        let backoff = self.redelivery_backoff();
        (0..self.max_deliver as usize)
            .map(|d| backoff[d.min(backoff.len() - 1)])
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// How much shorter than `ack_wait` the store lease is, so that the store
    /// lease has always expired when JetStream redelivers.
    pub(crate) fn lease_margin(&self) -> Duration {
        (self.lease / 10).min(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let o = NatsOptions {
            prefix: "engram.prod-1".into(),
            ..Default::default()
        };
        o.validate().expect("valid");
        assert_eq!(o.stream_name(), "ENGRAM_PROD-1_JOBS");
        assert_eq!(o.dead_stream_name(), "ENGRAM_PROD-1_DEAD");
        assert_eq!(o.job_subject(42), "engram.prod-1.jobs.42");
        assert_eq!(o.jobs_filter(), "engram.prod-1.jobs.*");
        assert_eq!(o.dead_subject(), "engram.prod-1.dead");
    }

    #[test]
    fn rejects_bad_options() {
        for prefix in ["", "a..b", "a.*", "a b", "a.>", ".a"] {
            let o = NatsOptions {
                prefix: prefix.into(),
                ..Default::default()
            };
            assert!(o.validate().is_err(), "{prefix:?}");
        }
        let o = NatsOptions {
            max_deliver: 1,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = NatsOptions {
            republish_after: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }

    #[test]
    fn backoff_starts_at_the_lease_and_is_capped() {
        let o = NatsOptions {
            lease: Duration::from_secs(10),
            max_deliver: 8,
            ..Default::default()
        };
        let b = o.redelivery_backoff();
        assert_eq!(b.len(), 7);
        assert_eq!(b[0], o.lease);
        assert_eq!(b[1], o.lease * 2);
        assert_eq!(b[6], o.lease * 16);
        // 10 * (1 + 2 + 4 + 8 + 16 + 16 + 16 + 16)
        assert_eq!(o.redelivery_horizon(), Duration::from_secs(790));
        let two = NatsOptions {
            max_deliver: 2,
            ..o
        };
        assert_eq!(two.redelivery_backoff(), vec![two.lease]);
        assert_eq!(two.redelivery_horizon(), two.lease * 2);
    }
}
