//! Per-client limits: a token bucket of calls per client id, and the
//! accounting of open Subscribe streams per client.
//!
//! Each client may make `per_sec` calls a second on average, in bursts of up
//! to `burst`. Over the limit, a call gets RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo` saying when to try again. Health checks and
//! reflection are not limited. [`StreamCounts`] holds each client's open
//! streams (at most `--max-streams-per-client`) and the byte budget their
//! queues share; [`ActiveStreams`] is its read-only view for stats and
//! metrics.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::queue::Budget;

/// A client's allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Calls a second on average.
    pub per_sec: f64,
    /// Most calls at once after a quiet spell.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of every client seen.
pub struct RateLimiter {
    default: Option<Rate>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Limits clients without a rate of their own to `default` (`None`: unlimited).
    pub fn new(default: Option<Rate>) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `client`'s bucket, or says how long to wait.
    pub fn admit(&self, client: &str, own: Option<Rate>) -> Result<(), Status> {
        let Some(rate) = own.or(self.default) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate.per_sec);
        let details = ErrorDetails::with_retry_info(Some(wait));
        let who = if client.is_empty() {
            "anonymous callers"
        } else {
            client
        };
        Err(Status::with_error_details(
            Code::ResourceExhausted,
            format!(
                "rate limit of {} calls/s (burst {}) exceeded for {who}; retry in {} ms",
                rate.per_sec,
                rate.burst,
                wait.as_millis().max(1)
            ),
            details,
        ))
    }
}

/// Open Subscribe streams per client id (or user, for user tokens), with
/// the budget their queues share.
pub struct StreamCounts {
    max: usize,
    max_bytes: usize,
    open: Mutex<HashMap<String, (usize, Arc<Budget>)>>,
    /// Open streams of every client.
    total: AtomicU64,
}

/// How many Subscribe streams are open on this logger.
#[derive(Clone)]
pub struct ActiveStreams(Arc<StreamCounts>);

impl ActiveStreams {
    /// The view of `counts`.
    pub fn of(counts: &Arc<StreamCounts>) -> Self {
        Self(counts.clone())
    }

    /// The number open now.
    pub fn count(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
    }

    /// The bytes (encoded messages) their queues hold now.
    pub fn buffered_bytes(&self) -> usize {
        let open = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().map(|(_, budget)| budget.used()).sum()
    }
}

impl StreamCounts {
    /// At most `max` streams per client, whose queues hold at most
    /// `max_bytes` together.
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            max,
            max_bytes,
            open: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
        }
    }

    /// A place for one more stream of `client`, held until the guard drops.
    pub fn acquire(self: &Arc<Self>, client: String) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (count, budget) = open
            .entry(client.clone())
            .or_insert_with(|| (0, Arc::new(Budget::new(self.max_bytes))));
        if *count >= self.max {
            let who = if client.is_empty() {
                "anonymous callers"
            } else {
                client.as_str()
            };
            return Err(Status::resource_exhausted(format!(
                "too many open Subscribe streams for {who} (at most {})",
                self.max
            )));
        }
        *count += 1;
        let budget = budget.clone();
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(StreamSlot {
            counts: self.clone(),
            client,
            budget,
        })
    }
}

/// One open stream's place in [`StreamCounts`].
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    client: String,
    /// The budget of its client's queues.
    pub budget: Arc<Budget>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, _)) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let limiter = RateLimiter::new(Some(Rate {
            per_sec: 10.0,
            burst: 3.0,
        }));
        for _ in 0..3 {
            limiter.admit("shop", None).expect("within the burst");
        }
        let over = limiter.admit("shop", None).expect_err("over the limit");
        assert_eq!(over.code(), Code::ResourceExhausted);
        let retry = over
            .get_details_retry_info()
            .expect("retry info")
            .retry_delay
            .expect("delay");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(100),
            "{retry:?}"
        );
        limiter
            .admit("other", None)
            .expect("buckets are per client");
        std::thread::sleep(Duration::from_millis(120));
        limiter.admit("shop", None).expect("refilled");
    }

    #[test]
    fn own_rates_win_and_no_rate_means_unlimited() {
        let unlimited = RateLimiter::new(None);
        for _ in 0..1000 {
            unlimited.admit("x", None).expect("no limit");
        }
        let strict = Some(Rate {
            per_sec: 1.0,
            burst: 1.0,
        });
        unlimited.admit("y", strict).expect("first");
        assert!(unlimited.admit("y", strict).is_err());
    }
}
