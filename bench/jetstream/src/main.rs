//! `jetstream-bench`: Herald's own job done on NATS JetStream, the system
//! users would otherwise pick to durably accept an event, hand it to a
//! worker and record that it was handled. `scripts/compare_jetstream.sh`
//! runs it against Herald in alternating rounds.
//!
//! # Layout
//! - `setup`: the streams (file storage) and the workers' durable pull
//!   consumer.
//! - `produce`: N events published with 64 in flight, each awaiting its
//!   durable accept (the publish acknowledgement), as Herald's benchmark
//!   client awaits each CreateEvent.
//! - `consume`: for each event, the notification line on stdout, the status
//!   recorded durably (published to the status stream, its acknowledgement
//!   awaited), then the event acknowledged: what a Herald processor does.
//! - `stored`: the bytes both streams hold, for bytes stored per event.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::PullConsumer, stream::StorageType};
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde_json::json;

/// The stream of events, its subjects, and the workers' consumer.
const EVENTS: &str = "EVENTS";
/// The stream of recorded statuses.
const STATUSES: &str = "STATUSES";
/// The workers' durable consumer of EVENTS.
const WORKERS: &str = "workers";

/// Herald's job on NATS JetStream.
#[derive(Parser)]
#[command(name = "jetstream-bench", version, about)]
struct Args {
    /// The NATS server (with JetStream).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the streams (file storage) and the workers' consumer.
    Setup,
    /// Publishes events, awaiting each one's durable accept.
    Produce {
        /// Events to publish.
        #[arg(long)]
        events: u64,
        /// Publishes awaiting their accept at once.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
    },
    /// Handles events: the notification line, the status recorded durably,
    /// then the acknowledgement; stops after this many.
    Consume {
        /// Events to handle before stopping.
        #[arg(long)]
        events: u64,
        /// Status records awaiting their accept at once.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
    },
    /// Prints the bytes and messages both streams hold, as JSON.
    Stored,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.url)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let js = jetstream::new(client);
    match args.command {
        Command::Setup => setup(&js).await,
        Command::Produce { events, in_flight } => produce(&js, events, in_flight).await,
        Command::Consume { events, in_flight } => consume(&js, events, in_flight).await,
        Command::Stored => stored(&js).await,
    }
}

async fn setup(js: &jetstream::Context) -> anyhow::Result<()> {
    for (name, subjects) in [(EVENTS, "events.>"), (STATUSES, "status.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("create stream {name}"))?;
    }
    js.get_stream(EVENTS)
        .await?
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(WORKERS.into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("create the workers' consumer")?;
    Ok(())
}

/// One event as the producer sends it: what a CreateEvent carries.
fn event(i: u64) -> (String, Vec<u8>) {
    let user = format!("user-{}", i % 1_000);
    let body = json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "user_id": user,
        "description": format!("bench event {i}"),
    });
    (format!("events.{user}"), body.to_string().into_bytes())
}

async fn produce(js: &jetstream::Context, events: u64, in_flight: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut accepted = 0u64;
    for i in 0..events {
        if pending.len() >= in_flight.max(1) {
            pending.next().await.expect("one in flight")?;
            accepted += 1;
        }
        let (subject, body) = event(i);
        let ack = js.publish(subject, body.into()).await?;
        pending.push(ack.into_future());
    }
    while let Some(ack) = pending.next().await {
        ack?;
        accepted += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"accepted": accepted, "seconds": seconds, "per_second": accepted as f64 / seconds})
    );
    Ok(())
}

async fn consume(js: &jetstream::Context, events: u64, in_flight: usize) -> anyhow::Result<()> {
    let consumer: PullConsumer = js
        .get_stream(EVENTS)
        .await?
        .get_consumer(WORKERS)
        .await
        .map_err(|e| anyhow::anyhow!("the workers' consumer: {e}"))?;
    let mut messages = consumer.messages().await?;
    let mut out = std::io::stdout().lock();
    let mut recording = FuturesUnordered::new();
    let (mut handled, mut first) = (0u64, None);
    while handled < events {
        tokio::select! {
            Some(done) = recording.next(), if !recording.is_empty() => {
                let (ack, message): (Result<_, _>, jetstream::Message) = done;
                ack.context("record the status")?;
                message.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                handled += 1;
            }
            next = messages.next(), if recording.len() < in_flight.max(1) => {
                let message = next.context("the consumer's messages ended")??;
                first.get_or_insert_with(Instant::now);
                let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
                let id = event["event_id"].as_str().unwrap_or_default().to_owned();
                writeln!(
                    out,
                    "Event {id} has been sent to {}: {}",
                    event["user_id"].as_str().unwrap_or_default(),
                    event["description"].as_str().unwrap_or_default()
                )?;
                let ack = js.publish(format!("status.{id}"), "PROCESSED".into()).await?;
                recording.push(async move { (ack.await, message) });
            }
        }
    }
    let seconds = first.map_or(Duration::ZERO, |t| t.elapsed()).as_secs_f64();
    eprintln!(
        "{}",
        json!({"handled": handled, "seconds": seconds, "per_second": handled as f64 / seconds.max(1e-9)})
    );
    Ok(())
}

async fn stored(js: &jetstream::Context) -> anyhow::Result<()> {
    let mut bytes = 0;
    let mut messages = 0;
    for name in [EVENTS, STATUSES] {
        let mut stream = js.get_stream(name).await?;
        let state = &stream.info().await?.state;
        bytes += state.bytes;
        messages += state.messages;
    }
    println!("{}", json!({"bytes": bytes, "messages": messages}));
    Ok(())
}
