//! `herald`: Herald's command-line tool.

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use herald::{
    Event, EventStatus,
    auth::{Scope, generate_key, hash_key},
    domain::{EventInput, Payload, rfc3339},
    random::parse_ratio,
};
use herald_cli::{
    bench,
    simulate::{SimulateOptions, simulate},
};
use herald_client::{
    Client, DeadLetter, Error, Health, ListEvents, Message, Notification, Redrive, RetryPolicy,
    SubscribeOptions,
};
use herald_runtime::flags::TlsArgs;
use uuid::Uuid;

/// Herald's command-line tool: create, inspect and follow events.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The logger to talk to.
    #[arg(
        long,
        global = true,
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// API key, sent as authorization: Bearer <key>; none in open mode.
    #[arg(
        long,
        global = true,
        env = "HERALD_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    api_key: String,
    /// Print JSON (one object per line) instead of readable text.
    #[arg(long, global = true)]
    json: bool,
    /// TLS: the CA to trust and the client certificate.
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an event; prints it as stored (PENDING).
    Create {
        /// The user the event concerns.
        #[arg(long)]
        user_id: String,
        /// Text of the notification.
        #[arg(long)]
        description: String,
        /// Group of the event, e.g. "page interaction".
        #[arg(long, default_value = "")]
        category: String,
        /// Kind of event, e.g. "pageview"; a registered type's payload is checked.
        #[arg(long = "type", default_value = "")]
        event_type: String,
        /// Session the event belongs to.
        #[arg(long, default_value = "")]
        session_id: String,
        /// Free-form data: a JSON object.
        #[arg(long, value_parser = parse_payload)]
        payload: Option<Payload>,
        /// When it happened (RFC 3339, e.g. 2026-11-22T10:00:00Z); default now.
        #[arg(long, value_parser = parse_time)]
        occurred_at: Option<SystemTime>,
        /// Idempotency key: repeating the create with it returns the first event.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List events matching filters, oldest first, as a table (or JSON lines).
    List {
        /// Only this user's events.
        #[arg(long, default_value = "")]
        user_id: String,
        /// Only this session's events.
        #[arg(long, default_value = "")]
        session_id: String,
        /// Only this category.
        #[arg(long, default_value = "")]
        category: String,
        /// Only this type.
        #[arg(long = "type", default_value = "")]
        event_type: String,
        /// Only this status: pending, processed, opened or failed.
        #[arg(long, value_parser = parse_status)]
        status: Option<EventStatus>,
        /// Only events that occurred at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        after: Option<SystemTime>,
        /// Only events that occurred before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        before: Option<SystemTime>,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Events per page (at most 1,000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Start at this page token (printed after a page when more follow).
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow every page to the end.
        #[arg(long)]
        all: bool,
    },
    /// Show one event.
    Get {
        /// The event's id (a UUID).
        id: Uuid,
    },
    /// Change an event's status.
    UpdateStatus {
        /// The event's id (a UUID).
        id: Uuid,
        /// The new status: pending, processed, opened or failed.
        #[arg(value_parser = parse_status)]
        status: EventStatus,
    },
    /// Check the logger's health; exits non-zero unless it is SERVING.
    Health {
        /// The service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Make API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the counts of events by status and the logger's own counters.
    Stats,
    /// Inspect and redrive dead letters (events given up after too many
    /// failed deliveries).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Simulate users receiving and opening notifications while the
    /// processors lose deliveries (start them with --sink simulated
    /// --loss-ratio R); reports what the server says happened.
    Simulate(SimulateArgs),
    /// Measure a running Herald: ingest, end-to-end and fan-out benchmarks.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Print each notification (or other change) as it arrives, until
    /// interrupted; reconnects and resumes by itself if the connection drops.
    Subscribe {
        /// Whose notifications to follow; omit for every user's.
        #[arg(long, default_value = "")]
        user_id: String,
        /// Only this category (repeat for any of several).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Only this type (repeat for any of several).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only this session.
        #[arg(long, default_value = "")]
        session_id: String,
        /// Changes into this status (repeat for several; default: processed,
        /// i.e. notifications as they are sent).
        #[arg(long = "status", value_parser = parse_status)]
        statuses: Vec<EventStatus>,
        /// First print what was logged after this cursor (from an earlier
        /// run's output), then follow live.
        #[arg(long, default_value = "")]
        after: String,
        /// Mark each notification shown as OPENED (as the recipient's app would).
        #[arg(long)]
        mark_opened: bool,
    },
}

/// Flags of `herald simulate`.
#[derive(clap::Args)]
struct SimulateArgs {
    /// Simulated users, each with a live subscription.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Events per user.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// The loss ratio the processors were started with (for the report).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    loss_ratio: f64,
    /// The share of notifications each user marks OPENED.
    #[arg(long, default_value_t = 0.3, value_parser = parse_ratio)]
    open_ratio: f64,
    /// The processors' --max-deliveries (for the report).
    #[arg(long, default_value_t = 5)]
    max_deliveries: u32,
    /// Seed of the users' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Give up waiting for the events to settle after this long.
    #[arg(long, default_value = "5m", value_parser = herald_runtime::flags::positive_duration)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List dead letters, oldest first: dead letter id, event id, user,
    /// deliveries and reason.
    List {
        /// Most dead letters per page.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Put FAILED events back in the queue and remove their dead letters.
    Redrive {
        /// Every dead letter's event.
        #[arg(
            long,
            conflicts_with = "event_ids",
            required_unless_present = "event_ids"
        )]
        all: bool,
        /// The events to put back.
        event_ids: Vec<Uuid>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh API key (once) and the entry to add to the logger's keys file.
    New {
        /// The client the key is for; it becomes the source of its events.
        #[arg(long)]
        client_id: String,
        /// Comma-separated scopes: events:write, events:read, events:process,
        /// notifications:subscribe, admin.
        #[arg(long, value_delimiter = ',', value_parser = parse_scope, required = true)]
        scopes: Vec<Scope>,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim()).ok_or_else(|| {
        format!(
            "unknown scope {s:?}: use {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        )
    })
}

/// Prints a new key and its keys-file entry; the key is not stored anywhere.
/// Prints a fresh key and its keys-file entry: two labelled lines, or with
/// `json` one object `{"key": ..., "entry": {...}}`.
fn new_key(client_id: &str, scopes: &[Scope], json: bool) -> anyhow::Result<()> {
    let key = generate_key().map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let entry = serde_json::json!({
        "client_id": client_id,
        "key_sha256": hash_key(&key),
        "scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    });
    if json {
        println!("{}", serde_json::json!({ "key": key, "entry": entry }));
    } else {
        println!("key:   {key}");
        println!("entry: {entry}");
    }
    eprintln!(
        "the key is shown once: give it to the client; add the entry to the keys file's \"keys\" list"
    );
    Ok(())
}

fn parse_payload(s: &str) -> Result<Payload, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("the payload must be a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    let t: prost_types::Timestamp = s
        .parse()
        .map_err(|_| format!("not an RFC 3339 time: {s:?} (e.g. 2026-11-22T10:00:00Z)"))?;
    SystemTime::try_from(t).map_err(|_| format!("time out of range: {s:?}"))
}

fn parse_status(s: &str) -> Result<EventStatus, String> {
    EventStatus::parse(s)
        .ok_or_else(|| format!("unknown status {s:?}: use pending, processed, opened or failed"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings (a subscription resuming after a dropped connection) go to
    // stderr; RUST_LOG=debug shows more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::Keys(KeysCommand::New { client_id, scopes }) = &cli.command {
        return match new_key(client_id, scopes, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Bench(which) = &cli.command {
        let run = async {
            let tls = cli.tls.tls()?;
            bench::run(&cli.server, &cli.api_key, &tls, which, cli.json).await
        };
        return match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for v in err.violations() {
                eprintln!("  {}: {}", v.field, v.description);
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Error> {
    let client = Client::connect_with(cli.server.clone(), &cli.tls.tls()?)
        .await?
        .with_api_key(&cli.api_key)?;
    match &cli.command {
        Command::Create {
            user_id,
            description,
            category,
            event_type,
            session_id,
            payload,
            occurred_at,
            request_id,
        } => {
            let input = EventInput {
                user_id: user_id.clone(),
                description: description.clone(),
                category: category.clone(),
                event_type: event_type.clone(),
                session_id: session_id.clone(),
                payload: payload.clone(),
                occurred_at: *occurred_at,
                request_id: request_id.clone(),
            };
            print_event(&client.create(input).await?, cli.json);
        }
        Command::List {
            user_id,
            session_id,
            category,
            event_type,
            status,
            after,
            before,
            desc,
            page_size,
            page_token,
            all,
        } => {
            let mut query = ListEvents::new()
                .user(user_id)
                .session(session_id)
                .category(category)
                .event_type(event_type)
                .page_size(*page_size)
                .page_token(page_token);
            if let Some(status) = status {
                query = query.status(*status);
            }
            if let Some(after) = after {
                query = query.since(*after);
            }
            if let Some(before) = before {
                query = query.until(*before);
            }
            if *desc {
                query = query.newest_first();
            }
            // The header comes once the first page is in: an error prints alone.
            let page = client.list_events(query.clone()).await?;
            if !cli.json {
                println!(
                    "{:<36}  {:<27}  {:<9}  {:<16}  {:<16}  DESCRIPTION",
                    "EVENT_ID", "OCCURRED_AT", "STATUS", "USER_ID", "TYPE"
                );
            }
            let print = |e: &Event| {
                if cli.json {
                    println!("{}", event_json(e));
                } else {
                    println!(
                        "{:<36}  {:<27}  {:<9}  {:<16}  {:<16}  {}",
                        e.id,
                        rfc3339(e.occurred_at),
                        e.status.as_str(),
                        e.user_id,
                        e.event_type,
                        e.description
                    );
                }
            };
            page.items.iter().for_each(print);
            match page.next {
                Some(next) if *all => {
                    let mut rest = std::pin::pin!(client.events(query.page_token(next)));
                    while let Some(event) = rest.next().await {
                        print(&event?);
                    }
                }
                Some(next) => eprintln!("more: --page-token {next}"),
                None => {}
            }
        }
        Command::Get { id } => print_event(&client.get_event(*id).await?, cli.json),
        Command::UpdateStatus { id, status } => {
            print_event(&client.update_status(*id, *status).await?, cli.json);
        }
        Command::Health { service } => {
            let status = client.health(service).await?;
            if cli.json {
                println!("{}", serde_json::json!({ "status": status.as_str() }));
            } else {
                println!("{status}");
            }
            if status != Health::Serving {
                return Err(Error::Rpc {
                    code: tonic::Code::Unavailable,
                    message: format!("logger is {status}"),
                    violations: Vec::new(),
                    retry_after: None,
                });
            }
        }
        Command::Bench(_) | Command::Keys(_) => unreachable!("handled in main"),
        Command::DeadLetters(DeadLettersCommand::List { page_size, all }) => {
            let print = |dead: &DeadLetter| {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "dead_letter_id": dead.id,
                            "event_id": dead.event.id.to_string(),
                            "user_id": dead.event.user_id,
                            "deliveries": dead.deliveries,
                            "reason": dead.reason,
                        })
                    );
                } else {
                    println!(
                        "{}  {}  {}  {}  {}",
                        dead.id, dead.event.id, dead.event.user_id, dead.deliveries, dead.reason
                    );
                }
            };
            if *all {
                let mut dead = std::pin::pin!(client.dead_letters(*page_size));
                while let Some(letter) = dead.next().await {
                    print(&letter?);
                }
            } else {
                client
                    .list_dead_letters(*page_size, "")
                    .await?
                    .items
                    .iter()
                    .for_each(print);
            }
        }
        Command::DeadLetters(DeadLettersCommand::Redrive { all, event_ids }) => {
            let which = if *all {
                Redrive::All
            } else {
                Redrive::Ids(event_ids.clone())
            };
            let mut failed = None;
            for result in client.redrive(which).await? {
                match result {
                    Ok(event) => print_event(&event, cli.json),
                    Err(err) => {
                        eprintln!("error: {err}");
                        failed = Some(err);
                    }
                }
            }
            if let Some(err) = failed {
                return Err(err);
            }
        }
        Command::Stats => {
            let stats = client.stats().await?;
            let started = stats.started_at.map(rfc3339).unwrap_or_default();
            let uptime = stats.uptime.as_secs();
            let fields: [(&str, serde_json::Value); 12] = [
                ("total_events", stats.total_events.into()),
                ("pending_events", stats.pending_events.into()),
                ("processed_events", stats.processed_events.into()),
                ("opened_events", stats.opened_events.into()),
                ("failed_events", stats.failed_events.into()),
                ("events_created", stats.events_created.into()),
                ("status_updates", stats.status_updates.into()),
                ("events_published", stats.events_published.into()),
                ("publish_failures", stats.publish_failures.into()),
                ("active_subscribers", stats.active_subscribers.into()),
                ("started_at", started.into()),
                ("uptime_secs", uptime.into()),
            ];
            if cli.json {
                let object: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                println!("{}", serde_json::Value::Object(object));
            } else {
                for (name, value) in fields {
                    match value {
                        serde_json::Value::String(text) => println!("{name:<19} {text}"),
                        number => println!("{name:<19} {number}"),
                    }
                }
            }
        }
        Command::Simulate(args) => {
            let options = SimulateOptions {
                users: args.users,
                messages: args.messages,
                loss_ratio: args.loss_ratio,
                open_ratio: args.open_ratio,
                max_deliveries: args.max_deliveries,
                seed: args.seed,
                timeout: args.timeout,
            };
            let bar = indicatif::ProgressBar::new((args.users * args.messages) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} settled {pos}/{len} [{bar:40}] {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let progress = {
                let bar = bar.clone();
                Arc::new(move |settled: u64, created: u64| {
                    bar.set_length(created.max(1));
                    bar.set_position(settled);
                })
            };
            let report = simulate(&client, &options, progress).await;
            bar.finish_and_clear();
            let report = report?;
            if cli.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
        }
        Command::Subscribe {
            user_id,
            categories,
            types,
            session_id,
            statuses,
            after,
            mark_opened,
        } => {
            let options = SubscribeOptions {
                user_id: user_id.clone(),
                categories: categories.clone(),
                types: types.clone(),
                session_id: session_id.clone(),
                statuses: statuses.clone(),
                after_cursor: after.clone(),
            };
            // Keep following through outages, as a terminal session would.
            let follow = RetryPolicy {
                retries: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            };
            let mut stream = client
                .clone()
                .with_resubscribe(follow)
                .subscribe_with(options)
                .await?;
            loop {
                let message = tokio::select! {
                    item = stream.next() => match item {
                        Some(item) => item?,
                        None => return Ok(()),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                match message {
                    Message::Event(n) => {
                        show_notification(&n, !statuses.is_empty(), cli.json);
                        if *mark_opened && n.event.status == EventStatus::Processed {
                            client
                                .update_status(n.event.id, EventStatus::Opened)
                                .await?;
                        }
                    }
                    Message::HistoryGap {
                        requested_cursor,
                        oldest_cursor,
                        reason,
                    } => eprintln!(
                        "warning: history after {requested_cursor} is incomplete ({reason}); \
                         continuing after {oldest_cursor}"
                    ),
                    Message::Heartbeat { .. } => {}
                }
            }
        }
    }
    Ok(())
}

/// One line per change: JSON with its cursor, or time, id, (status,) user and text.
fn show_notification(n: &Notification, with_status: bool, json: bool) {
    let e = &n.event;
    if json {
        let mut value = event_json(e);
        value["cursor"] = n.cursor.clone().into();
        println!("{value}");
    } else if with_status {
        println!(
            "{}  {}  {:<9}  {}: {}",
            rfc3339(e.updated_at),
            e.id,
            e.status.as_str(),
            e.user_id,
            e.description
        );
    } else {
        println!(
            "{}  {}  {}: {}",
            rfc3339(e.updated_at),
            e.id,
            e.user_id,
            e.description
        );
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "event_id": e.id.to_string(),
        "user_id": e.user_id,
        "description": e.description,
        "status": e.status.as_str(),
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
        "category": e.category,
        "type": e.event_type,
        "session_id": e.session_id,
        "payload": e.payload,
        "occurred_at": rfc3339(e.occurred_at),
        "request_id": e.request_id,
        "source": e.source,
    })
}

fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", event_json(e));
    } else {
        println!("event_id:    {}", e.id);
        println!("user_id:     {}", e.user_id);
        println!("description: {}", e.description);
        println!("status:      {}", e.status);
        println!("created_at:  {}", rfc3339(e.created_at));
        println!("updated_at:  {}", rfc3339(e.updated_at));
        if e.occurred_at != e.created_at {
            println!("occurred_at: {}", rfc3339(e.occurred_at));
        }
        let optional = [
            ("category:   ", &e.category),
            ("type:       ", &e.event_type),
            ("session_id: ", &e.session_id),
            ("request_id: ", &e.request_id),
            ("source:     ", &e.source),
        ];
        for (label, value) in optional {
            if !value.is_empty() {
                println!("{label} {value}");
            }
        }
        if let Some(payload) = &e.payload {
            println!(
                "payload:     {}",
                serde_json::Value::Object(payload.clone())
            );
        }
    }
}
