//! `/metrics`: users by state, events by type and outcome, buffered events
//! and uptime, all kept in memory so that a scrape never reads the database.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use herald_client::{Outcome, Publisher};

use crate::{api::EVENT_TYPES, store::Counts};

/// Counts kept in memory, so `/metrics` reads no database.
pub struct Metrics {
    started: Instant,
    active: AtomicU64,
    deleted: AtomicU64,
    /// Per event type and outcome.
    events: HashMap<(&'static str, Outcome), AtomicU64>,
}

impl Metrics {
    /// Counts starting from the database's `counts`.
    pub fn new(counts: Counts) -> Self {
        let events = EVENT_TYPES
            .into_iter()
            .flat_map(|t| {
                [Outcome::Published, Outcome::Refused, Outcome::Dropped]
                    .map(|outcome| ((t, outcome), AtomicU64::new(0)))
            })
            .collect();
        Self {
            started: Instant::now(),
            active: AtomicU64::new(counts.active),
            deleted: AtomicU64::new(counts.deleted),
            events,
        }
    }

    /// A user was created (and committed).
    pub fn user_created(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A user was deleted (and committed).
    pub fn user_deleted(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.deleted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an event's outcome (the Publisher's observer calls this).
    pub fn observe(&self, outcome: Outcome, event_type: &str) {
        if let Some(count) = EVENT_TYPES
            .into_iter()
            .find(|t| *t == event_type)
            .and_then(|t| self.events.get(&(t, outcome)))
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every count.
    pub fn render(&self, publisher: &Publisher) -> String {
        use std::fmt::Write;
        let active = self.active.load(Ordering::Relaxed);
        let deleted = self.deleted.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            "user_service_users_total",
            "Users ever created (active and deleted).",
            (active + deleted).to_string(),
        );
        gauge(
            "user_service_users_active",
            "Users not deleted.",
            active.to_string(),
        );
        gauge(
            "user_service_users_deleted",
            "Users deleted (soft: their rows are kept).",
            deleted.to_string(),
        );
        gauge(
            "user_service_uptime_seconds",
            "Seconds since the service started.",
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        gauge(
            "user_service_events_buffered",
            "Events waiting in the publisher's buffer.",
            publisher.stats().buffered.to_string(),
        );
        let _ = write!(
            out,
            "# HELP user_service_events_total Events by type and outcome (published, refused, dropped).\n\
             # TYPE user_service_events_total counter\n"
        );
        for event_type in EVENT_TYPES {
            for outcome in [Outcome::Published, Outcome::Refused, Outcome::Dropped] {
                let value = self.events[&(event_type, outcome)].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "user_service_events_total{{type=\"{event_type}\",outcome=\"{}\"}} {value}",
                    outcome.as_str()
                );
            }
        }
        out
    }
}
