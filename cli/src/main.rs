//! `herald`: Herald's command-line tool. Each subcommand lives in a module
//! of its own under `commands/`; `bench` and the simulator's engine are in
//! the `herald-cli` library.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{
    admin, attempts, dead_letters, events, inbox, keys, recipients, simulate, subscribe, tokens,
};
use herald_cli::bench;
use herald_client::{Client, Error};
use herald_runtime::flags::TlsArgs;

/// Herald's command-line tool: create, inspect and follow events.
#[derive(Parser)]
#[command(
    version,
    about = "Talk to a Herald logger: create events, find them, follow notifications as they \
             are sent, and operate it (stats, dead letters, keys, tokens, benchmarks).",
    after_help = "Examples:\n  \
                  herald create --user-id alice --description \"Your order shipped\"\n  \
                  herald subscribe --user-id alice\n  \
                  herald list --user-id alice --all\n  \
                  herald --server https://herald.example:50051 --api-key hk_... stats\n\n\
                  Global options go before or after the command; `herald COMMAND --help` \
                  tells more."
)]
struct Cli {
    /// The logger to talk to.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_parser = herald_cli::advice::parse_server
    )]
    server: String,
    /// API key, sent as authorization: Bearer <key>; none in open mode.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "HERALD_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    api_key: String,
    /// Print JSON (one object per line) instead of readable text.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// TLS: the CA to trust and the client certificate.
    #[command(flatten, next_help_heading = "Global options")]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an event; prints it as stored (PENDING, or SCHEDULED with
    /// --deliver-at or --deliver-in).
    Create(events::CreateArgs),
    /// Cancel a SCHEDULED event before it is delivered.
    Cancel(events::CancelArgs),
    /// List events matching filters, oldest first, as a table (or JSON lines).
    List(events::ListArgs),
    /// Show one event.
    Get(events::GetArgs),
    /// Change an event's status.
    UpdateStatus(events::UpdateStatusArgs),
    /// List every attempt to send an event through a channel (webhook,
    /// IRC, the notification line), oldest first.
    Attempts(attempts::AttemptsArgs),
    /// Check the logger's health; exits non-zero unless it is SERVING.
    Health(admin::HealthArgs),
    /// Make API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Make end users' tokens (for the logger's --user-token-secret).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Print the counts of events by status and the logger's own counters.
    Stats,
    /// Inspect and redrive dead letters (events given up after too many
    /// failed deliveries).
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Simulate users receiving and opening notifications while the
    /// processors lose deliveries (start them with --sink simulated
    /// --loss-ratio R); reports what the server says happened.
    Simulate(simulate::SimulateArgs),
    /// Measure a running Herald: ingest, end-to-end and fan-out benchmarks.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Print each notification (or other change) as it arrives, until
    /// interrupted; reconnects and resumes by itself if the connection drops.
    Subscribe(subscribe::SubscribeArgs),
    /// A user's inbox: list their notifications, count the unread ones,
    /// mark them read (with an API key, or the user's token as --api-key).
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
    /// Recipients: store, read, erase and import users' contact data, and
    /// set what they opt out of.
    #[command(subcommand)]
    Recipients(recipients::RecipientsCommand),
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
    // Subcommands whose errors are not the server's: one line each.
    let local = match &cli.command {
        Command::Keys(command) => Some(keys::run(command, cli.json)),
        Command::Tokens(command) => Some(tokens::run(command, cli.json)),
        Command::Bench(which) => Some(
            async {
                let tls = cli.tls.tls()?;
                bench::run(&cli.server, &cli.api_key, &tls, which, cli.json).await
            }
            .await,
        ),
        _ => None,
    };
    if let Some(result) = local {
        return herald_runtime::process::exit_with(result);
    }
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The server's message lists the violations too: each is
            // printed once, on a line of its own.
            match err.violations() {
                [] => eprintln!("error: {err}"),
                violations => {
                    eprintln!("error: InvalidArgument:");
                    for v in violations {
                        eprintln!("  {}: {}", v.field, v.description);
                    }
                }
            }
            if let Some(advice) = herald_cli::advice::advice(&err, &cli.server) {
                eprintln!("  hint: {advice}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand that talks to the logger.
async fn run(cli: &Cli) -> Result<(), Error> {
    let client = Client::connect_with(cli.server.clone(), &cli.tls.tls()?)
        .await?
        .with_api_key(&cli.api_key)?;
    let json = cli.json;
    match &cli.command {
        Command::Create(args) => events::create(&client, args, json).await,
        Command::Cancel(args) => events::cancel(&client, args, json).await,
        Command::List(args) => events::list(&client, args, json).await,
        Command::Get(args) => events::get(&client, args, json).await,
        Command::UpdateStatus(args) => events::update_status(&client, args, json).await,
        Command::Attempts(args) => attempts::run(&client, args, json).await,
        Command::Health(args) => admin::health(&client, args, json).await,
        Command::Stats => admin::stats(&client, json).await,
        Command::DeadLetters(command) => dead_letters::run(&client, command, json).await,
        Command::Simulate(args) => simulate::run(&client, args, json).await,
        Command::Subscribe(args) => subscribe::run(&client, args, json).await,
        Command::Inbox(command) => inbox::run(&client, command, json).await,
        Command::Recipients(command) => recipients::run(&client, command, json).await,
        Command::Bench(_) | Command::Keys(_) | Command::Tokens(_) => {
            unreachable!("handled in main")
        }
    }
}
