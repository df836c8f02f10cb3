//! `herald bench`: load generators that measure a running Herald over gRPC.
//!
//! - `ingest`: closed-loop CreateEvent calls, against the same closed loop of
//!   `grpc.health.v1.Health/Check` on the same server as the floor.
//! - `e2e`: create N events and wait, through Notifier subscriptions, until
//!   every one is PROCESSED.
//! - `fanout`: S subscriptions spread over U users, a burst of E events for
//!   each user, the delay from PROCESSED to arrival at each subscriber, and
//!   (given the logger's pid) what each stream costs the logger in memory.
//!
//! Latencies go into HDR histograms (microseconds). Times that span processes
//! (`e2e`, `fanout`) compare the server's timestamps with this machine's clock,
//! so run the benchmark on the server's machine.
//!
//! Each benchmark has a module of its own (`closed_loop` for ingest and
//! stats, `e2e`, `fanout`); this one holds what they share: the series and
//! report they fill, the histograms, connections and progress bars, and the
//! CPU time of processes on this machine (read from /proc).

use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use hdrhistogram::Histogram;
use herald_client::{ApiKey, Tls};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tonic::transport::Channel;

mod closed_loop;
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
        Bench::Fanout(args) => fanout::fanout(server, tls, &key, args).await?,
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

/// A process on this machine whose CPU time a benchmark reads: `--cpu-of NAME=PID`.
#[derive(Clone, Debug)]
pub struct Watched {
    name: String,
    pid: u32,
}

/// Parses `NAME=PID`, refusing a process whose CPU time cannot be read.
fn watched(arg: &str) -> Result<Watched, String> {
    let (name, pid) = arg
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{arg:?}: expected NAME=PID, for example logger=1234"))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("{arg:?}: {pid:?} is not a process id"))?;
    cpu_seconds(pid).ok_or_else(|| format!("{arg:?}: cannot read /proc/{pid}/stat"))?;
    Ok(Watched {
        name: name.to_owned(),
        pid,
    })
}

/// The name this client's own CPU time is reported under.
const CLIENT: &str = "bench client";

/// The CPU time (user and system, in seconds) process `pid` has used so
/// far, from /proc, if it can be read.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses;
    // utime and stime are the 14th and 15th of the line, in clock ticks
    // (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The CPU time of each watched process and of this client, read together.
fn read_cpu(watched: &[Watched]) -> Vec<(String, Option<f64>)> {
    watched
        .iter()
        .map(|w| (w.name.clone(), cpu_seconds(w.pid)))
        .chain([(CLIENT.to_owned(), cpu_seconds(std::process::id()))])
        .collect()
}

/// CPU µs per operation of each process read at both ends of `ops`
/// operations (a process that could not be read at either end is left out).
fn cpu_per_op(
    before: &[(String, Option<f64>)],
    after: &[(String, Option<f64>)],
    ops: u64,
) -> Vec<(String, f64)> {
    if ops == 0 {
        return Vec::new();
    }
    before
        .iter()
        .zip(after)
        .filter_map(|((name, b), (_, a))| {
            let us = (a.as_ref()? - b.as_ref()?) * 1e6 / ops as f64;
            Some((name.clone(), (us * 100.0).round() / 100.0))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn cpu_of_takes_a_name_and_a_process_whose_cpu_can_be_read() {
        let me = std::process::id();
        let w = watched(&format!("logger={me}")).expect("this process");
        assert_eq!((w.name.as_str(), w.pid), ("logger", me));
        for (arg, says) in [
            ("logger".to_owned(), "expected NAME=PID"),
            (format!("={me}"), "expected NAME=PID"),
            ("logger=one".to_owned(), "\"one\" is not a process id"),
            ("logger=0".to_owned(), "cannot read /proc/0/stat"),
        ] {
            let err = watched(&arg).expect_err(&arg);
            assert!(err.contains(says), "{arg}: {err}");
        }
    }

    #[test]
    fn cpu_time_is_read_from_proc_and_shared_out_per_operation() {
        let me = std::process::id();
        let start = cpu_seconds(me).expect("this process's stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spun = 0u64;
        while cpu_seconds(me).expect("stat") < start + 0.05 && Instant::now() < deadline {
            spun = std::hint::black_box(spun.wrapping_add(1));
        }
        assert!(
            cpu_seconds(me).expect("stat") >= start + 0.05,
            "no CPU time counted"
        );

        let before = [
            ("logger".to_owned(), Some(1.0)),
            ("gone".to_owned(), None),
            (CLIENT.to_owned(), Some(2.0)),
        ];
        let after = [
            ("logger".to_owned(), Some(1.5)),
            ("gone".to_owned(), Some(3.0)),
            (CLIENT.to_owned(), Some(2.25)),
        ];
        assert_eq!(
            cpu_per_op(&before, &after, 1_000),
            [("logger".to_owned(), 500.0), (CLIENT.to_owned(), 250.0)]
        );
        assert!(cpu_per_op(&before, &after, 0).is_empty());
        let read = read_cpu(&[]);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, CLIENT);
        assert!(read[0].1.is_some());
    }
}
