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

    pub(super) async fn write(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Answers the server's `PING`.
    pub(super) async fn pong(&mut self, ping: &Message) -> Result<(), String> {
        self.write(&format!("PONG :{}", ping.trailing())).await
    }

    /// The next line that parses; an error when the connection ends.
    pub(super) async fn read(&mut self) -> Result<Message, String> {
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
