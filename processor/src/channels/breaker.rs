//! A circuit breaker: after a run of failed attempts an endpoint is left
//! alone for a cooldown, then one attempt probes it; a success closes the
//! breaker, a failure opens it again. While it is open, events bound for
//! the endpoint are left for later at once, so a dead endpoint holds no
//! worker's place.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::IntGauge;

use super::{Failure, Next, Reason, Sent};

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Attempts go through; this many failed in a row.
    Closed(u32),
    /// Attempts are refused until then.
    Open(Instant),
    /// One probe went through at this time; the others are refused until
    /// it ends (or, if it never reports, a cooldown later).
    HalfOpen(Instant),
}

/// One endpoint's circuit breaker.
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// 0 closed, 1 half-open, 2 open.
    gauge: IntGauge,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row, for
    /// `cooldown`; its state goes to `gauge`.
    pub fn new(threshold: u32, cooldown: Duration, gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed(0)),
            gauge,
        }
    }

    fn set(&self, state: &mut State, new: State) {
        *state = new;
        self.gauge.set(match new {
            State::Closed(_) => 0,
            State::HalfOpen(_) => 1,
            State::Open(_) => 2,
        });
    }

    /// Whether an attempt may go now; if not, how long until one may.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *state {
            State::Closed(_) => Ok(()),
            State::Open(until) | State::HalfOpen(until) if now < until => Err(until - now),
            State::Open(_) | State::HalfOpen(_) => {
                self.set(&mut state, State::HalfOpen(now + self.cooldown));
                Ok(())
            }
        }
    }

    /// An attempt succeeded: the breaker closes.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state != State::Closed(0) {
            self.set(&mut state, State::Closed(0));
        }
    }

    /// Makes `attempt` if the breaker admits one (else leaves the event for
    /// later, saying when the next probe is), and counts how it went: an
    /// answer refusing the event for good shows the server alive.
    pub async fn guard(
        &self,
        attempt: impl Future<Output = Result<Sent, Failure>>,
    ) -> Result<Sent, Failure> {
        if let Err(wait) = self.admit() {
            return Err(Failure::later(
                Reason::CircuitOpen,
                format!(
                    "circuit breaker open after repeated failures; next probe in {}",
                    humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                ),
            ));
        }
        let result = attempt.await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(f) if f.next == Next::GiveUp => self.succeeded(),
            Err(_) => self.failed(),
        }
        result
    }

    /// An attempt failed: a probe's failure, or the threshold's, opens it.
    pub fn failed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let open = State::Open(Instant::now() + self.cooldown);
        match *state {
            State::Closed(n) if n + 1 < self.threshold => {
                self.set(&mut state, State::Closed(n + 1))
            }
            // An attempt admitted before the breaker opened changes nothing.
            State::Open(_) => {}
            _ => self.set(&mut state, open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let breaker = Breaker::new(3, Duration::from_millis(50), gauge.clone());
        for _ in 0..2 {
            assert!(breaker.admit().is_ok());
            breaker.failed();
        }
        breaker.succeeded();
        for _ in 0..3 {
            assert!(breaker.admit().is_ok(), "a success reset the count");
            breaker.failed();
        }
        assert_eq!(gauge.get(), 2);
        assert!(breaker.admit().is_err(), "open");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit().is_ok(), "one probe");
        assert_eq!(gauge.get(), 1);
        assert!(breaker.admit().is_err(), "only one");
        breaker.failed();
        assert!(breaker.admit().is_err(), "the probe failed: open again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit().is_ok());
        breaker.succeeded();
        assert_eq!(gauge.get(), 0);
        assert!(breaker.admit().is_ok() && breaker.admit().is_ok(), "closed");
    }
}
