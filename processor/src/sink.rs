//! Where notifications go. Later sinks (webhooks, e-mail) implement [`Sink`].

use std::{io::Write, sync::Mutex};

use async_trait::async_trait;
use herald::Event;

/// A destination of notifications.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Sends the notification of `event`; an error leaves the event to be
    /// delivered again later.
    async fn deliver(&self, event: &Event) -> anyhow::Result<()>;
}

/// The notification line: `Event {event_id} has been sent to {user_id}: {description}`.
pub fn notification_line(event: &Event) -> String {
    format!(
        "Event {} has been sent to {}: {}",
        event.id, event.user_id, event.description
    )
}

/// Writes each notification as one [`notification_line`] to a writer (stdout
/// in production), flushed at once.
pub struct LineSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl LineSink {
    /// A sink writing to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Box::new(out)),
        }
    }

    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

#[async_trait]
impl Sink for LineSink {
    async fn deliver(&self, event: &Event) -> anyhow::Result<()> {
        let line = notification_line(event);
        // One short write under the lock, so lines from concurrent deliveries never interleave.
        let mut out = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("line sink lock poisoned"))?;
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }
}
