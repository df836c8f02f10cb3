//! `herald inbox list`, `count` and `read`: a user's notifications, with
//! an API key or the user's own token as `--api-key`.

use futures_util::StreamExt;
use herald::{Event, domain::rfc3339_micros};
use herald_client::{Client, Error, ListInbox, MarkRead};
use uuid::Uuid;

/// `herald inbox` subcommands.
#[derive(clap::Subcommand)]
pub enum InboxCommand {
    /// List a user's notifications, newest first (read ones are OPENED), as
    /// a table (or JSON lines), then the unread count.
    List {
        /// Whose inbox.
        #[arg(long)]
        user_id: String,
        /// Only the unread notifications.
        #[arg(long)]
        unread: bool,
        /// Most notifications per page (the server's default: 50).
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        page_size: i32,
        /// Start from this page token (printed after a page when more follow).
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Print how many of a user's notifications are unread.
    Count {
        /// Whose inbox.
        #[arg(long)]
        user_id: String,
    },
    /// Mark notifications read (OPENED): give event ids, or --all.
    Read {
        /// Whose inbox.
        #[arg(long)]
        user_id: String,
        /// Every notification unread now.
        #[arg(
            long,
            conflicts_with = "event_ids",
            required_unless_present = "event_ids"
        )]
        all: bool,
        /// The notifications to mark read.
        #[arg(value_parser = herald_cli::advice::parse_event_id)]
        event_ids: Vec<Uuid>,
    },
}

/// Runs one `inbox` subcommand.
pub async fn run(client: &Client, command: &InboxCommand, json: bool) -> Result<(), Error> {
    match command {
        InboxCommand::List {
            user_id,
            unread,
            page_size,
            page_token,
            all,
        } => {
            let mut query = ListInbox::new(user_id)
                .page_size(*page_size)
                .page_token(page_token);
            if *unread {
                query = query.unread_only();
            }
            list(client, query, *all, json).await
        }
        InboxCommand::Count { user_id } => {
            let unread = client.unread_count(user_id).await?;
            if json {
                println!("{}", serde_json::json!({ "unread_count": unread }));
            } else {
                println!("{unread} unread");
            }
            Ok(())
        }
        InboxCommand::Read {
            user_id,
            all,
            event_ids,
        } => {
            let which = if *all {
                MarkRead::All
            } else {
                MarkRead::Ids(event_ids.clone())
            };
            let done = client.mark_read(user_id, which).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "marked": done.marked, "unread_count": done.unread_count })
                );
            } else {
                println!("{} marked read, {} unread", done.marked, done.unread_count);
            }
            Ok(())
        }
    }
}

async fn list(client: &Client, query: ListInbox, all: bool, json: bool) -> Result<(), Error> {
    // The header comes once the first page is in: an error prints alone.
    let first = client.list_inbox(query.clone()).await?;
    if !json {
        println!(
            "{:<36}  {:<27}  {:<9}  DESCRIPTION",
            "EVENT_ID", "OCCURRED_AT", "STATUS"
        );
    }
    let print = |e: &Event| {
        if json {
            println!("{}", e.to_json());
        } else {
            println!(
                "{:<36}  {:<27}  {:<9}  {}",
                e.id,
                rfc3339_micros(e.occurred_at),
                e.status.as_str(),
                e.description
            );
        }
    };
    first.page.items.iter().for_each(print);
    match first.page.next {
        Some(next) if all => {
            let mut rest = std::pin::pin!(client.inbox(query.page_token(next)));
            while let Some(event) = rest.next().await {
                print(&event?);
            }
        }
        Some(next) => eprintln!("more: --page-token {next}"),
        None => {}
    }
    if !json {
        println!("{} unread", first.unread_count);
    }
    Ok(())
}
