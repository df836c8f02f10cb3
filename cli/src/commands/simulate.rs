//! `herald simulate`: users receiving and opening notifications while the
//! processors lose deliveries, with a progress bar and the report.

use std::{sync::Arc, time::Duration};

use herald::random::parse_ratio;
use herald_cli::simulate::{SimulateOptions, simulate};
use herald_client::{Client, Error};

/// Flags of `herald simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
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

/// Runs the simulation and prints its report.
pub async fn run(client: &Client, args: &SimulateArgs, json: bool) -> Result<(), Error> {
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
    let report = simulate(client, &options, progress).await;
    bar.finish_and_clear();
    let report = report?;
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
