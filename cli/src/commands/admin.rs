//! `herald health` and `herald stats`.

use herald::domain::rfc3339_micros;
use herald_client::{Client, Error, Health};

/// Flags of `herald health`.
#[derive(clap::Args)]
pub struct HealthArgs {
    /// The service to ask about; empty for the whole server.
    #[arg(long, default_value = "", hide_default_value = true)]
    service: String,
}

/// Prints the health; an error unless SERVING.
pub async fn health(client: &Client, args: &HealthArgs, json: bool) -> Result<(), Error> {
    let status = client.health(&args.service).await?;
    if json {
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
    Ok(())
}

/// Prints the counts of events by status and the logger's own counters.
pub async fn stats(client: &Client, json: bool) -> Result<(), Error> {
    let stats = client.stats().await?;
    let started = stats.started_at.map(rfc3339_micros).unwrap_or_default();
    let uptime = stats.uptime.as_secs();
    let fields: [(&str, serde_json::Value); 14] = [
        ("total_events", stats.total_events.into()),
        ("pending_events", stats.pending_events.into()),
        ("processed_events", stats.processed_events.into()),
        ("opened_events", stats.opened_events.into()),
        ("failed_events", stats.failed_events.into()),
        ("scheduled_events", stats.scheduled_events.into()),
        ("cancelled_events", stats.cancelled_events.into()),
        ("events_created", stats.events_created.into()),
        ("status_updates", stats.status_updates.into()),
        ("events_published", stats.events_published.into()),
        ("publish_failures", stats.publish_failures.into()),
        ("active_subscribers", stats.active_subscribers.into()),
        ("started_at", started.into()),
        ("uptime_secs", uptime.into()),
    ];
    if json {
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
    Ok(())
}
