//! The IRC protocol as the connection needs it: lines read (bounded) and
//! written with CR LF, and the server's lines parsed.

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

/// Longest line read from the server before the connection is dropped.
const MAX_READ: usize = 8 * 1024;

/// A byte stream to the server, plain or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One line from the server, parsed.
#[derive(Debug)]
pub(super) struct Message {
    prefix: Option<String>,
    pub(super) command: String,
    pub(super) params: Vec<String>,
}

impl Message {
    pub(super) fn parse(line: &str) -> Option<Self> {
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
    pub(super) fn trailing(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }

    /// The nick of the prefix (`nick!user@host`).
    pub(super) fn sender(&self) -> Option<&str> {
        self.prefix
            .as_deref()
            .map(|p| p.split('!').next().unwrap_or(p))
    }
}

/// Why an IRC connection failed, or a message on it did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum IrcError {
    /// The TCP connection could not be made.
    #[error("connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The server's name is not one TLS can check.
    #[error("server name: {0}")]
    ServerName(String),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Writing to the connection failed.
    #[error("write: {0}")]
    Write(String),
    /// Reading from it failed.
    #[error("read: {0}")]
    Read(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent ERROR.
    #[error("server: {0}")]
    Server(String),
    /// The server refused the registration or a join (the reply's code
    /// and text).
    #[error("{0}")]
    Refused(String),
    /// The server did not answer a PING in time.
    #[error("the server did not answer a PING within {}", humantime::format_duration(*.0))]
    NoPong(std::time::Duration),
    /// No welcome and joins within the setup time.
    #[error("no welcome and joins within {}", humantime::format_duration(*.0))]
    SetupTimeout(std::time::Duration),
    /// The connection was lost with the message written but unconfirmed.
    #[error("connection lost before the server confirmed: {0}")]
    Unconfirmed(Box<IrcError>),
    /// The channel was reloaded while the message waited.
    #[error("the channel was reloaded")]
    Reloaded,
    /// The connection task is gone.
    #[error("the connection task ended")]
    TaskEnded,
}

/// The connection as lines: read one at a time (bounded), written with CR LF.
pub(super) struct Lines {
    reader: FramedRead<tokio::io::ReadHalf<Box<dyn Stream>>, AnyDelimiterCodec>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
}

impl Lines {
    pub(super) fn new(stream: Box<dyn Stream>) -> Self {
        let (read, writer) = tokio::io::split(stream);
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_READ);
        Self {
            reader: FramedRead::new(read, codec),
            writer,
        }
    }

    pub(super) async fn write(&mut self, line: &str) -> Result<(), IrcError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| IrcError::Write(e.to_string()))
    }

    /// Answers the server's `PING`.
    pub(super) async fn pong(&mut self, ping: &Message) -> Result<(), IrcError> {
        self.write(&format!("PONG :{}", ping.trailing())).await
    }

    /// The next line that parses; an error when the connection ends.
    pub(super) async fn read(&mut self) -> Result<Message, IrcError> {
        loop {
            match self.reader.next().await {
                Some(Ok(bytes)) => {
                    if let Some(message) = Message::parse(&String::from_utf8_lossy(&bytes)) {
                        return Ok(message);
                    }
                }
                Some(Err(e)) => return Err(IrcError::Read(e.to_string())),
                None => return Err(IrcError::Closed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
