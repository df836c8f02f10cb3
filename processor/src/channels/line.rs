//! The notification line ([`LineChannel`]) and the simulated channel that
//! loses a share of attempts ([`SimulatedChannel`]).

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use herald::{Event, domain::Recipient, random::SplitMix64};

use super::{Channel, ChannelKind, Failure, Reason, Sent};

/// The notification line: `Event {event_id} has been sent to {user_id}: {description}`.
pub fn notification_line(event: &Event) -> String {
    format!(
        "Event {} has been sent to {}: {}",
        event.id, event.user_id, event.description
    )
}

/// Writes each notification as one [`notification_line`] to a writer (stdout
/// in production).
pub struct LineChannel {
    out: Mutex<Box<dyn Write + Send>>,
    target: &'static str,
}

impl LineChannel {
    /// A channel writing to `out`, each line flushed at once.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Box::new(out)),
            target: "writer",
        }
    }

    /// A channel writing to standard output.
    pub fn stdout() -> Self {
        Self {
            out: Mutex::new(Box::new(std::io::stdout())),
            target: "stdout",
        }
    }
}

#[async_trait]
impl Channel for LineChannel {
    async fn send(&self, event: &Event, _: Option<&Recipient>) -> Result<Sent, Failure> {
        let line = notification_line(event);
        // One short write under the lock, so lines from concurrent deliveries never interleave.
        let mut out = self
            .out
            .lock()
            .map_err(|_| Failure::retry(Reason::Io, "line channel lock poisoned"))?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::retry(Reason::Io, e.to_string()))?;
        Ok(Sent::default())
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Line
    }

    fn target(&self) -> String {
        self.target.to_owned()
    }
}

/// Loses each attempt with a given probability (an error, as a flaky
/// provider would give) and hands the others to an inner channel: the
/// delivery simulator's channel.
pub struct SimulatedChannel {
    inner: Arc<dyn Channel>,
    loss_ratio: f64,
    rng: Mutex<SplitMix64>,
}

impl SimulatedChannel {
    /// Loses `loss_ratio` of attempts (0 to 1), drawn from `rng`.
    pub fn new(inner: Arc<dyn Channel>, loss_ratio: f64, rng: SplitMix64) -> Self {
        Self {
            inner,
            loss_ratio,
            rng: Mutex::new(rng),
        }
    }
}

#[async_trait]
impl Channel for SimulatedChannel {
    async fn send(&self, event: &Event, recipient: Option<&Recipient>) -> Result<Sent, Failure> {
        let lost = self
            .rng
            .lock()
            .map_err(|_| Failure::retry(Reason::Io, "simulated channel lock poisoned"))?
            .chance(self.loss_ratio);
        if lost {
            return Err(Failure::retry(
                Reason::SimulatedLoss,
                format!("simulated loss of the notification of event {}", event.id),
            ));
        }
        self.inner.send(event, recipient).await
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Simulated
    }

    fn target(&self) -> String {
        self.inner.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald::NewEvent;

    #[tokio::test]
    async fn the_simulated_channel_loses_its_share_and_passes_the_rest_on() {
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
        let inner = Arc::new(LineChannel::new(Shared(out.clone())));
        let channel = SimulatedChannel::new(inner, 0.25, SplitMix64::new(9));
        let event = NewEvent::new("u", "hi")
            .expect("valid")
            .into_event(herald::partition::Partitions::default());
        let mut lost = 0;
        for _ in 0..4_000 {
            if channel.send(&event, None).await.is_err() {
                lost += 1;
            }
        }
        // 1,000 expected, sd ~27: within five.
        assert!((865..=1_135).contains(&lost), "{lost}");
        let lines = String::from_utf8(out.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(lines.lines().count(), 4_000 - lost);
    }
}
