//! `bench e2e`: create N events (one call each, or through the Publisher)
//! and wait, through Notifier subscriptions, until every one is PROCESSED.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Args;
use herald::{
    EventStatus,
    pb::{
        self, event_logger_client::EventLoggerClient, notifier_client::NotifierClient,
        subscribe_response::Kind,
    },
};
use herald_client::{ApiKey, Tls};
use herald_runtime::flags::positive_duration;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{Report, Series, connect_all, histogram, record, run_tag, since, spinner};

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

pub(super) async fn e2e(
    server: &str,
    tls: &Tls,
    api_key: &str,
    args: &E2eArgs,
) -> anyhow::Result<Report> {
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
