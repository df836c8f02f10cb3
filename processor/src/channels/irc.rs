//! IRC: each event a message (from a template) to one or more IRC channels.
//!
//! One task per channel keeps a connection: it registers (`NICK`/`USER`,
//! another nick while the one asked for is taken), joins, and then writes
//! the messages it is handed, no faster than the configured rate (a token
//! bucket), answering the server's `PING`s. A message counts as delivered
//! once the server has answered a `PING` sent after it: a server handles a
//! client's lines in order, so its `PONG` means the message was passed on.
//! When the connection drops (a server restart, say), the messages not yet
//! confirmed fail (the worker tries them again) and the task reconnects
//! with a growing wait, and joins again; a `KICK` is answered with a new
//! `JOIN`. Text never carries a line break (control characters become
//! spaces), and a long message is cut so that the line as the server passes
//! it on stays within IRC's 512 bytes.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures_util::StreamExt;
use herald::{Event, error::truncate};
use herald_runtime::process::Backoff;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
};
use tokio_util::{
    codec::{AnyDelimiterCodec, FramedRead},
    sync::{CancellationToken, DropGuard},
};
use tracing::{info, warn};

use super::{Channel, Failure, Sent, file::IrcSettings};

/// IRC's longest line, CR LF included.
const MAX_LINE: usize = 512;
/// Room kept for the `:nick!user@host ` prefix a server adds when it
/// passes a message on.
const PREFIX_ROOM: usize = 100;
/// Longest line read from the server before the connection is dropped.
const MAX_READ: usize = 8 * 1024;
/// Messages waiting for the connection, at most.
const QUEUE: usize = 1024;
/// Longest wait to connect, register and join.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `nick` is a nickname IRC takes (RFC 2812, at most 9 characters).
pub fn valid_nick(nick: &str) -> bool {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    nick.len() <= 9
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || special(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// Whether `name` is a channel IRC takes: `#`, `&`, `+` or `!` then no
/// space, comma, bell or control character, 50 bytes at most.
pub fn valid_channel(name: &str) -> bool {
    name.len() > 1
        && name.len() <= 50
        && name.starts_with(['#', '&', '+', '!'])
        && !name.chars().any(|c| c == ' ' || c == ',' || c.is_control())
}

/// One message to write: its lines, and who waits for them.
struct Job {
    lines: Vec<String>,
    done: oneshot::Sender<Result<(), String>>,
    /// Set once its lines are being written: a message that times out
    /// before that was never sent.
    written: Arc<AtomicBool>,
}

/// An IRC channel: the handle of its connection task, which stops when the
/// channel is dropped.
pub struct IrcChannel {
    settings: IrcSettings,
    jobs: mpsc::Sender<Job>,
    _stop: DropGuard,
}

impl IrcChannel {
    /// Starts the connection task of channel `name`.
    pub fn start(name: &str, settings: &IrcSettings) -> Result<Self, String> {
        let tls = if settings.tls {
            Some(super::client_tls(settings.tls_ca.as_deref())?)
        } else {
            None
        };
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let connection = Connection {
            name: name.to_owned(),
            settings: settings.clone(),
            tls,
            stop: stop.clone(),
        };
        tokio::spawn(connection.run(queue));
        Ok(Self {
            settings: settings.clone(),
            jobs,
            _stop: stop.drop_guard(),
        })
    }

    /// The lines that carry `event`, one per IRC channel.
    fn lines(&self, event: &Event) -> Vec<String> {
        let text = render(&self.settings.template, event);
        self.settings
            .channels
            .iter()
            .map(|channel| {
                let head = format!("PRIVMSG {channel} :");
                let room = MAX_LINE - 2 - PREFIX_ROOM - head.len();
                format!("{head}{}", truncate(&text, room))
            })
            .collect()
    }
}

/// The template with `{field}`s replaced by the event's values, every
/// control character (line breaks first) a space.
pub fn render(template: &str, event: &Event) -> String {
    let id = event.id.to_string();
    let fields = [
        ("{event_id}", id.as_str()),
        ("{user_id}", &event.user_id),
        ("{description}", &event.description),
        ("{category}", &event.category),
        ("{type}", &event.event_type),
        ("{session_id}", &event.session_id),
        ("{status}", event.status.as_str()),
    ];
    let mut out = String::with_capacity(template.len() + event.description.len());
    let mut rest = template;
    'outer: while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        for (name, value) in fields {
            if rest[start..].starts_with(name) {
                out.push_str(value);
                rest = &rest[start + name.len()..];
                continue 'outer;
            }
        }
        out.push('{');
        rest = &rest[start + 1..];
    }
    out.push_str(rest);
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[async_trait]
impl Channel for IrcChannel {
    async fn send(&self, event: &Event) -> Result<Sent, Failure> {
        let (done, confirmed) = oneshot::channel();
        let written = Arc::new(AtomicBool::new(false));
        let job = Job {
            lines: self.lines(event),
            done,
            written: written.clone(),
        };
        let timeout = self.settings.timeout;
        let waited = tokio::time::timeout(timeout, async {
            self.jobs
                .send(job)
                .await
                .map_err(|_| "the connection task ended".to_owned())?;
            confirmed
                .await
                .map_err(|_| "the connection task ended".to_owned())?
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(Sent::default()),
            Ok(Err(error)) => Err(Failure::retry("disconnected", error)),
            // Never sent (the connection is down, or the rate holds back
            // the messages before it): no attempt, the event comes back later.
            Err(_) if !written.load(Ordering::Relaxed) => Err(Failure::later(
                "busy",
                format!(
                    "not sent within {}: the connection is down or the messages before it wait for the rate",
                    humantime::format_duration(timeout)
                ),
            )),
            Err(_) => Err(Failure::retry(
                "timeout",
                format!(
                    "sent but not confirmed by the server within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    fn kind(&self) -> &'static str {
        "irc"
    }

    fn target(&self) -> String {
        let scheme = if self.settings.tls { "ircs" } else { "irc" };
        format!(
            "{scheme}://{}/{}",
            self.settings.server,
            self.settings.channels.join(",")
        )
    }
}

/// A byte stream to the server, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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
struct Connection {
    name: String,
    settings: IrcSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: CancellationToken,
}

/// Why a connection ended.
enum Ended {
    /// The channel was dropped.
    Stopped,
    /// The connection failed; try again.
    Failed(String),
}

impl Connection {
    /// Connects, serves, and reconnects until stopped.
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
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
                Err(_) => Ended::Failed("no welcome and joins within 30s".into()),
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
    async fn connect(&self) -> Result<(Lines, String), String> {
        let tcp = TcpStream::connect(&self.settings.server)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.settings.server))?;
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
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
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
                "ERROR" => return Err(format!("server: {}", message.trailing())),
                code if code.starts_with(['4', '5']) && code.len() == 3 => {
                    return Err(format!(
                        "registration refused: {code} {}",
                        message.trailing()
                    ));
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
                    return Err(format!(
                        "cannot join: {} {}",
                        message.command,
                        message.params.join(" ")
                    ));
                }
                "ERROR" => return Err(format!("server: {}", message.trailing())),
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
        // Written messages by the PING that confirms them.
        let mut unconfirmed: VecDeque<(u64, Vec<Job>)> = VecDeque::new();
        let mut pings = 0u64;
        let mut written: Vec<Job> = Vec::new();
        let fail_all = |unconfirmed: &mut VecDeque<(u64, Vec<Job>)>, error: &str| {
            for (_, jobs) in unconfirmed.drain(..) {
                for job in jobs {
                    let _ = job.done.send(Err(error.to_owned()));
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
                unconfirmed.push_back((pings, std::mem::take(&mut written)));
            }
            // Take messages while the bucket could send them at once, so
            // that one PING confirms a run of them.
            let room = waiting.len() < self.settings.burst as usize;
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
                                while unconfirmed.front().is_some_and(|(n, _)| *n <= token) {
                                    let (_, jobs) = unconfirmed.pop_front().expect("a front batch");
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
                        "ERROR" => break Ended::Failed(format!("server: {}", message.trailing())),
                        _ => {}
                    }
                }
            }
        };
        let error = match &ended {
            Ended::Stopped => "the channel was reloaded".to_owned(),
            Ended::Failed(error) => format!("connection lost before the server confirmed: {error}"),
        };
        fail_all(&mut unconfirmed, &error);
        ended
    }
}

/// One line from the server, parsed.
#[derive(Debug)]
struct Message {
    prefix: Option<String>,
    command: String,
    params: Vec<String>,
}

impl Message {
    fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (prefix, rest) = match line.strip_prefix(':') {
            Some(rest) => {
                let (prefix, rest) = rest.split_once(' ')?;
                (Some(prefix.to_owned()), rest)
            }
            None => (None, line),
        };
        let (middle, trailing) = match rest.split_once(" :") {
            Some((middle, trailing)) => (middle, Some(trailing)),
            None => (rest, None),
        };
        let mut words = middle.split(' ').filter(|w| !w.is_empty());
        let command = words.next()?.to_ascii_uppercase();
        let mut params: Vec<String> = words.map(str::to_owned).collect();
        params.extend(trailing.map(str::to_owned));
        Some(Self {
            prefix,
            command,
            params,
        })
    }

    /// The last parameter.
    fn trailing(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }

    /// The nick of the prefix (`nick!user@host`).
    fn sender(&self) -> Option<&str> {
        self.prefix
            .as_deref()
            .map(|p| p.split('!').next().unwrap_or(p))
    }
}

/// The connection as lines: read one at a time (bounded), written with CR LF.
struct Lines {
    reader: FramedRead<tokio::io::ReadHalf<Box<dyn Stream>>, AnyDelimiterCodec>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
}

impl Lines {
    fn new(stream: Box<dyn Stream>) -> Self {
        let (read, writer) = tokio::io::split(stream);
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_READ);
        Self {
            reader: FramedRead::new(read, codec),
            writer,
        }
    }

    async fn write(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Answers the server's `PING`.
    async fn pong(&mut self, ping: &Message) -> Result<(), String> {
        self.write(&format!("PONG :{}", ping.trailing())).await
    }

    /// The next line that parses; an error when the connection ends.
    async fn read(&mut self) -> Result<Message, String> {
        loop {
            match self.reader.next().await {
                Some(Ok(bytes)) => {
                    if let Some(message) = Message::parse(&String::from_utf8_lossy(&bytes)) {
                        return Ok(message);
                    }
                }
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("the server closed the connection".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald::{NewEvent, partition::Partitions};

    use super::*;

    #[test]
    fn messages_are_one_line_within_the_limit() {
        let mut event = NewEvent::new("ann", "x")
            .expect("valid")
            .into_event(Partitions::default());
        event.description = format!("two\r\nlines\0and {}", "é".repeat(400));
        let text = render("{user_id} {type}: {description} {unknown}", &event);
        assert!(text.starts_with("ann : two  lines and éé"), "{text}");
        assert!(text.ends_with(" {unknown}"));
        let line = format!(
            "PRIVMSG #ops :{}",
            truncate(&text, MAX_LINE - 2 - PREFIX_ROOM - 14)
        );
        assert!(line.len() <= MAX_LINE - 2 - PREFIX_ROOM, "{}", line.len());
        assert!(line.ends_with('…'));
        assert!(!line.contains(['\r', '\n', '\0']));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn server_lines_parse() {
        let m = Message::parse(":herald!~h@host JOIN :#ops\r\n").expect("parse");
        assert_eq!(
            (m.sender(), m.command.as_str(), m.trailing()),
            (Some("herald"), "JOIN", "#ops")
        );
        let m = Message::parse("PING :irc.local").expect("parse");
        assert_eq!((m.command.as_str(), m.trailing()), ("PING", "irc.local"));
        let m = Message::parse(":srv KICK #ops herald :bye").expect("parse");
        assert_eq!(m.params, ["#ops", "herald", "bye"]);
        assert!(
            valid_nick("herald")
                && valid_nick("h[1]")
                && !valid_nick("1abc")
                && !valid_nick("toolongnick")
        );
        assert!(valid_channel("#ops") && !valid_channel("ops") && !valid_channel("#a b"));
    }

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
