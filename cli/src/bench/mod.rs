//! `herald bench`: load generators that measure a running Herald over gRPC.
//!
//! - `ingest`: closed-loop CreateEvent calls, against the same closed loop of
//!   `grpc.health.v1.Health/Check` on the same server as the floor.
//! - `e2e`: create N events and wait, through Notifier subscriptions, until
//!   every one is PROCESSED.
//! - `fanout`: S subscriptions (Subscribe, or Server-Sent Events with
//!   `--sse`) spread over U users, a burst of E events for each user, the
//!   delay from PROCESSED to arrival at each subscriber, and (given the
//!   logger's pid) what each stream costs the logger in memory.
//!
//! Latencies go into HDR histograms (microseconds). Times that span processes
//! (`e2e`, `fanout`) compare the server's timestamps with this machine's clock,
//! so run the benchmark on the server's machine.
//!
//! Each benchmark has a module of its own (`closed_loop` for ingest and
//! stats, `e2e`, `fanout`); this one holds what they share: the series and
//! report they fill, the histograms, connections and progress bars; `cpu`
//! reads the CPU time of processes on this machine (from /proc).

use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use hdrhistogram::Histogram;
use herald_client::{ApiKey, Tls};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tonic::transport::Channel;

mod closed_loop;
mod cpu;
mod e2e;
mod fanout;

pub use closed_loop::{IngestArgs, StatsArgs};
pub use e2e::E2eArgs;
pub use fanout::FanoutArgs;

/// The benchmarks.
#[derive(Subcommand)]
pub enum Bench {
    /// Closed-loop CreateEvent throughput and latency, against the Health/Check floor.
    Ingest(IngestArgs),
    /// Create N events and measure until every one is PROCESSED.
    E2e(E2eArgs),
    /// Many Subscribe streams over some users; delivery latency of a burst
    /// of events, and what each stream costs the logger.
    Fanout(FanoutArgs),
    /// Closed-loop GetStats throughput and latency (it adds up every
    /// partition's counts).
    Stats(StatsArgs),
}

/// Runs one benchmark against `server` and prints its results.
pub async fn run(
    server: &str,
    api_key: &str,
    tls: &Tls,
    bench: &Bench,
    json: bool,
) -> anyhow::Result<()> {
    let key = ApiKey::bearer(api_key)?;
    let report = match bench {
        Bench::Ingest(args) => closed_loop::ingest(server, tls, &key, args).await?,
        Bench::E2e(args) => e2e::e2e(server, tls, api_key, args).await?,
        Bench::Fanout(args) => fanout::fanout(server, tls, (&key, api_key), args).await?,
        Bench::Stats(args) => closed_loop::stats(server, tls, &key, args).await?,
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One measured series: how many operations, over how long, with what
/// latencies, and what CPU each watched process spent per operation.
struct Series {
    name: String,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    cpu_us_per_op: Vec<(String, f64)>,
}

impl Series {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: histogram(),
            cpu_us_per_op: Vec::new(),
        }
    }

    /// Adds another task's counts and latencies to these.
    fn merge(&mut self, other: Series) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share their bounds");
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "ops": self.ops,
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.rate(),
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
            "p999_ms": self.quantile_ms(0.999),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "cpu_us_per_op": self
                .cpu_us_per_op
                .iter()
                .map(|(name, us)| (name.clone(), json!(us)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// What a benchmark found: its series and a few named figures.
struct Report {
    bench: &'static str,
    series: Vec<Series>,
    figures: Vec<(&'static str, Value)>,
}

impl Report {
    fn json(&self) -> Value {
        let mut out = json!({
            "benchmark": self.bench,
            "series": self.series.iter().map(Series::json).collect::<Vec<_>>(),
        });
        for (name, value) in &self.figures {
            out[*name] = value.clone();
        }
        out
    }

    fn table(&self) -> String {
        let mut out = format!(
            "{:<28} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            self.bench, "ops", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        for s in &self.series {
            out += &format!(
                "{:<28} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}\n",
                s.name,
                s.ops,
                s.rate(),
                s.quantile_ms(0.5),
                s.quantile_ms(0.99),
                s.quantile_ms(0.999),
                s.latency_us.max() as f64 / 1000.0,
                s.errors
            );
            if !s.cpu_us_per_op.is_empty() {
                let each: Vec<String> = s
                    .cpu_us_per_op
                    .iter()
                    .map(|(name, us)| format!("{name} {us:.1}"))
                    .collect();
                out += &format!("{:<28} CPU µs per op: {}\n", "", each.join(", "));
            }
        }
        for (name, value) in &self.figures {
            out += &format!("{name}: {value}\n");
        }
        out
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

async fn connect_all(server: &str, tls: &Tls, n: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = tls.endpoint(server)?;
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {server}"))?,
        );
    }
    Ok(channels)
}

fn spinner(message: &str, length: Option<u64>) -> ProgressBar {
    let bar = match length {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A run-unique prefix, so user ids of earlier runs never match.
fn run_tag() -> String {
    format!("bench-{}", uuid::Uuid::now_v7().simple())
}

/// Time from a server timestamp to now, on this machine's clock.
fn since(t: Option<prost_types::Timestamp>) -> Duration {
    t.and_then(|t| SystemTime::try_from(t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}
