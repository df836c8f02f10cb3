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

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use herald::{
    EventStatus,
    pb::{
        self, event_logger_client::EventLoggerClient, notifier_client::NotifierClient,
        subscribe_response::Kind,
    },
};
use herald_client::{ApiKey, Tls};
use herald_runtime::flags::positive_duration;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The benchmarks.
#[derive(Subcommand)]
pub enum Bench {
    /// Closed-loop CreateEvent throughput and latency, against the Health/Check floor.
    Ingest(IngestArgs),
    /// Create N events and measure until every one is PROCESSED.
    E2e(E2eArgs),
    /// Many subscribers of one user; delivery latency of a burst of events.
    Fanout(FanoutArgs),
    /// Closed-loop GetStats throughput and latency (it adds up every
    /// partition's counts).
    Stats(StatsArgs),
}

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
}

/// Flags of `bench e2e`.
#[derive(Args)]
pub struct E2eArgs {
    /// Events to create.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Create at this many events per second; as fast as possible without it.
    #[arg(long)]
    rate: Option<f64>,
    /// CreateEvent calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Users (and subscriptions) the events are spread over.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Give up waiting for notifications after this long.
    #[arg(long, default_value = "300s", value_parser = positive_duration)]
    timeout: Duration,
    /// Create through a `herald_client::Publisher` at its defaults (batched
    /// CreateEvents) instead of one CreateEvent call per event; the create
    /// latency is then not measured.
    #[arg(long)]
    publisher: bool,
}

/// Flags of `bench fanout`.
#[derive(Args)]
pub struct FanoutArgs {
    /// Concurrent Subscribe streams, spread evenly over --users.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Users the streams subscribe to (stream i follows user i mod U).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Events created in one burst for each user.
    #[arg(long, default_value_t = 100)]
    events: u64,
    /// Subscribe streams per HTTP/2 connection (when --connections is not given).
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// HTTP/2 connections the streams share (round-robin); default:
    /// subscribers / streams-per-connection.
    #[arg(long)]
    connections: Option<usize>,
    /// The logger's process id, on this machine: its resident memory is read
    /// (from /proc) before subscribing, with every stream idle, and after the
    /// burst, and reported per stream.
    #[arg(long)]
    logger_pid: Option<u32>,
    /// Give up waiting for messages after this long.
    #[arg(long, default_value = "120s", value_parser = positive_duration)]
    timeout: Duration,
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
        Bench::Ingest(args) => ingest(server, tls, &key, args).await?,
        Bench::E2e(args) => e2e(server, tls, api_key, args).await?,
        Bench::Fanout(args) => fanout(server, tls, &key, args).await?,
        Bench::Stats(args) => stats(server, tls, &key, args).await?,
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One measured series: how many operations, over how long, with what latencies.
struct Series {
    name: String,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Series {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: histogram(),
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

/// Calls `call` from `concurrency` tasks in a closed loop for `warmup` then
/// `duration`, measuring only the second part.
async fn closed_loop<F, Fut>(
    name: &str,
    channels: &[Channel],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
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
    total
}

async fn ingest(
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
        args.warmup,
        args.duration,
        |ch| async {
            HealthClient::new(ch)
                .check(HealthCheckRequest::default())
                .await
                .map(drop)
        },
    )
    .await;
    let counter = Arc::new(AtomicU64::new(0));
    let key = key.clone();
    let ingest = closed_loop(
        "ingest",
        &channels,
        args.concurrency,
        args.warmup,
        args.duration,
        move |ch| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let key = key.clone();
            async move {
                let request = pb::CreateEventRequest {
                    user_id: format!("bench-user-{}", n % 1000),
                    description: format!("benchmark event {n}"),
                    ..Default::default()
                };
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
            (
                "ingest_over_floor",
                json!((ratio * 1000.0).round() / 1000.0),
            ),
        ],
        series: vec![floor, ingest],
    })
}

/// Closed-loop GetStats calls.
async fn stats(server: &str, tls: &Tls, key: &ApiKey, args: &StatsArgs) -> anyhow::Result<Report> {
    let channels = connect_all(server, tls, 1).await?;
    let key = key.clone();
    let series = closed_loop(
        "GetStats",
        &channels,
        args.concurrency,
        args.warmup,
        args.duration,
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

async fn e2e(server: &str, tls: &Tls, api_key: &str, args: &E2eArgs) -> anyhow::Result<Report> {
    let key = &ApiKey::bearer(api_key)?;
    let tag = run_tag();
    let channels = connect_all(server, tls, args.connections).await?;
    let users: Vec<String> = (0..args.users.max(1))
        .map(|i| format!("{tag}-user-{i}"))
        .collect();

    // Subscriptions first: Subscribe returns once the server registered it.
    let seen = Arc::new(Mutex::new((HashSet::new(), histogram(), None::<Instant>)));
    let mut readers = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let mut client =
            NotifierClient::with_interceptor(channels[i % channels.len()].clone(), key.clone());
        let mut stream = client
            .subscribe(pb::SubscribeRequest {
                user_id: user.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let seen = seen.clone();
        readers.spawn(async move {
            while let Some(message) = stream.message().await? {
                let Some(Kind::Event(event)) = message.kind else {
                    continue;
                };
                if event.status != EventStatus::Processed.to_pb() as i32 {
                    continue;
                }
                let latency = since(event.created_at);
                let mut seen = seen.lock().expect("lock");
                if seen.0.insert(event.event_id) {
                    record(&mut seen.1, latency);
                    seen.2 = Some(Instant::now());
                }
            }
            Ok::<_, tonic::Status>(())
        });
    }

    let bar = spinner("processed", Some(args.events));
    let start = Instant::now();
    let mut creators = JoinSet::new();
    if args.publisher {
        let client = herald_client::Client::connect_with(server, tls)
            .await?
            .with_api_key(api_key)?;
        creators.spawn(publish_all(client, users, args.events, args.rate, start));
    } else {
        create_each(&mut creators, &channels, key, users, args, start);
    }
    let mut create = Series::new(if args.publisher {
        "create (Publisher)"
    } else {
        "create (CreateEvent)"
    });
    let deadline = start + args.timeout;
    let mut creators_done = false;
    loop {
        let done = seen.lock().expect("lock").0.len() as u64;
        bar.set_position(done);
        if !creators_done && creators.is_empty() {
            creators_done = true;
            create.elapsed = start.elapsed();
        }
        while let Some(part) = creators.try_join_next() {
            create.merge(part.expect("creator panicked"));
        }
        if creators_done && done >= create.ops {
            break;
        }
        if Instant::now() > deadline {
            bar.abandon();
            break;
        }
        if let Some(ended) = readers.try_join_next() {
            bar.abandon();
            let why = match ended {
                Ok(Ok(())) => "stream ended".to_owned(),
                Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                Err(e) => e.to_string(),
            };
            bail!("a subscription ended early: {why}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    readers.abort_all();
    let (ids, latency, last) = std::mem::replace(
        &mut *seen.lock().expect("lock"),
        (HashSet::new(), histogram(), None),
    );
    let mut processed = Series::new("create to notification");
    processed.ops = ids.len() as u64;
    processed.errors = create.ops.saturating_sub(processed.ops);
    processed.elapsed = last.map_or(start.elapsed(), |t| t.duration_since(start));
    processed.latency_us = latency;
    Ok(Report {
        bench: "e2e",
        figures: vec![
            ("events", json!(args.events)),
            ("rate", json!(args.rate)),
            (
                "via",
                json!(if args.publisher { "publisher" } else { "call" }),
            ),
            ("created", json!(create.ops)),
            ("processed", json!(processed.ops)),
            ("missing", json!(create.ops - processed.ops.min(create.ops))),
            ("sustained_events_per_sec", json!(processed.rate().round())),
        ],
        series: vec![create, processed],
    })
}

/// The e2e run's events `k` of `n`: user and description.
fn bench_event(users: &[String], k: u64) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        user_id: users[k as usize % users.len()].clone(),
        description: format!("benchmark event {k}"),
        ..Default::default()
    }
}

/// When event `k` is due at `rate` events a second from `start` (at once without a rate).
async fn pace(start: Instant, rate: Option<f64>, k: u64) {
    if let Some(rate) = rate {
        tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / rate)).into()).await;
    }
}

/// Creates the e2e run's events with one CreateEvent call each, from
/// `--concurrency` tasks on `creators`, timing each call.
fn create_each(
    creators: &mut JoinSet<Series>,
    channels: &[Channel],
    key: &ApiKey,
    users: Vec<String>,
    args: &E2eArgs,
    start: Instant,
) {
    let next = Arc::new(AtomicU64::new(0));
    for i in 0..args.concurrency.max(1) {
        let mut client =
            EventLoggerClient::with_interceptor(channels[i % channels.len()].clone(), key.clone());
        let (next, users, rate, n) = (next.clone(), users.clone(), args.rate, args.events);
        creators.spawn(async move {
            let mut series = Series::new("create");
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                pace(start, rate, k).await;
                let t0 = Instant::now();
                match client.create_event(bench_event(&users, k)).await {
                    Ok(_) => {
                        series.ops += 1;
                        record(&mut series.latency_us, t0.elapsed());
                    }
                    Err(_) => series.errors += 1,
                }
            }
            series
        });
    }
}

/// Publishes the e2e run's `n` events through a [`herald_client::Publisher`]
/// (waiting for room rather than dropping), then flushes it.
async fn publish_all(
    client: herald_client::Client,
    users: Vec<String>,
    n: u64,
    rate: Option<f64>,
    start: Instant,
) -> Series {
    use herald_client::{EventInput, Publisher, PublisherOptions, WhenFull};
    let publisher = Publisher::new(
        client,
        PublisherOptions {
            when_full: WhenFull::Wait(Duration::from_secs(3600)),
            ..PublisherOptions::default()
        },
    );
    for k in 0..n {
        pace(start, rate, k).await;
        let event = bench_event(&users, k);
        publisher
            .publish(EventInput {
                user_id: event.user_id,
                description: event.description,
                ..EventInput::default()
            })
            .await;
    }
    let stats = publisher.close(Duration::from_secs(60)).await;
    let mut series = Series::new("create");
    series.ops = stats.published;
    series.errors = stats.refused + stats.dropped;
    series
}

async fn fanout(
    server: &str,
    tls: &Tls,
    key: &ApiKey,
    args: &FanoutArgs,
) -> anyhow::Result<Report> {
    let tag = run_tag();
    let users: Vec<String> = (0..args.users)
        .map(|u| format!("{tag}-fanout-{u}"))
        .collect();
    let connections = args
        .connections
        .unwrap_or_else(|| {
            args.subscribers
                .div_ceil(args.streams_per_connection.max(1))
        })
        .max(1);
    let channels = connect_all(server, tls, connections).await?;
    let rss_before = resident_bytes(args.logger_pid)?;
    let bar = spinner("subscribing", Some(args.subscribers as u64));
    let arrived = Arc::new(AtomicU64::new(0));
    // Subscribed a few at a time; each reader counts what reaches it.
    let opened = futures_util::stream::iter(0..args.subscribers)
        .map(|i| {
            let mut client =
                NotifierClient::with_interceptor(channels[i % channels.len()].clone(), key.clone());
            let user_id = users[i % users.len()].clone();
            async move {
                client
                    .subscribe(pb::SubscribeRequest {
                        user_id,
                        ..Default::default()
                    })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .buffer_unordered(64);
    futures_util::pin_mut!(opened);
    let mut readers = JoinSet::new();
    while let Some(stream) = opened.next().await {
        let mut stream = stream.context("subscribe")?;
        bar.inc(1);
        let (arrived, expected) = (arrived.clone(), args.events);
        readers.spawn(async move {
            let mut latency = histogram();
            let mut got = 0;
            while got < expected {
                match stream.message().await {
                    Ok(Some(message)) => {
                        // Heartbeats and other notices are not deliveries.
                        let Some(Kind::Event(event)) = message.kind else {
                            continue;
                        };
                        record(&mut latency, since(event.updated_at));
                        got += 1;
                        arrived.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            latency
        });
    }
    bar.finish_and_clear();
    // Let the server settle every stream before measuring them idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = resident_bytes(args.logger_pid)?;
    let cpu_before = (
        cpu_seconds(args.logger_pid),
        cpu_seconds(Some(std::process::id())),
    );

    let expected = args.subscribers as u64 * args.events;
    let bar = spinner("delivered", Some(expected));
    let start = Instant::now();
    let mut logger = EventLoggerClient::with_interceptor(channels[0].clone(), key.clone());
    // How many streams follow each user: each event of a user reaches them all.
    let followers = |u: usize| (args.subscribers + users.len() - 1 - u) / users.len();
    let mut wanted = 0;
    for k in 0..args.events {
        for (u, user_id) in users.iter().enumerate() {
            let request = pb::CreateEventRequest {
                user_id: user_id.clone(),
                description: format!("fanout event {k}"),
                ..Default::default()
            };
            if logger.create_event(request).await.is_ok() {
                wanted += followers(u) as u64;
            }
        }
    }
    let deadline = start + args.timeout;
    while arrived.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
        bar.set_position(arrived.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let rss_after = resident_bytes(args.logger_pid)?;
    let cpu_after = (
        cpu_seconds(args.logger_pid),
        cpu_seconds(Some(std::process::id())),
    );
    if arrived.load(Ordering::Relaxed) < wanted {
        readers.abort_all();
    }
    let mut delivery = Series::new("processed to subscriber");
    while let Some(part) = readers.join_next().await {
        if let Ok(h) = part {
            delivery.latency_us.add(&h).expect("same bounds");
        }
    }
    delivery.ops = arrived.load(Ordering::Relaxed);
    delivery.errors = expected.saturating_sub(delivery.ops);
    delivery.elapsed = elapsed;
    let mut figures = vec![
        ("subscribers", json!(args.subscribers)),
        ("users", json!(args.users)),
        ("connections", json!(connections)),
        ("events_per_user", json!(args.events)),
        ("expected_messages", json!(expected)),
        ("arrived_messages", json!(delivery.ops)),
        ("all_arrived", json!(delivery.ops == expected)),
    ];
    // CPU time of the burst (from the first create to the last arrival),
    // per message delivered: the logger's and this client's own.
    let per_message = |before: Option<f64>, after: Option<f64>| {
        before
            .zip(after)
            .map(|(b, a)| (a - b) * 1e6 / delivery.ops.max(1) as f64)
    };
    if let Some(us) = per_message(cpu_before.0, cpu_after.0) {
        figures.push((
            "logger_cpu_us_per_message",
            json!((us * 100.0).round() / 100.0),
        ));
    }
    if let Some(us) = per_message(cpu_before.1, cpu_after.1) {
        figures.push((
            "bench_cpu_us_per_message",
            json!((us * 100.0).round() / 100.0),
        ));
    }
    if let (Some(before), Some(idle), Some(after)) = (rss_before, rss_idle, rss_after) {
        let per_stream = |bytes: u64| bytes.saturating_sub(before) / args.subscribers.max(1) as u64;
        figures.extend([
            ("logger_rss_mb_before", json!(before / 1_000_000)),
            ("logger_rss_mb_idle", json!(idle / 1_000_000)),
            ("logger_rss_mb_after_burst", json!(after / 1_000_000)),
            ("logger_bytes_per_idle_stream", json!(per_stream(idle))),
            (
                "logger_bytes_per_stream_after_burst",
                json!(per_stream(after)),
            ),
        ]);
    }
    Ok(Report {
        bench: "fanout",
        figures,
        series: vec![delivery],
    })
}

/// The CPU time (user and system, in seconds) process `pid` has used, from
/// /proc, if a pid is given and it can be read.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The resident memory of process `pid` (VmRSS in /proc), if one is given.
fn resident_bytes(pid: Option<u32>) -> anyhow::Result<Option<u64>> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("--logger-pid {pid}: cannot read {path}"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(Some(kb * 1024))
}
