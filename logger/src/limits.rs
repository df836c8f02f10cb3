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
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
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
    /// The rate it refills at (a client's own, or the default).
    rate: Rate,
}

impl Bucket {
    /// A full bucket of `rate`, as of `now`.
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
            rate,
        }
    }

    /// The tokens it holds at `now`.
    fn tokens_at(&self, now: Instant) -> f64 {
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate.per_sec;
        (self.tokens + refill).min(self.rate.burst)
    }

    /// The bucket refilled up to `now`.
    fn refill(&mut self, now: Instant) {
        self.tokens = self.tokens_at(now);
        self.at = now;
    }

    /// How long until it has a whole token.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate.per_sec).max(0.0))
    }
}

/// How often idle buckets are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Token buckets by key, each forgotten once it has refilled whole (it
/// would read the same as a new one), so the map holds only the keys
/// active within about `burst / per_sec`, however many were ever seen.
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    swept: Instant,
}

impl<K: Hash + Eq> Buckets<K> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// Forgets the buckets that are full by `now`, every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.map
                .retain(|_, bucket| bucket.tokens_at(now) < bucket.rate.burst);
            self.swept = now;
        }
    }

    /// `key`'s bucket, refilled to `now` at `rate`, if it has one (a key
    /// without one has a full bucket).
    fn find<Q>(&mut self, key: &Q, rate: Rate, now: Instant) -> Option<&mut Bucket>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.sweep(now);
        let bucket = self.map.get_mut(key)?;
        bucket.rate = rate;
        bucket.refill(now);
        Some(bucket)
    }

    /// `key`'s bucket, refilled to `now` at `rate`, made full if unknown.
    fn get<Q>(&mut self, key: &Q, rate: Rate, now: Instant) -> &mut Bucket
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.find(key, rate, now).is_none() {
            self.map.insert(key.to_owned(), Bucket::full(rate, now));
        }
        self.map.get_mut(key).expect("found or inserted above")
    }
}

/// Token buckets of every client seen.
pub struct RateLimiter {
    default: Option<Rate>,
    buckets: Mutex<Buckets<String>>,
}

impl RateLimiter {
    /// Limits clients without a rate of their own to `default` (`None`: unlimited).
    pub fn new(default: Option<Rate>) -> Self {
        Self {
            default,
            buckets: Mutex::new(Buckets::new()),
        }
    }

    /// Takes one call from `client`'s bucket, or says how long to wait.
    pub fn admit(&self, client: &str, own: Option<Rate>) -> Result<(), Status> {
        let Some(rate) = own.or(self.default) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.get(client, rate, Instant::now());
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = bucket.wait();
        let who = if client.is_empty() {
            "anonymous callers"
        } else {
            client
        };
        Err(retry_later(
            format!(
                "rate limit of {} calls/s (burst {}) exceeded for {who}",
                rate.per_sec, rate.burst,
            ),
            wait,
        ))
    }

    /// How many buckets are kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

/// RESOURCE_EXHAUSTED saying `what`, and when to retry (in the message
/// and as a `google.rpc.RetryInfo`).
fn retry_later(what: String, wait: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{what}; retry in {} ms", wait.as_millis().max(1)),
        ErrorDetails::with_retry_info(Some(wait)),
    )
}

/// Failed authentications per peer address (IP), a token bucket each: a
/// peer over its allowance is refused before its credentials are looked
/// at, so a guess made then tells nothing.
pub struct AuthFailures {
    rate: Rate,
    buckets: Mutex<Buckets<IpAddr>>,
}

impl AuthFailures {
    /// Peers may fail `rate` times (a burst, then per second).
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(Buckets::new()),
        }
    }

    /// Refuses `peer` while it has no failure left to make. A peer that
    /// has not failed lately has no bucket, and none is made for it: a
    /// call that authenticates costs one map look-up.
    pub fn check(&self, peer: IpAddr) -> Result<(), Status> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.find(&peer, self.rate, Instant::now()) {
            Some(bucket) if bucket.tokens < 1.0 => Err(retry_later(
                format!("too many failed authentications from {peer}"),
                bucket.wait(),
            )),
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.get(&peer, self.rate, Instant::now());
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }
}

/// Open Subscribe streams per client id (or user, for user tokens; or
/// connection, in open mode), with the budget their queues share.
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

    #[test]
    fn buckets_of_idle_names_are_forgotten() {
        let limiter = RateLimiter::new(Some(Rate {
            per_sec: 1000.0,
            burst: 2.0,
        }));
        for i in 0..5000 {
            limiter
                .admit(&format!("user:{i}"), None)
                .expect("first call");
        }
        assert_eq!(limiter.kept(), 5000);
        // Each refills whole within 1 ms; by the next sweep every one goes.
        std::thread::sleep(Duration::from_millis(5));
        limiter.buckets.lock().expect("lock").swept -= SWEEP_EVERY;
        limiter.admit("user:new", None).expect("first call");
        assert_eq!(limiter.kept(), 1);
    }

    #[test]
    fn failed_authentications_run_out_per_peer() {
        let failures = AuthFailures::new(Rate {
            per_sec: 0.001,
            burst: 3.0,
        });
        let (a, b): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().expect("ip"), "::1".parse().expect("ip"));
        for _ in 0..3 {
            failures.check(a).expect("failures left");
            failures.failed(a);
        }
        let refused = failures.check(a).expect_err("none left");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("failed authentications from 10.0.0.1")
        );
        assert!(refused.get_details_retry_info().is_some());
        failures.check(b).expect("another peer is not touched");
        let kept = failures.buckets.lock().expect("lock").map.len();
        assert_eq!(kept, 1, "a peer that never failed gets no bucket");
    }
}
