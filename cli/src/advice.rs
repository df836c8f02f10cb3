//! What to do about an error, for someone at a terminal: the flag or
//! variable to change, where the error alone names only the wire-level
//! cause. Also the parsers that refuse a bad `--server` or event id before
//! anything is sent.

use herald_client::Error;
use tonic::Code;
use uuid::Uuid;

/// Herald's gRPC port when none is given (`herald-logger --listen`'s default).
pub const DEFAULT_PORT: u16 = 50051;

/// A line of advice for `err`, met talking to the logger at `server`,
/// naming what to change; `None` when the error says it all.
pub fn advice(err: &Error, server: &str) -> Option<String> {
    let text = err.to_string();
    if text.contains("Connection refused") {
        return Some(format!(
            "is herald-logger running at {server}? (--server / HERALD_SERVER)"
        ));
    }
    match err.code() {
        Code::Unauthenticated if text.contains("missing credentials") => {
            Some("give an API key with --api-key or HERALD_API_KEY".to_owned())
        }
        Code::Unauthenticated if text.contains("unknown API key") => Some(
            "the logger has no such key: check --api-key or HERALD_API_KEY (the key itself, \
             as `herald keys new` printed it)"
                .to_owned(),
        ),
        Code::Unavailable | Code::Unknown | Code::Internal
            if NOT_GRPC.iter().any(|words| text.contains(words)) =>
        {
            Some(format!(
                "the server at {server} did not answer as a Herald gRPC server: give --server \
                 (HERALD_SERVER) the logger's gRPC address (port {DEFAULT_PORT} by default), \
                 not its console's, its metrics' or another service's; a TLS server needs https://"
            ))
        }
        _ => None,
    }
}

/// What a transport says when the peer is no HTTP/2 server: an HTTP/1.1
/// server, a database, or TLS answered to plain text.
const NOT_GRPC: [&str; 5] = [
    "broken pipe",
    "connection reset",
    "connection closed",
    "frame with invalid size",
    "stream closed",
];

/// Reads `--server`: `http://` or `https://` (nothing else), a host, and a
/// port (required with `http://`, whose default 80 is never Herald's);
/// `host:port` alone means `http://host:port`.
pub fn parse_server(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{text:?} is not a URL such as http://127.0.0.1:{DEFAULT_PORT}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        other => {
            return Err(format!(
                "{text:?}: the scheme must be http:// or https://, not {}://",
                other.unwrap_or_default()
            ));
        }
    }
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(format!("{text:?} names no host"));
    };
    if uri.port().is_none() && uri.scheme_str() == Some("http") {
        return Err(format!(
            "{text:?} has no port: Herald listens on {DEFAULT_PORT} by default \
             (http://{host}:{DEFAULT_PORT})"
        ));
    }
    Ok(url)
}

/// Reads an event id (a UUID); the error says so, with the text quoted
/// short and escaped as the logger quotes it.
pub fn parse_event_id(text: &str) -> Result<Uuid, String> {
    Uuid::try_parse(text.trim()).map_err(|_| {
        format!(
            "{} is not an event id: those are UUIDs, such as \
             01a2015d-c39f-709e-aac4-fd21aaa23b23",
            herald::error::quote(text)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_need_an_http_scheme_a_host_and_a_port() {
        for (given, url) in [
            ("http://127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("https://herald.example", "https://herald.example"),
            (" https://h:8443 ", "https://h:8443"),
        ] {
            assert_eq!(parse_server(given).as_deref(), Ok(url), "{given}");
        }
        for (given, words) in [
            (
                "htp://127.0.0.1:50051",
                "scheme must be http:// or https://",
            ),
            ("ftp://h:21", "not ftp://"),
            ("127.0.0.1", "has no port"),
            ("http://127.0.0.1", "http://127.0.0.1:50051"),
            ("http://:50051", "no host"),
            ("http://bad host:1", "not a URL"),
        ] {
            let err = parse_server(given).expect_err(given);
            assert!(err.contains(words), "{given}: {err}");
        }
    }

    #[test]
    fn advice_names_the_flag_to_change() {
        let connect = Error::Connect {
            url: "http://127.0.0.1:1".into(),
            reason: "transport error: tcp connect error: Connection refused (os error 111)".into(),
        };
        let rpc = |code, message: &str| Error::Rpc {
            code,
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
        };
        let cases = [
            (connect, "is herald-logger running at http://s:1? (--server"),
            (
                rpc(
                    Code::Unavailable,
                    "transport error: connection error: stream closed because of a broken pipe",
                ),
                "did not answer as a Herald gRPC server: give --server (HERALD_SERVER)",
            ),
            (
                rpc(
                    Code::Unauthenticated,
                    "missing credentials: send authorization: Bearer <key>",
                ),
                "--api-key or HERALD_API_KEY",
            ),
            (
                rpc(Code::Unauthenticated, "unknown API key"),
                "check --api-key",
            ),
        ];
        for (err, words) in cases {
            let said = advice(&err, "http://s:1").unwrap_or_default();
            assert!(said.contains(words), "{err}: {said}");
        }
        assert_eq!(advice(&rpc(Code::NotFound, "no event"), "http://s:1"), None);
    }

    #[test]
    fn an_event_id_that_is_no_uuid_is_named_so() {
        assert!(parse_event_id("01a2015d-c39f-709e-aac4-fd21aaa23b23").is_ok());
        let err = parse_event_id("nope").expect_err("not a UUID");
        assert!(
            err.contains("not an event id") && err.contains("UUID"),
            "{err}"
        );
    }
}
