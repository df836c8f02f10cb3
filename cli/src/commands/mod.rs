//! The subcommands of `herald`, one module each, and what they share: the
//! parsers of flag values and how an event is printed.

pub mod admin;
pub mod attempts;
pub mod dead_letters;
pub mod events;
pub mod inbox;
pub mod keys;
pub mod recipients;
pub mod simulate;
pub mod subscribe;
pub mod tokens;

use std::time::SystemTime;

use herald::{
    Event, EventStatus,
    domain::{Payload, rfc3339_micros},
};

/// Reads `--payload`: a JSON object.
pub fn parse_payload(s: &str) -> Result<Payload, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("the payload must be a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Reads an RFC 3339 time flag.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    herald::domain::parse_rfc3339(s)
}

/// Reads a status flag: pending, processed, opened or failed (any case, with
/// or without the protobuf prefix `EVENT_STATUS_`).
pub fn parse_status(s: &str) -> Result<EventStatus, String> {
    EventStatus::parse(s).ok_or_else(|| {
        format!(
            "unknown status {s:?}: use pending, processed, opened, failed, scheduled or \
                 cancelled"
        )
    })
}

/// Prints an event as labelled lines, or with `json` as one object.
pub fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", e.to_json());
    } else {
        println!("event_id:    {}", e.id);
        println!("user_id:     {}", e.user_id);
        println!("description: {}", e.description);
        println!("status:      {}", e.status);
        println!("created_at:  {}", rfc3339_micros(e.created_at));
        println!("updated_at:  {}", rfc3339_micros(e.updated_at));
        if e.occurred_at != e.created_at {
            println!("occurred_at: {}", rfc3339_micros(e.occurred_at));
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
        if let Some(due) = e.deliver_at {
            println!("deliver_at:  {}", rfc3339_micros(due));
        }
        if let Some(payload) = &e.payload {
            println!(
                "payload:     {}",
                serde_json::Value::Object(payload.clone())
            );
        }
    }
}
