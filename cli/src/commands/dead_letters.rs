//! `herald dead-letters list` and `redrive`.

use futures_util::StreamExt;
use herald_client::{Client, DeadLetter, Error, Redrive};
use uuid::Uuid;

use super::print_event;

/// `herald dead-letters` subcommands.
#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
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
    /// Put FAILED events back in the queue and remove their dead letters:
    /// give event ids, or --all.
    Redrive {
        /// Every dead letter's event.
        #[arg(long, conflicts_with = "event_ids")]
        all: bool,
        /// The events to put back.
        #[arg(value_parser = herald_cli::advice::parse_event_id)]
        event_ids: Vec<Uuid>,
    },
}

/// Runs one `dead-letters` subcommand.
pub async fn run(client: &Client, command: &DeadLettersCommand, json: bool) -> Result<(), Error> {
    match command {
        DeadLettersCommand::List { page_size, all } => list(client, *page_size, *all, json).await,
        DeadLettersCommand::Redrive { all, event_ids } => {
            redrive(client, *all, event_ids, json).await
        }
    }
}

/// One line of the text listing: dead letter id, event id, user,
/// deliveries and reason, in columns.
fn row(id: &str, event: &str, user: &str, deliveries: &str, reason: &str) -> String {
    format!("{id:<11}  {event:<36}  {user:<12}  {deliveries:>10}  {reason}")
}

async fn list(client: &Client, page_size: u32, all: bool, json: bool) -> Result<(), Error> {
    let mut printed = 0;
    let mut print = |dead: &DeadLetter| {
        if printed == 0 && !json {
            println!(
                "{}",
                row("DEAD LETTER", "EVENT", "USER", "DELIVERIES", "REASON")
            );
        }
        printed += 1;
        if json {
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
            let (event, deliveries) = (dead.event.id.to_string(), dead.deliveries.to_string());
            let row = row(
                &dead.id,
                &event,
                &dead.event.user_id,
                &deliveries,
                &dead.reason,
            );
            println!("{row}");
        }
    };
    if all {
        let mut dead = std::pin::pin!(client.dead_letters(page_size));
        while let Some(letter) = dead.next().await {
            print(&letter?);
        }
    } else {
        client
            .list_dead_letters(page_size, "")
            .await?
            .items
            .iter()
            .for_each(&mut print);
    }
    if printed == 0 && !json {
        println!("no dead letters");
    }
    Ok(())
}

async fn redrive(client: &Client, all: bool, event_ids: &[Uuid], json: bool) -> Result<(), Error> {
    let which = match (all, event_ids) {
        (true, _) => Redrive::All,
        (false, []) => return Err(Error::Setup("give event ids or --all".into())),
        (false, ids) => Redrive::Ids(ids.to_vec()),
    };
    let results = client.redrive(which).await?;
    if results.is_empty() && !json {
        println!("nothing to redrive: there are no dead letters");
    }
    let mut failed = None;
    for result in results {
        match result {
            Ok(event) => print_event(&event, json),
            Err(err) => {
                eprintln!("error: {err}");
                failed = Some(err);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
