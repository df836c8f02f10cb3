//! `bench fanout`: Subscribe streams spread over users, a burst of events
//! for each user, the delay from PROCESSED to arrival at each stream, and
//! (given the logger's pid) the logger's memory per stream and CPU per
//! message, read from /proc. With `--sse`, the streams are Server-Sent
//! Events from the end users' listener instead (one HTTP/1.1 connection
//! each, as browsers hold them), measured the same way.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use herald::pb::{
    self, event_logger_client::EventLoggerClient, notifier_client::NotifierClient,
    subscribe_response::Kind,
};
use herald_client::{ApiKey, Tls};
use herald_runtime::flags::positive_duration;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{
    Report, Series, connect_all, cpu::cpu_seconds, histogram, record, run_tag, since, spinner,
};

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
    /// Follow over Server-Sent Events from this end users' listener
    /// (`http://host:port` of the logger's --web-listen; one connection per
    /// stream, the API key in `authorization`) instead of Subscribe.
    #[arg(long, value_name = "URL", value_parser = parse_sse_url)]
    sse: Option<String>,
}

/// Reads `--sse`: `http://host:port`, as the address to connect to.
fn parse_sse_url(text: &str) -> Result<String, String> {
    let rest = text.trim().trim_end_matches('/');
    let Some(authority) = rest.strip_prefix("http://") else {
        return Err(format!(
            "{text}: give the plain-HTTP address of --web-listen (http://host:port)"
        ));
    };
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("{text}: expected http://host:port"));
    }
    Ok(authority.to_owned())
}

/// One subscriber's stream: Subscribe over gRPC, or Server-Sent Events.
enum Follower {
    Grpc(tonic::Streaming<pb::SubscribeResponse>),
    Sse {
        body: hyper::body::Incoming,
        buffer: Vec<u8>,
    },
}

impl Follower {
    /// A Subscribe stream of `user_id`'s notifications on `channel`.
    async fn grpc(channel: Channel, key: &ApiKey, user_id: String) -> anyhow::Result<Self> {
        let mut client = NotifierClient::with_interceptor(channel, key.clone());
        let stream = client
            .subscribe(pb::SubscribeRequest {
                user_id,
                ..Default::default()
            })
            .await
            .context("subscribe")?;
        Ok(Self::Grpc(stream.into_inner()))
    }

    /// An event stream of `user_id`'s notifications from the end users'
    /// listener at `authority`, on a connection of its own.
    async fn sse(authority: &str, api_key: &str, user_id: &str) -> anyhow::Result<Self> {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("--sse: cannot connect to {authority}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get(format!("/v1/notifications?user_id={user_id}"))
            .header(http::header::HOST, authority)
            .header(http::header::AUTHORIZATION, format!("Bearer {api_key}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::bail!("--sse: {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        Ok(Self::Sse {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// When the next notification's event was updated (reached PROCESSED);
    /// `None` once the stream has ended.
    async fn next_update(&mut self) -> Option<Option<prost_types::Timestamp>> {
        match self {
            Self::Grpc(stream) => loop {
                let message = stream.message().await.ok()??;
                // Heartbeats and other notices are not deliveries.
                if let Some(Kind::Event(event)) = message.kind {
                    return Some(event.updated_at);
                }
            },
            Self::Sse { body, buffer } => loop {
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    if let Some(updated) = notification_time(&block) {
                        return Some(updated);
                    }
                }
                use http_body_util::BodyExt;
                let frame = body.frame().await?.ok()?;
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            },
        }
    }
}

/// The `updated_at` of a notification event (a plain message: no `event:`
/// line), if `block` is one.
fn notification_time(block: &[u8]) -> Option<Option<prost_types::Timestamp>> {
    let text = std::str::from_utf8(block).ok()?;
    if text.lines().any(|line| line.starts_with("event:")) {
        return None;
    }
    let data = text.lines().find_map(|line| line.strip_prefix("data: "))?;
    let event: serde_json::Value = serde_json::from_str(data).ok()?;
    let updated = event["updated_at"]
        .as_str()
        .and_then(|t| herald::domain::parse_rfc3339(t).ok())
        .map(prost_types::Timestamp::from);
    Some(updated)
}

pub(super) async fn fanout(
    server: &str,
    tls: &Tls,
    (key, api_key): (&ApiKey, &str),
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
            let channel = channels[i % channels.len()].clone();
            let user_id = users[i % users.len()].clone();
            async move {
                match &args.sse {
                    Some(authority) => Follower::sse(authority, api_key, &user_id).await,
                    None => Follower::grpc(channel, key, user_id).await,
                }
            }
        })
        .buffer_unordered(64);
    futures_util::pin_mut!(opened);
    let mut readers = JoinSet::new();
    while let Some(follower) = opened.next().await {
        let mut follower = follower?;
        bar.inc(1);
        let (arrived, expected) = (arrived.clone(), args.events);
        readers.spawn(async move {
            let mut latency = histogram();
            let mut got = 0;
            while got < expected {
                let Some(updated_at) = follower.next_update().await else {
                    break;
                };
                record(&mut latency, since(updated_at));
                got += 1;
                arrived.fetch_add(1, Ordering::Relaxed);
            }
            latency
        });
    }
    bar.finish_and_clear();
    // Let the server settle every stream before measuring them idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = resident_bytes(args.logger_pid)?;
    let cpu_before = (
        args.logger_pid.and_then(cpu_seconds),
        cpu_seconds(std::process::id()),
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
        args.logger_pid.and_then(cpu_seconds),
        cpu_seconds(std::process::id()),
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
        (
            "transport",
            json!(if args.sse.is_some() { "sse" } else { "grpc" }),
        ),
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
