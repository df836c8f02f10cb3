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
//!
//! Here: the channel, its messages (template, cut) and what names IRC
//! takes; `connection` is the task that keeps the connection; `protocol`
//! reads and writes the server's lines.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use herald::{Event, domain::Recipient, error::truncate};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

mod connection;
mod protocol;

use super::{Channel, ChannelKind, Failure, Reason, Sent, SettingError, settings::IrcSettings};
use connection::Connection;
use protocol::IrcError;

/// IRC's longest line, CR LF included.
const MAX_LINE: usize = 512;
/// Room kept for the `:nick!user@host ` prefix a server adds when it
/// passes a message on.
const PREFIX_ROOM: usize = 100;
/// Messages waiting for the connection, at most.
const QUEUE: usize = 1024;

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
    done: oneshot::Sender<Result<(), IrcError>>,
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
    pub fn start(name: &str, settings: &IrcSettings) -> Result<Self, SettingError> {
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
    async fn send(&self, event: &Event, _: Option<&Recipient>) -> Result<Sent, Failure> {
        let (done, confirmed) = oneshot::channel();
        let written = Arc::new(AtomicBool::new(false));
        let job = Job {
            lines: self.lines(event),
            done,
            written: written.clone(),
        };
        let timeout = self.settings.timeout;
        let waited = tokio::time::timeout(timeout, async {
            self.jobs.send(job).await.map_err(|_| IrcError::TaskEnded)?;
            confirmed.await.map_err(|_| IrcError::TaskEnded)?
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(Sent::default()),
            Ok(Err(error)) => Err(Failure::retry(Reason::Disconnected, error.to_string())),
            // Never sent (the connection is down, or the rate holds back
            // the messages before it): no attempt, the event comes back later.
            Err(_) if !written.load(Ordering::Relaxed) => Err(Failure::later(
                Reason::Busy,
                format!(
                    "not sent within {}: the connection is down or the messages before it wait for the rate",
                    humantime::format_duration(timeout)
                ),
            )),
            Err(_) => Err(Failure::retry(
                Reason::Timeout,
                format!(
                    "sent but not confirmed by the server within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Irc
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

#[cfg(test)]
mod tests {
    use herald::{NewEvent, partition::Partitions};

    use super::*;

    #[test]
    fn messages_are_one_line_within_the_limit_to_valid_names() {
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
        assert!(
            valid_nick("herald")
                && valid_nick("h[1]")
                && !valid_nick("1abc")
                && !valid_nick("toolongnick")
        );
        assert!(valid_channel("#ops") && !valid_channel("ops") && !valid_channel("#a b"));
    }
}
