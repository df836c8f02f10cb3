//! `herald attempts`: what the processors' channels did with one event.

use herald::domain::rfc3339_micros;
use herald_client::{Client, Error};
use uuid::Uuid;

/// Flags of `herald attempts`.
#[derive(clap::Args)]
pub struct AttemptsArgs {
    /// The event's id (a UUID).
    #[arg(value_parser = herald_cli::advice::parse_event_id)]
    id: Uuid,
}

/// Prints the event's attempts, oldest first: a line each (or JSON lines).
pub async fn run(client: &Client, args: &AttemptsArgs, json: bool) -> Result<(), Error> {
    let attempts = client.delivery_attempts(args.id).await?;
    if json {
        for a in &attempts {
            println!("{}", a.to_json());
        }
        return Ok(());
    }
    if attempts.is_empty() {
        println!("no delivery attempts recorded for {}", args.id);
        return Ok(());
    }
    for a in &attempts {
        let outcome = match (a.succeeded, a.http_status) {
            _ if a.skipped => "skipped".to_owned(),
            (true, Some(status)) => format!("ok {status}"),
            (true, None) => "ok".to_owned(),
            (false, Some(status)) => format!("failed {status}"),
            (false, None) => "failed".to_owned(),
        };
        let mut detail = if a.error.is_empty() {
            a.target.clone()
        } else {
            format!("{} ({})", a.target, a.error)
        };
        if let Some(digest) = a.digest_id {
            detail.push_str(&format!(" in digest {digest}"));
        }
        println!(
            "{}  {}  {}  {}  {:.1} ms  {}",
            rfc3339_micros(a.attempted_at),
            a.channel,
            a.kind,
            outcome,
            a.latency.as_secs_f64() * 1000.0,
            detail
        );
    }
    Ok(())
}
