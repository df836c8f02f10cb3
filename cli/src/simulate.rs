//! The delivery simulator behind `herald simulate`: many users, each with a
//! live subscription that opens a share of its notifications, while the
//! processors deliver through a lossy simulated sink; the report is read back
//! from the server.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use herald::{EventStatus, domain::EventInput, random::SplitMix64};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

use herald_client::{Client, Error, ListEvents, Message, SubscribeOptions};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// Simulated users, each with a live subscription.
    pub users: usize,
    /// Events per user.
    pub messages: usize,
    /// The share of delivery attempts the processors' simulated sink loses
    /// (as they were started with), for the report.
    pub loss_ratio: f64,
    /// The share of notifications each user marks OPENED.
    pub open_ratio: f64,
    /// Delivery attempts the processors make before FAILED (their
    /// --max-deliveries), for the report.
    pub max_deliveries: u32,
    /// Seed of the users' choices; from the clock if none.
    pub seed: Option<u64>,
    /// Give up waiting for the events to settle after this long.
    pub timeout: Duration,
}

/// What happened, as the server tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulationReport {
    /// The category that tags this run's events (and prefixes its user ids).
    pub run: String,
    /// Events created.
    pub created: u64,
    /// Events that reached PROCESSED (those OPENED since included).
    pub processed: u64,
    /// Events FAILED after every delivery attempt was lost.
    pub failed: u64,
    /// Events OPENED by their users.
    pub opened: u64,
    /// Events still PENDING when the run ended (0 unless it timed out).
    pub pending: u64,
    /// The loss ratio asked for.
    pub requested_loss_ratio: f64,
    /// failed / created.
    pub observed_failure_ratio: f64,
    /// What the loss ratio makes of it: loss_ratio ^ max_deliveries.
    pub expected_failure_ratio: f64,
    /// The 95% interval of the failure ratio, given how many events ran
    /// (Wilson's score interval).
    pub failure_interval: (f64, f64),
    /// The per-attempt loss the failures imply: failure ratio ^ (1 / max_deliveries).
    pub implied_loss_ratio: f64,
    /// The open ratio asked for.
    pub requested_open_ratio: f64,
    /// opened / processed.
    pub observed_open_ratio: f64,
    /// The 95% interval of the open ratio (Wilson's score interval).
    pub open_interval: (f64, f64),
    /// Delivery latency (created_at to PROCESSED, server clocks) at 50, 90,
    /// 99 and 100 percent, in milliseconds.
    pub latency_ms: [f64; 4],
}

impl SimulationReport {
    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        json!({
            "run": self.run,
            "created": self.created,
            "processed": self.processed,
            "failed": self.failed,
            "opened": self.opened,
            "pending": self.pending,
            "loss_ratio": {
                "requested": self.requested_loss_ratio,
                "implied_by_failures": self.implied_loss_ratio,
            },
            "failure_ratio": {
                "observed": self.observed_failure_ratio,
                "interval_95": [self.failure_interval.0, self.failure_interval.1],
                "expected": self.expected_failure_ratio,
            },
            "open_ratio": {
                "requested": self.requested_open_ratio,
                "observed": self.observed_open_ratio,
                "interval_95": [self.open_interval.0, self.open_interval.1],
            },
            "latency_ms": {
                "p50": self.latency_ms[0],
                "p90": self.latency_ms[1],
                "p99": self.latency_ms[2],
                "max": self.latency_ms[3],
            },
        })
    }

    /// The report as a few readable lines.
    pub fn text(&self) -> String {
        let [p50, p90, p99, max] = self.latency_ms;
        format!(
            "run {}\n\
             created    {}\n\
             processed  {}\n\
             failed     {}\n\
             opened     {}\n\
             pending    {}\n\
             failure ratio  observed {:.4} (95% interval {:.4} to {:.4})  expected {:.4}: {} (loss {:.3} per attempt; implied {:.3})\n\
             open ratio     observed {:.3} (95% interval {:.3} to {:.3})  requested {:.3}: {}\n\
             delivery latency ms  p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}\n",
            self.run,
            self.created,
            self.processed,
            self.failed,
            self.opened,
            self.pending,
            self.observed_failure_ratio,
            self.failure_interval.0,
            self.failure_interval.1,
            self.expected_failure_ratio,
            verdict(self.failure_interval, self.expected_failure_ratio),
            self.requested_loss_ratio,
            self.implied_loss_ratio,
            self.observed_open_ratio,
            self.open_interval.0,
            self.open_interval.1,
            self.requested_open_ratio,
            verdict(self.open_interval, self.requested_open_ratio),
        )
    }
}

/// Progress of a run, for a progress bar: events settled (no longer
/// PENDING) out of those created.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Runs a simulation through `client` and reports what the server says happened.
pub async fn simulate(
    client: &Client,
    options: &SimulateOptions,
    progress: Progress,
) -> Result<SimulationReport, Error> {
    let run = format!("sim-{}", &Uuid::now_v7().simple().to_string()[20..]);
    let user = |i: usize| format!("{run}-user-{i}");
    let seed = options
        .seed
        .unwrap_or_else(|| SplitMix64::from_time().next_u64());

    // Every user listens first, so no notification goes unseen.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let notified = Arc::new(AtomicU64::new(0));
    let mut users = JoinSet::new();
    for i in 0..options.users {
        let mut stream = client
            .subscribe_with(SubscribeOptions {
                categories: vec![run.clone()],
                ..SubscribeOptions::user(user(i))
            })
            .await?;
        let (client, latencies, notified) = (client.clone(), latencies.clone(), notified.clone());
        let mut choices = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let open_ratio = options.open_ratio;
        users.spawn(async move {
            while let Some(message) = stream.next().await {
                let Message::Event(n) = message? else {
                    continue;
                };
                let took = n.event.updated_at.duration_since(n.event.created_at);
                latencies
                    .lock()
                    .map_err(|_| Error::Setup("latency lock poisoned".into()))?
                    .push(took.unwrap_or_default());
                if choices.chance(open_ratio) {
                    client
                        .update_status(n.event.id, EventStatus::Opened)
                        .await?;
                }
                notified.fetch_add(1, Ordering::Release);
            }
            Ok::<(), Error>(())
        });
    }

    let mut created = 0;
    let inputs: Vec<EventInput> = (0..options.messages)
        .flat_map(|m| (0..options.users).map(move |u| (m, u)))
        .map(|(m, u)| EventInput {
            user_id: user(u),
            description: format!("Simulated message {} of {}", m + 1, options.messages),
            category: run.clone(),
            ..EventInput::default()
        })
        .collect();
    for batch in inputs.chunks(1_000) {
        for result in client.create_many(batch.to_vec()).await? {
            result?;
            created += 1;
        }
        progress(0, created);
    }

    // Done when nothing is PENDING and every processed event's notification
    // was handled by its user (opened or not).
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut counts;
    loop {
        counts = count_by_status(client, &run).await?;
        let pending = counts.get(&EventStatus::Pending).copied().unwrap_or(0);
        let processed = processed_of(&counts);
        progress(created - pending, created);
        let settled = pending == 0 && notified.load(Ordering::Acquire) >= processed;
        if settled || tokio::time::Instant::now() >= deadline {
            break;
        }
        if let Some(Ok(Err(err))) = users.try_join_next() {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    users.shutdown().await;
    let counts = count_by_status(client, &run).await.unwrap_or(counts);

    let mut latencies = latencies
        .lock()
        .map_err(|_| Error::Setup("latency lock poisoned".into()))?
        .clone();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let get = |s| counts.get(&s).copied().unwrap_or(0);
    let total: u64 = counts.values().sum();
    let processed = processed_of(&counts);
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let failure = ratio(get(EventStatus::Failed), total);
    Ok(SimulationReport {
        run,
        created: total,
        processed,
        failed: get(EventStatus::Failed),
        opened: get(EventStatus::Opened),
        pending: get(EventStatus::Pending),
        requested_loss_ratio: options.loss_ratio,
        observed_failure_ratio: failure,
        expected_failure_ratio: options
            .loss_ratio
            .powi(options.max_deliveries.max(1) as i32),
        failure_interval: wilson(get(EventStatus::Failed), total),
        open_interval: wilson(get(EventStatus::Opened), processed),
        implied_loss_ratio: failure.powf(1.0 / f64::from(options.max_deliveries.max(1))),
        requested_open_ratio: options.open_ratio,
        observed_open_ratio: ratio(get(EventStatus::Opened), processed),
        latency_ms: [quantile(0.5), quantile(0.9), quantile(0.99), quantile(1.0)],
    })
}

/// The 95% score interval (Wilson's) of a ratio seen as `hits` out of `n`:
/// where the true ratio lies, given the sample's size; (0, 1) for no sample.
pub fn wilson(hits: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_964;
    let (n, p) = (n as f64, hits as f64 / n as f64);
    let z2 = Z * Z / n;
    let center = (p + z2 / 2.0) / (1.0 + z2);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n)).sqrt() / (1.0 + z2);
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Whether `expected` is within `interval`: said for a person reading the report.
fn verdict(interval: (f64, f64), expected: f64) -> &'static str {
    if (interval.0..=interval.1).contains(&expected) {
        "within the interval (the difference is noise)"
    } else {
        "outside the interval (a real difference)"
    }
}

/// Events that reached PROCESSED: those still there and those OPENED since.
fn processed_of(counts: &HashMap<EventStatus, u64>) -> u64 {
    [EventStatus::Processed, EventStatus::Opened]
        .iter()
        .map(|s| counts.get(s).copied().unwrap_or(0))
        .sum()
}

/// How many of the run's events are in each status, read from the server.
async fn count_by_status(client: &Client, run: &str) -> Result<HashMap<EventStatus, u64>, Error> {
    let mut counts = HashMap::new();
    let mut events =
        std::pin::pin!(client.events(ListEvents::new().category(run).page_size(1_000)));
    while let Some(event) = events.next().await {
        *counts.entry(event?.status).or_default() += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::wilson;

    #[test]
    fn the_score_interval_matches_the_textbook_and_narrows_with_the_sample() {
        let (lo, hi) = wilson(10, 100);
        assert!(
            (lo - 0.0552).abs() < 5e-4 && (hi - 0.1744).abs() < 5e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(1_000, 10_000);
        assert!(lo > 0.093 && hi < 0.107 && hi - lo < 0.013, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(0, 50);
        assert!(lo == 0.0 && hi > 0.0 && hi < 0.08, "{lo} {hi}");
    }
}
