//! `herald subscribe`: follows notifications until interrupted.

use std::time::Duration;

use futures_util::StreamExt;
use herald::{EventStatus, domain::rfc3339_micros};
use herald_client::{Client, Error, Message, Notification, RetryPolicy, SubscribeOptions};

use super::parse_status;

/// Flags of `herald subscribe`.
#[derive(clap::Args)]
pub struct SubscribeArgs {
    /// Whose notifications to follow; omit for every user's.
    #[arg(long, default_value = "", hide_default_value = true)]
    user_id: String,
    /// Only this category (repeat for any of several).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Only this type (repeat for any of several).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only this session.
    #[arg(long, default_value = "", hide_default_value = true)]
    session_id: String,
    /// Changes into this status (repeat for several; default: processed,
    /// i.e. notifications as they are sent).
    #[arg(long = "status", value_parser = parse_status)]
    statuses: Vec<EventStatus>,
    /// First print what was logged after this cursor (from an earlier
    /// run's output), then follow live.
    #[arg(long, default_value = "", hide_default_value = true)]
    after: String,
    /// Mark each notification shown as OPENED (as the recipient's app would).
    #[arg(long)]
    mark_opened: bool,
}

/// Prints each change as it arrives, resuming by itself after a dropped
/// connection, until Ctrl-C.
pub async fn run(client: &Client, args: &SubscribeArgs, json: bool) -> Result<(), Error> {
    let SubscribeArgs {
        user_id,
        categories,
        types,
        session_id,
        statuses,
        after,
        mark_opened,
    } = args;
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
    // The server accepted the stream: say what it follows, so a quiet
    // terminal reads as "connected, nothing yet" rather than "stuck".
    eprintln!("{}", describe(args));
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
                show_notification(&n, !statuses.is_empty(), json);
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

/// What a subscription follows, in words: whose changes, into which
/// statuses, the other filters, and from where.
fn describe(args: &SubscribeArgs) -> String {
    let who = if args.user_id.is_empty() {
        "every user's".to_string()
    } else {
        format!("{}'s", args.user_id)
    };
    let what = if args.statuses.is_empty() {
        format!("following {who} notifications, as events reach PROCESSED")
    } else {
        let statuses: Vec<&str> = args.statuses.iter().map(|s| s.as_str()).collect();
        format!("following {who} changes into {}", statuses.join(" or "))
    };
    let mut filters = Vec::new();
    if args.user_id.is_empty() {
        filters.push("no --user-id".to_string());
    }
    for (name, values) in [("category", &args.categories), ("type", &args.types)] {
        if !values.is_empty() {
            filters.push(format!("{name} {}", values.join(" or ")));
        }
    }
    if !args.session_id.is_empty() {
        filters.push(format!("session {}", args.session_id));
    }
    let filters = if filters.is_empty() {
        String::new()
    } else {
        format!(" ({})", filters.join("; "))
    };
    let from = match args.after.as_str() {
        "" => "from now".to_string(),
        "start" => "from the oldest the log keeps".to_string(),
        cursor => format!("after cursor {cursor}"),
    };
    format!("{what}{filters}, {from}; Ctrl-C stops")
}

/// One line per change: JSON with its cursor, or time, id, (status,) user and text.
fn show_notification(n: &Notification, with_status: bool, json: bool) {
    let e = &n.event;
    if json {
        let mut value = e.to_json();
        value["cursor"] = n.cursor.clone().into();
        println!("{value}");
    } else if with_status {
        println!(
            "{}  {}  {:<9}  {}: {}",
            rfc3339_micros(e.updated_at),
            e.id,
            e.status.as_str(),
            e.user_id,
            e.description
        );
    } else {
        println!(
            "{}  {}  {}: {}",
            rfc3339_micros(e.updated_at),
            e.id,
            e.user_id,
            e.description
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SubscribeArgs,
    }

    fn describe_of(flags: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("subscribe").chain(flags.iter().copied()))
            .expect("flags parse");
        describe(&cli.args)
    }

    #[test]
    fn says_what_it_follows() {
        assert_eq!(
            describe_of(&["--user-id", "dave"]),
            "following dave's notifications, as events reach PROCESSED, from now; Ctrl-C stops"
        );
        assert_eq!(
            describe_of(&[]),
            "following every user's notifications, as events reach PROCESSED (no --user-id), from \
             now; Ctrl-C stops"
        );
        assert_eq!(
            describe_of(&[
                "--category",
                "billing",
                "--category",
                "shop.*",
                "--type",
                "invoice",
                "--session-id",
                "s-1",
                "--status",
                "pending",
                "--status",
                "EVENT_STATUS_PROCESSED",
                "--after",
                "start"
            ]),
            "following every user's changes into PENDING or PROCESSED (no --user-id; category \
             billing or shop.*; type invoice; session s-1), from the oldest the log keeps; Ctrl-C stops"
        );
        assert_eq!(
            describe_of(&["--user-id", "gina", "--after", "2:16:0:,,"]),
            "following gina's notifications, as events reach PROCESSED, after cursor 2:16:0:,,; Ctrl-C \
             stops"
        );
    }
}
