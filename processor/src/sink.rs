//! Where notifications go: [`LineSink`] prints them, [`SimulatedSink`] loses
//! a share of attempts for the delivery simulator. Later sinks (webhooks,
//! e-mail) implement [`Sink`].

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use herald::{Event, random::SplitMix64};

/// A destination of notifications.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Sends the notification of `event`; an error leaves the event to be
    /// delivered again later.
    async fn deliver(&self, event: &Event) -> anyhow::Result<()>;
    /// A short name for metrics' `sink` label, such as `line`.
    fn name(&self) -> &'static str;
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

    fn name(&self) -> &'static str {
        "line"
    }
}

/// Loses each delivery attempt with a given probability (an error, as a
/// flaky provider would give) and hands the others to an inner sink: the
/// delivery simulator's sink.
pub struct SimulatedSink {
    inner: Arc<dyn Sink>,
    loss_ratio: f64,
    rng: Mutex<SplitMix64>,
}

impl SimulatedSink {
    /// Loses `loss_ratio` of attempts (0 to 1), drawn from `rng`.
    pub fn new(inner: Arc<dyn Sink>, loss_ratio: f64, rng: SplitMix64) -> Self {
        Self {
            inner,
            loss_ratio,
            rng: Mutex::new(rng),
        }
    }
}

#[async_trait]
impl Sink for SimulatedSink {
    async fn deliver(&self, event: &Event) -> anyhow::Result<()> {
        let lost = self
            .rng
            .lock()
            .map_err(|_| anyhow::anyhow!("simulated sink lock poisoned"))?
            .chance(self.loss_ratio);
        if lost {
            anyhow::bail!("simulated loss of the notification of event {}", event.id);
        }
        self.inner.deliver(event).await
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald::NewEvent;

    #[tokio::test]
    async fn the_simulated_sink_loses_its_share_and_passes_the_rest_on() {
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let inner = Arc::new(LineSink::new(Shared(out.clone())));
        let sink = SimulatedSink::new(inner, 0.25, SplitMix64::new(9));
        let event = NewEvent::new("u", "hi")
            .expect("valid")
            .into_event(herald::partition::Partitions::default());
        let mut lost = 0;
        for _ in 0..4_000 {
            if sink.deliver(&event).await.is_err() {
                lost += 1;
            }
        }
        // 1,000 expected, sd ~27: within five.
        assert!((865..=1_135).contains(&lost), "{lost}");
        let lines = String::from_utf8(out.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(lines.lines().count(), 4_000 - lost);
    }
}
