//! One IRC channel's connection task: connect (plain or TLS), register,
//! join, then write messages at the configured rate and confirm them with
//! PINGs, reconnecting with a growing wait whenever the connection fails.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use herald_runtime::process::Backoff;
use tokio::{net::TcpStream, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Job,
    protocol::{IrcError, Lines, Stream},
};
use crate::channels::settings::IrcSettings;

/// Longest wait to connect, register and join.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A flood-control token bucket: `burst` tokens, refilled at `rate` a second.
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `n` tokens if there are, else says how long until there are.
    fn take(&mut self, n: usize) -> Result<(), Duration> {
        self.refill();
        let n = n as f64;
        if self.tokens >= n.min(self.burst) {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n.min(self.burst) - self.tokens) / self.rate,
            ))
        }
    }
}

/// What a connection task knows.
pub(super) struct Connection {
    pub(super) name: String,
    pub(super) settings: IrcSettings,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) stop: CancellationToken,
}

/// Why a connection ended.
enum Ended {
    /// The channel was dropped.
    Stopped,
    /// The connection failed; try again.
    Failed(IrcError),
}

impl Connection {
    /// Connects, serves, and reconnects until stopped.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut backoff = Backoff::between(Duration::from_millis(500), self.settings.reconnect_max);
        // Messages taken from the queue and not yet written, kept across
        // reconnections.
        let mut waiting: VecDeque<Job> = VecDeque::new();
        loop {
            let ended = match tokio::time::timeout(SETUP_TIMEOUT, self.connect()).await {
                Ok(Ok((stream, nick))) => {
                    backoff.reset();
                    info!(channel = %self.name, server = %self.settings.server, %nick, "irc connected and joined");
                    self.serve(stream, &nick, &mut queue, &mut waiting).await
                }
                Ok(Err(error)) => Ended::Failed(error),
                Err(_) => Ended::Failed(IrcError::SetupTimeout(SETUP_TIMEOUT)),
            };
            match ended {
                Ended::Stopped => return,
                Ended::Failed(error) => {
                    warn!(channel = %self.name, server = %self.settings.server, %error, retry_in = ?backoff.next_wait(), "irc connection failed")
                }
            }
            if !backoff.sleep(&self.stop).await {
                return;
            }
        }
    }

    /// Connects, registers and joins every channel; the stream, and the
    /// nick the server gave.
    async fn connect(&self) -> Result<(Lines, String), IrcError> {
        let tcp = TcpStream::connect(&self.settings.server)
            .await
            .map_err(|e| IrcError::Connect {
                server: self.settings.server.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = self
                    .settings
                    .server
                    .rsplit_once(':')
                    .map_or(self.settings.server.as_str(), |(h, _)| h)
                    .to_owned();
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| IrcError::ServerName(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| IrcError::Tls(e.to_string()))?;
                Box::new(tls)
            }
        };
        let mut lines = Lines::new(stream);
        if let Some(password) = &self.settings.password {
            lines.write(&format!("PASS {password}")).await?;
        }
        let base = self.settings.nick.clone();
        let mut nick = base.clone();
        lines.write(&format!("NICK {nick}")).await?;
        lines
            .write(&format!("USER {base} 0 * :Herald notifications"))
            .await?;
        let mut tries = 0u32;
        loop {
            let message = lines.read().await?;
            match message.command.as_str() {
                "PING" => lines.pong(&message).await?,
                "001" => {
                    nick = message.params.first().cloned().unwrap_or(nick);
                    break;
                }
                "433" | "436" => {
                    tries += 1;
                    let suffix = tries.to_string();
                    let keep = base.len().min(9 - suffix.len());
                    nick = format!("{}{suffix}", &base[..keep]);
                    lines.write(&format!("NICK {nick}")).await?;
                }
                "ERROR" => return Err(IrcError::Server(message.trailing().to_owned())),
                code if code.starts_with(['4', '5']) && code.len() == 3 => {
                    return Err(IrcError::Refused(format!(
                        "registration refused: {code} {}",
                        message.trailing()
                    )));
                }
                _ => {}
            }
        }
        lines
            .write(&format!("JOIN {}", self.settings.channels.join(",")))
            .await?;
        let mut to_join: Vec<String> = self
            .settings
            .channels
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        while !to_join.is_empty() {
            let message = lines.read().await?;
            match message.command.as_str() {
                "PING" => lines.pong(&message).await?,
                "JOIN" if message.sender() == Some(nick.as_str()) => {
                    let joined = message.params.first().map(|c| c.to_lowercase());
                    to_join.retain(|c| Some(c) != joined.as_ref());
                }
                "403" | "405" | "471" | "473" | "474" | "475" | "476" | "477" => {
                    return Err(IrcError::Refused(format!(
                        "cannot join: {} {}",
                        message.command,
                        message.params.join(" ")
                    )));
                }
                "ERROR" => return Err(IrcError::Server(message.trailing().to_owned())),
                _ => {}
            }
        }
        Ok((lines, nick))
    }

    /// Writes messages as the bucket allows and confirms them with a
    /// `PING`, until the connection fails or the channel is dropped.
    async fn serve(
        &self,
        mut lines: Lines,
        nick: &str,
        queue: &mut mpsc::Receiver<Job>,
        waiting: &mut VecDeque<Job>,
    ) -> Ended {
        let mut bucket = Bucket::new(self.settings.rate, self.settings.burst);
        // Written messages by the PING that confirms them, with when it went.
        let mut unconfirmed: VecDeque<(u64, Instant, Vec<Job>)> = VecDeque::new();
        let mut pings = 0u64;
        let mut written: Vec<Job> = Vec::new();
        let fail_all = |unconfirmed: &mut VecDeque<(u64, Instant, Vec<Job>)>, error: &IrcError| {
            for (_, _, jobs) in unconfirmed.drain(..) {
                for job in jobs {
                    let _ = job.done.send(Err(error.clone()));
                }
            }
        };
        let ended = loop {
            // Write what the bucket allows, then one PING for it.
            let mut wait = None;
            while let Some(job) = waiting.front() {
                if job.done.is_closed() {
                    waiting.pop_front();
                    continue;
                }
                // Each line is a message; the PING after them is one more.
                let cost = job.lines.len() + usize::from(written.is_empty());
                if let Err(until) = bucket.take(cost) {
                    wait = Some(until);
                    break;
                }
                let job = waiting.pop_front().expect("a front job");
                job.written.store(true, Ordering::Relaxed);
                for line in &job.lines {
                    if let Err(error) = lines.write(line).await {
                        let _ = job.done.send(Err(error.clone()));
                        fail_all(&mut unconfirmed, &error);
                        return Ended::Failed(error);
                    }
                }
                written.push(job);
            }
            if !written.is_empty() {
                pings += 1;
                if let Err(error) = lines.write(&format!("PING :herald-{pings}")).await {
                    for job in written.drain(..) {
                        let _ = job.done.send(Err(error.clone()));
                    }
                    fail_all(&mut unconfirmed, &error);
                    return Ended::Failed(error);
                }
                unconfirmed.push_back((pings, Instant::now(), std::mem::take(&mut written)));
            }
            // Take messages while the bucket could send them at once, so
            // that one PING confirms a run of them.
            let room = waiting.len() < self.settings.burst as usize;
            let oldest = unconfirmed
                .front()
                .map(|(_, at, _)| *at + self.settings.timeout);
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = lines.write("QUIT :channels reloaded").await;
                    break Ended::Stopped;
                }
                job = queue.recv(), if room => match job {
                    Some(job) => {
                        waiting.push_back(job);
                        while waiting.len() < self.settings.burst as usize {
                            match queue.try_recv() {
                                Ok(job) => waiting.push_back(job),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break Ended::Stopped,
                },
                () = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
                // A server that stops answering (a connection gone half-open)
                // is left for a new connection, and its messages tried again.
                () = tokio::time::sleep_until(oldest.unwrap_or_else(Instant::now).into()), if oldest.is_some() => {
                    break Ended::Failed(IrcError::NoPong(self.settings.timeout));
                }
                message = lines.read() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => break Ended::Failed(error),
                    };
                    match message.command.as_str() {
                        "PING" => {
                            if let Err(error) = lines.pong(&message).await {
                                break Ended::Failed(error);
                            }
                        }
                        "PONG" => {
                            let token = message.trailing().strip_prefix("herald-").and_then(|n| n.parse::<u64>().ok());
                            if let Some(token) = token {
                                while unconfirmed.front().is_some_and(|(n, _, _)| *n <= token) {
                                    let (_, _, jobs) = unconfirmed.pop_front().expect("a front batch");
                                    for job in jobs {
                                        let _ = job.done.send(Ok(()));
                                    }
                                }
                            }
                        }
                        "KICK" if message.params.get(1).map(String::as_str) == Some(nick) => {
                            let channel = message.params.first().cloned().unwrap_or_default();
                            warn!(channel = %self.name, irc_channel = %channel, reason = %message.trailing(), "kicked; joining again");
                            if let Err(error) = lines.write(&format!("JOIN {channel}")).await {
                                break Ended::Failed(error);
                            }
                        }
                        "ERROR" => break Ended::Failed(IrcError::Server(message.trailing().to_owned())),
                        _ => {}
                    }
                }
            }
        };
        let error = match &ended {
            Ended::Stopped => IrcError::Reloaded,
            Ended::Failed(error) => IrcError::Unconfirmed(Box::new(error.clone())),
        };
        fail_all(&mut unconfirmed, &error);
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let mut bucket = Bucket::new(10.0, 3);
        assert!(bucket.take(2).is_ok());
        assert!(bucket.take(1).is_ok());
        let wait = bucket.take(1).expect_err("empty");
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::from_millis(50),
            "{wait:?}"
        );
    }
}
