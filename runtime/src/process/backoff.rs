//! Waits between the attempts of a loop that retries until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits between attempts that keep failing: 100 ms (or another first
/// wait), doubling up to a ceiling, back to the first after a success.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// The first wait.
    const FIRST: Duration = Duration::from_millis(100);

    /// Waits that grow up to `max`.
    pub fn up_to(max: Duration) -> Self {
        Self::between(Self::FIRST, max)
    }

    /// Waits from `first`, growing up to `max`.
    pub fn between(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max: max.max(first),
        }
    }

    /// The wait the next failure will get (for the log line).
    pub fn next_wait(&self) -> Duration {
        self.next
    }

    /// An attempt worked: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait and doubles it; `false` if `shutdown` came first.
    pub async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_double_up_to_the_ceiling_and_a_success_starts_over() {
        let stopped = CancellationToken::new();
        stopped.cancel();
        let mut backoff = Backoff::up_to(Duration::from_millis(500));
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(backoff.next_wait().as_millis());
            assert!(!backoff.sleep(&stopped).await, "shutdown ends the wait");
        }
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }
}
