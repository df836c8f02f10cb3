//! `herald create`, `cancel`, `list`, `get` and `update-status`.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use herald::{
    Event, EventStatus,
    domain::{EventInput, Payload, rfc3339_micros},
};
use herald_client::{Client, Error, ListEvents, RetryPolicy};
use uuid::Uuid;

use super::{parse_payload, parse_status, parse_time, print_event};

/// Flags of `herald create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The user the event concerns.
    #[arg(long)]
    user_id: String,
    /// Text of the notification.
    #[arg(long)]
    description: String,
    /// Group of the event, e.g. "page interaction".
    #[arg(long, default_value = "", hide_default_value = true)]
    category: String,
    /// Kind of event, e.g. "pageview"; a registered type's payload is checked.
    #[arg(long = "type", default_value = "", hide_default_value = true)]
    event_type: String,
    /// Session the event belongs to.
    #[arg(long, default_value = "", hide_default_value = true)]
    session_id: String,
    /// Free-form data: a JSON object.
    #[arg(long, value_parser = parse_payload)]
    payload: Option<Payload>,
    /// When it happened (RFC 3339, e.g. 2026-11-22T10:00:00Z); default now.
    #[arg(long, value_parser = parse_time)]
    occurred_at: Option<SystemTime>,
    /// Idempotency key: repeating the create with it returns the first
    /// event. Default: one made for this call (herald-cli-UUID), so the
    /// retries `herald create` makes while the logger's storage is
    /// unavailable (for about 10 seconds) create the event once.
    #[arg(long, default_value = "", hide_default_value = true)]
    request_id: String,
    /// Deliver at this time, not before (RFC 3339): the event waits as
    /// SCHEDULED until then.
    #[arg(long, value_parser = parse_time, conflicts_with = "deliver_in")]
    deliver_at: Option<SystemTime>,
    /// Deliver this long from now (90s, 15m, 2h, 3d): the event waits as
    /// SCHEDULED until then.
    #[arg(long, value_parser = herald_runtime::flags::duration)]
    deliver_in: Option<Duration>,
}

/// Flags of `herald cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    /// The id of a SCHEDULED event (a UUID).
    #[arg(value_parser = herald_cli::advice::parse_event_id)]
    id: Uuid,
}

/// Flags of `herald list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this user's events.
    #[arg(long, default_value = "", hide_default_value = true)]
    user_id: String,
    /// Only this session's events.
    #[arg(long, default_value = "", hide_default_value = true)]
    session_id: String,
    /// Only this category.
    #[arg(long, default_value = "", hide_default_value = true)]
    category: String,
    /// Only this type.
    #[arg(long = "type", default_value = "", hide_default_value = true)]
    event_type: String,
    /// Only this status: pending, processed, opened, failed, scheduled or
    /// cancelled.
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
    #[arg(long, default_value = "", hide_default_value = true)]
    page_token: String,
    /// Follow every page to the end.
    #[arg(long)]
    all: bool,
}

/// Flags of `herald get`.
#[derive(clap::Args)]
pub struct GetArgs {
    /// The event's id (a UUID).
    #[arg(value_parser = herald_cli::advice::parse_event_id)]
    id: Uuid,
}

/// Flags of `herald update-status`.
#[derive(clap::Args)]
pub struct UpdateStatusArgs {
    /// The event's id (a UUID).
    #[arg(value_parser = herald_cli::advice::parse_event_id)]
    id: Uuid,
    /// The new status: pending, processed, opened or failed.
    #[arg(value_parser = parse_status)]
    status: EventStatus,
}

/// How `herald create` retries while the logger's storage is unavailable
/// (a failover, a restart): for about 10 seconds.
const CREATE_RETRIES: RetryPolicy = RetryPolicy {
    retries: 8,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(2),
};

/// Creates the event and prints it as stored.
pub async fn create(client: &Client, args: &CreateArgs, json: bool) -> Result<(), Error> {
    let CreateArgs {
        user_id,
        description,
        category,
        event_type,
        session_id,
        payload,
        occurred_at,
        request_id,
        deliver_at,
        deliver_in,
    } = args;
    let input = EventInput {
        user_id: user_id.clone(),
        description: description.clone(),
        category: category.clone(),
        event_type: event_type.clone(),
        session_id: session_id.clone(),
        payload: payload.clone(),
        occurred_at: *occurred_at,
        // With a request id the client retries an unavailable logger, and
        // a create that was stored before the failure is answered, not
        // made twice.
        request_id: match request_id.as_str() {
            "" => format!("herald-cli-{}", Uuid::now_v7()),
            given => given.to_owned(),
        },
        deliver_at: *deliver_at,
        deliver_after: *deliver_in,
    };
    let created = client
        .clone()
        .with_retry(CREATE_RETRIES)
        .create_reporting(input)
        .await?;
    print_event(&created.event, json);
    if created.unregistered_type {
        eprintln!(
            "warning: the logger has no type {} in its registry (a typo?): the event was stored \
             with its payload unchecked; a logger started with --reject-unknown-types refuses such events",
            herald::error::quote(&created.event.event_type)
        );
    }
    Ok(())
}

/// Cancels a scheduled event and prints it.
pub async fn cancel(client: &Client, args: &CancelArgs, json: bool) -> Result<(), Error> {
    let event = client.cancel_event(args.id).await?;
    print_event(&event, json);
    Ok(())
}

/// Prints a page of events as a table (or JSON lines), or every page.
pub async fn list(client: &Client, args: &ListArgs, json: bool) -> Result<(), Error> {
    let ListArgs {
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
    } = args;
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
    if !json {
        println!(
            "{:<36}  {:<27}  {:<9}  {:<16}  {:<16}  DESCRIPTION",
            "EVENT_ID", "OCCURRED_AT", "STATUS", "USER_ID", "TYPE"
        );
    }
    let print = |e: &Event| {
        if json {
            println!("{}", e.to_json());
        } else {
            println!(
                "{:<36}  {:<27}  {:<9}  {:<16}  {:<16}  {}",
                e.id,
                rfc3339_micros(e.occurred_at),
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
    Ok(())
}

/// Prints one event.
pub async fn get(client: &Client, args: &GetArgs, json: bool) -> Result<(), Error> {
    print_event(&client.get_event(args.id).await?, json);
    Ok(())
}

/// Changes an event's status and prints it.
pub async fn update_status(
    client: &Client,
    args: &UpdateStatusArgs,
    json: bool,
) -> Result<(), Error> {
    print_event(&client.update_status(args.id, args.status).await?, json);
    Ok(())
}
