//! `bench ingest` and `bench stats`: closed loops of one call, each against
//! the same loop of `grpc.health.v1.Health/Check` as the floor (ingest).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use herald::pb::{self, event_logger_client::EventLoggerClient};
use herald_client::{ApiKey, Tls};
use herald_runtime::flags::positive_duration;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    Report, Series, connect_all,
    cpu::{Watched, cpu_per_op, read_cpu, watched},
    record, spinner,
};

/// Flags of `bench stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Measured time (e.g. 10s, 500ms).
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    warmup: Duration,
}

/// Flags of `bench ingest`.
#[derive(Args)]
pub struct IngestArgs {
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured time of each of the two loops (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    duration: Duration,
    /// Unmeasured time before each loop.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    warmup: Duration,
    /// Distinct user ids the creates take in turn: the events per user,
    /// and with them the size of each user's index in Redis, follow from it.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    users: u64,
    /// A process on this machine (NAME=PID, repeatable; for example
    /// logger=1234) whose CPU time per call is reported for each loop, read
    /// from /proc over its measured time, beside this client's own.
    #[arg(long = "cpu-of", value_name = "NAME=PID", value_parser = watched)]
    cpu_of: Vec<Watched>,
}

/// Calls `call` from `concurrency` tasks in a closed loop for `warmup` then
/// `duration`, measuring only the second part: the calls' latencies, and
/// the CPU time the `watched` processes and this client spent per call.
async fn closed_loop<F, Fut>(
    name: &str,
    channels: &[Channel],
    concurrency: usize,
    (warmup, duration): (Duration, Duration),
    watched: &[Watched],
    call: F,
) -> Series
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let bar = spinner(name, Some(duration.as_secs().max(1)));
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    let mut tasks = JoinSet::new();
    for i in 0..concurrency.max(1) {
        let (channel, call) = (channels[i % channels.len()].clone(), call.clone());
        tasks.spawn(async move {
            let mut series = Series::new("");
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = call(channel.clone()).await;
                if t0 >= measure_from {
                    match result {
                        Ok(()) => {
                            series.ops += 1;
                            record(&mut series.latency_us, t0.elapsed());
                        }
                        Err(_) => series.errors += 1,
                    }
                }
            }
            series
        });
    }
    let cpu = {
        let watched = watched.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = read_cpu(&watched);
            tokio::time::sleep_until(end.into()).await;
            (before, read_cpu(&watched))
        })
    };
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(start.elapsed().saturating_sub(warmup).as_secs());
            }
        })
    };
    let mut total = Series::new(name);
    while let Some(part) = tasks.join_next().await {
        total.merge(part.expect("benchmark task panicked"));
    }
    ticker.abort();
    bar.finish_and_clear();
    total.elapsed = duration;
    if let Ok((before, after)) = cpu.await {
        total.cpu_us_per_op = cpu_per_op(&before, &after, total.ops);
    }
    total
}

pub(super) async fn ingest(
    server: &str,
    tls: &Tls,
    key: &ApiKey,
    args: &IngestArgs,
) -> anyhow::Result<Report> {
    let channels = connect_all(server, tls, args.connections).await?;
    let floor = closed_loop(
        "health (floor)",
        &channels,
        args.concurrency,
        (args.warmup, args.duration),
        &args.cpu_of,
        |ch| async {
            HealthClient::new(ch)
                .check(HealthCheckRequest::default())
                .await
                .map(drop)
        },
    )
    .await;
    let counter = Arc::new(AtomicU64::new(0));
    let (key, users) = (key.clone(), args.users);
    let ingest = closed_loop(
        "ingest",
        &channels,
        args.concurrency,
        (args.warmup, args.duration),
        &args.cpu_of,
        move |ch| {
            let request = ingest_request(counter.fetch_add(1, Ordering::Relaxed), users);
            let key = key.clone();
            async move {
                EventLoggerClient::with_interceptor(ch, key)
                    .create_event(request)
                    .await
                    .map(drop)
            }
        },
    )
    .await;
    let ratio = ingest.rate() / floor.rate().max(f64::EPSILON);
    Ok(Report {
        bench: "ingest",
        figures: vec![
            ("concurrency", json!(args.concurrency)),
            ("connections", json!(args.connections)),
            ("users", json!(args.users)),
            (
                "ingest_over_floor",
                json!((ratio * 1000.0).round() / 1000.0),
            ),
        ],
        series: vec![floor, ingest],
    })
}

/// The `n`th create of the ingest loop: user `n` mod `users`.
fn ingest_request(n: u64, users: u64) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        user_id: format!("bench-user-{}", n % users.max(1)),
        description: format!("benchmark event {n}"),
        ..Default::default()
    }
}

/// Closed-loop GetStats calls.
pub(super) async fn stats(
    server: &str,
    tls: &Tls,
    key: &ApiKey,
    args: &StatsArgs,
) -> anyhow::Result<Report> {
    let channels = connect_all(server, tls, 1).await?;
    let key = key.clone();
    let series = closed_loop(
        "GetStats",
        &channels,
        args.concurrency,
        (args.warmup, args.duration),
        &[],
        move |ch| {
            let key = key.clone();
            async move {
                EventLoggerClient::with_interceptor(ch, key)
                    .get_stats(pb::GetStatsRequest::default())
                    .await
                    .map(drop)
            }
        },
    )
    .await;
    Ok(Report {
        bench: "stats",
        figures: vec![("concurrency", json!(args.concurrency))],
        series: vec![series],
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `bench ingest`'s flags on their own.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        ingest: IngestArgs,
    }

    #[test]
    fn ingest_takes_its_users_in_turn_and_refuses_none() {
        let users = |flags: &[&str]| {
            Flags::try_parse_from(std::iter::once("ingest").chain(flags.iter().copied()))
                .map(|f| f.ingest.users)
                .map_err(|e| e.to_string())
        };
        assert_eq!(users(&[]), Ok(1000));
        assert_eq!(users(&["--users", "3"]), Ok(3));
        for bad in ["0", "100000001", "-1", "many"] {
            let err = users(&[&format!("--users={bad}")]).expect_err(bad);
            assert!(err.contains("--users"), "{bad}: {err}");
        }
        let ids: Vec<String> = (0..7).map(|n| ingest_request(n, 3).user_id).collect();
        assert_eq!(
            ids,
            ["0", "1", "2", "0", "1", "2", "0"].map(|u| format!("bench-user-{u}"))
        );
        assert_eq!(ingest_request(5, 3).description, "benchmark event 5");
    }
}
