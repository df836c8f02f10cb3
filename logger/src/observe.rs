//! The observer of every write the EventLogger makes: it counts events
//! created and statuses changed (for GetStats and the metrics), logs each at
//! debug level and records its span (OTLP), so the handlers only convert,
//! call the store and answer.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use herald::{Error, domain::Event, trace::TraceParent};
use tonic::Status;
use tracing::debug;

use crate::metrics::EventMetrics;

/// This logger's own counts since it started (queue entries written and
/// failed writes are kept in the metrics alone), kept as writes finish.
pub struct WriteObserver {
    started: SystemTime,
    clock: Instant,
    created: AtomicU64,
    updated: AtomicU64,
    metrics: EventMetrics,
}

/// What a write does.
#[derive(Clone, Copy)]
pub enum Write {
    /// Creates events, for a caller in this trace (if it sent one).
    Create(Option<TraceParent>),
    /// Changes statuses.
    Change,
}

impl WriteObserver {
    /// Counts into `metrics` from now on.
    pub fn new(metrics: EventMetrics) -> Self {
        Self {
            started: herald::domain::now(),
            clock: Instant::now(),
            created: AtomicU64::new(0),
            updated: AtomicU64::new(0),
            metrics,
        }
    }

    /// When this logger started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// How long it has been running.
    pub fn uptime(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Events this logger created.
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Status changes this logger applied.
    pub fn updated(&self) -> u64 {
        self.updated.load(Ordering::Relaxed)
    }

    /// Events this logger queued for the processors.
    pub fn published(&self) -> u64 {
        self.metrics.published.get()
    }

    /// Writes this logger could not make.
    pub fn publish_failures(&self) -> u64 {
        self.metrics.publish_failures.get()
    }

    /// Counts (and logs, and traces) what a write that started at `since`
    /// did: events created, status changes applied and queue entries written.
    /// An event the write did not change (a repeated request id, a status it
    /// already had) is not counted; a failed write counts as a failure, a
    /// refused item (in a batch) as a rejection.
    pub fn record<'a>(
        &self,
        outcomes: impl IntoIterator<Item = &'a Result<Event, Error>>,
        since: SystemTime,
        kind: Write,
    ) {
        let created = matches!(kind, Write::Create(_));
        for outcome in outcomes {
            match outcome {
                Ok(event) => {
                    let (count, at) = if created {
                        (&self.created, event.created_at)
                    } else {
                        (&self.updated, event.updated_at)
                    };
                    if at < since {
                        continue;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        event_id = %event.id,
                        status = %event.status,
                        trace_id = %event.traceparent.map(|t| t.trace_id()).unwrap_or_default(),
                        "{}",
                        if created { "event created" } else { "status changed" }
                    );
                    trace_step(event, since, kind);
                    if created {
                        self.metrics.created(&event.category, &event.event_type);
                    } else {
                        self.metrics.status_updated(event.status);
                    }
                    if event.status.enqueues() {
                        self.metrics.published.inc();
                    }
                }
                Err(Error::Unavailable(_) | Error::Misconfigured(_) | Error::Internal(_)) => {
                    self.metrics.publish_failures.inc();
                }
                Err(err) if created => self.metrics.rejected(Status::from(err.clone()).code()),
                Err(_) => {}
            }
        }
    }
}

/// Sends the span of one event's creation or change (with `otlp`): the
/// creation's span is the event's own traceparent, under the caller's; a
/// change's is a new span under the one that asked for it.
fn trace_step(event: &Event, since: SystemTime, kind: Write) {
    let Some(stored) = event.traceparent else {
        return;
    };
    herald_runtime::otel::record(|| {
        let (name, context, parent) = match kind {
            Write::Create(caller) => ("CreateEvent", stored, caller),
            Write::Change => ("UpdateStatus", stored.child(), Some(stored)),
        };
        herald_runtime::otel::Step {
            name,
            context,
            parent,
            start: since,
            attributes: vec![
                ("herald.event_id", event.id.to_string()),
                ("herald.status", event.status.as_str().to_owned()),
            ],
        }
    });
}
