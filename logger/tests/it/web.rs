//! The end users' listener (`--web-listen`) over real sockets: Server-Sent
//! Events with tickets and `Last-Event-ID`, its refusals of hostile
//! browsers (tokens in URLs, reused or expired tickets, other users'
//! streams, foreign origins), and its limits.

use std::{net::SocketAddr, time::Duration};

use bytes::{Buf, Bytes};
use common::{Lines, Logger, console_keys_file, eventually, http_call};
use herald::EventStatus;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::common;

pub(crate) const SECRET: &str = "a-test-secret-of-enough-length";
pub(crate) const ORIGIN: &str = "http://app.example.test:8080";

/// A logger of [`web_logger`] (its keys' directory, to keep), where its
/// end users' listener is, and an admin's client of it.
pub(crate) async fn setup(
    extra: &[&str],
) -> (tempfile::TempDir, Logger, SocketAddr, herald_client::Client) {
    let (keys, logger) = web_logger(extra).await;
    let web = logger.web_addr.expect("web listener");
    let admin = logger.client_with_key("admin-key").await;
    (keys, logger, web, admin)
}

/// A logger with keys (`admin-key`, `reader-key`), user tokens and the end
/// users' listener allowing [`ORIGIN`], plus `extra` flags.
pub(crate) async fn web_logger(extra: &[&str]) -> (tempfile::TempDir, Logger) {
    let dir = tempfile::tempdir().expect("dir");
    let keys = console_keys_file(&dir);
    let mut args = vec![
        "--keys-file",
        &keys,
        "--user-token-secret",
        SECRET,
        "--cors-allow-origin",
        ORIGIN,
        "--heartbeat",
        "1s",
    ];
    args.extend_from_slice(extra);
    let logger = Logger::start_with_web(&args, Lines::default().sink()).await;
    (dir, logger)
}

pub(crate) fn token(user: &str) -> String {
    herald_client::tokens::user_token(SECRET, user, Duration::from_secs(600))
        .expect("token")
        .token
}

/// `POST /v1/tickets` with `authorization`: the status and the JSON answer.
pub(crate) async fn ticket_call(web: SocketAddr, authorization: &str) -> (u16, Value) {
    let (status, _, body) = http_call(
        web,
        "POST",
        "/v1/tickets",
        &[("Authorization", authorization)],
        "",
    )
    .await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

pub(crate) async fn ticket(web: SocketAddr, user: &str) -> String {
    let (status, body) = ticket_call(web, &format!("Bearer {}", token(user))).await;
    assert_eq!(status, 200, "{body}");
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// One event of a stream: its `id`, name and data (a comment has none).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sse {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) comment: Option<String>,
}

impl Sse {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("JSON data")
    }
}

/// An open event stream, read as it comes.
pub(crate) struct EventStream {
    pub(crate) head: http::response::Parts,
    pub(crate) body: hyper::body::Incoming,
    pub(crate) buffer: Vec<u8>,
}

impl EventStream {
    /// `GET path` with `headers` over HTTP/1.1; the response's head, and
    /// its body to read events from.
    pub(crate) async fn open(web: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let stream = tokio::net::TcpStream::connect(web).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = http::Request::get(path).header("host", web.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(
                request
                    .body(http_body_util::Empty::<Bytes>::new())
                    .expect("request"),
            )
            .await
            .expect("response");
        let (head, body) = response.into_parts();
        Self {
            head,
            body,
            buffer: Vec::new(),
        }
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.head
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The whole body of a refusal, as JSON.
    pub(crate) async fn refusal(self) -> (u16, Value) {
        let status = self.head.status.as_u16();
        let body = self.body.collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON error"))
    }

    /// The next event or comment, within 10 s; `None` once the stream ended.
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("utf-8 events");
                let mut sse = Sse::default();
                for line in text.lines().filter(|line| !line.is_empty()) {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => sse.id = Some(value.to_owned()),
                        "event" => sse.name = Some(value.to_owned()),
                        "data" => sse.data = Some(value.to_owned()),
                        "" => sse.comment = Some(value.to_owned()),
                        _ => {}
                    }
                }
                return Some(sse);
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .expect("a frame");
            if let Ok(mut data) = frame.into_data() {
                while data.has_remaining() {
                    let chunk = data.chunk().to_vec();
                    data.advance(chunk.len());
                    self.buffer.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The next notification (skipping heartbeats, other comments and
    /// unread counts).
    pub(crate) async fn notification(&mut self) -> Sse {
        loop {
            let sse = self.next().await.expect("the stream goes on");
            if sse.data.is_some() && sse.name.as_deref() != Some("unread") {
                assert_eq!(sse.name, None, "a notification is a plain message: {sse:?}");
                return sse;
            }
        }
    }
}

#[tokio::test]
async fn a_browser_stream_gets_its_users_notifications_and_resumes_after_its_last_id() {
    let (_keys, logger, web, admin) = setup(&[]).await;
    let ann_ticket = ticket(web, "ann").await;
    let mut stream = EventStream::open(
        web,
        &format!("/v1/notifications?ticket={ann_ticket}"),
        &[("Origin", ORIGIN)],
    )
    .await;
    assert_eq!(stream.head.status, 200);
    assert_eq!(
        stream.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert!(stream.header("cache-control").contains("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), "no");
    assert_eq!(stream.header("access-control-allow-origin"), ORIGIN);
    let retry = stream.next().await.expect("opening");
    assert_eq!(retry.id, None);
    let joined = stream.next().await.expect("the stream's start");
    assert_eq!(joined.comment.as_deref(), Some("heartbeat"), "{joined:?}");
    assert!(joined.id.is_some(), "a position from the start");

    let ann1 = admin.create_event("ann", "first").await.expect("create");
    admin
        .create_event("bob", "not ann's")
        .await
        .expect("create");
    let ann2 = admin.create_event("ann", "second").await.expect("create");
    let first = stream.notification().await;
    assert_eq!(first.json()["event_id"], ann1.id.to_string());
    assert_eq!(first.json()["user_id"], "ann");
    assert_eq!(first.json()["status"], "PROCESSED");
    let second = stream.notification().await;
    assert_eq!(second.json()["event_id"], ann2.id.to_string());
    let last_id = second.id.clone().expect("an id");
    drop(stream);

    // Gone for a while: two more notifications are sent meanwhile.
    let ann3 = admin.create_event("ann", "third").await.expect("create");
    let ann4 = admin.create_event("ann", "fourth").await.expect("create");
    eventually(Duration::from_secs(10), "both processed", || async {
        let a = admin.get_event(ann3.id).await.ok()?.status;
        let b = admin.get_event(ann4.id).await.ok()?.status;
        (a == EventStatus::Processed && b == EventStatus::Processed).then_some(())
    })
    .await;
    // The used ticket opens nothing, as EventSource's own reconnection
    // would send it; a fresh one (or the token in a header) resumes.
    let (status, refusal) = EventStream::open(
        web,
        &format!("/v1/notifications?ticket={ann_ticket}"),
        &[("Last-Event-ID", &last_id)],
    )
    .await
    .refusal()
    .await;
    assert_eq!(status, 401, "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .expect("message")
            .contains("already used")
    );
    let bearer = format!("Bearer {}", token("ann"));
    let mut resumed = EventStream::open(
        web,
        "/v1/notifications",
        &[("Authorization", &bearer), ("Last-Event-ID", &last_id)],
    )
    .await;
    assert_eq!(resumed.head.status, 200);
    let third = resumed.notification().await;
    assert_eq!(
        third.json()["event_id"],
        ann3.id.to_string(),
        "no repeat of the second"
    );
    let fourth = resumed.notification().await;
    assert_eq!(fourth.json()["event_id"], ann4.id.to_string());
    // And live again after the catch-up.
    let ann5 = admin.create_event("ann", "fifth").await.expect("create");
    assert_eq!(
        resumed.notification().await.json()["event_id"],
        ann5.id.to_string()
    );

    // The same resume with a fresh ticket and the position in the query,
    // as a page that reopens its EventSource does.
    let fresh = ticket(web, "ann").await;
    let mut reopened = EventStream::open(
        web,
        &format!(
            "/v1/notifications?ticket={fresh}&after_cursor={}",
            form_urlencoded::byte_serialize(last_id.as_bytes()).collect::<String>()
        ),
        &[],
    )
    .await;
    assert_eq!(
        reopened.notification().await.json()["event_id"],
        ann3.id.to_string()
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn hostile_browsers_are_refused_with_the_field_or_reason() {
    let (_keys, logger) = web_logger(&["--ticket-ttl", "1s"]).await;
    let web = logger.web_addr.expect("web listener");
    let ann = format!("Bearer {}", token("ann"));
    let refused = |path: String, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        EventStream::open(web, &path, &headers)
            .await
            .refusal()
            .await
    };

    // A long-lived token never goes in a URL.
    for key in ["access_token", "token"] {
        let (status, body) =
            refused(format!("/v1/notifications?{key}={}", token("ann")), vec![]).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(key)), "{body}");
    }
    // A ticket opens its own user's stream only; the refusal spends nothing.
    let anns = ticket(web, "ann").await;
    let (status, body) = refused(
        format!("/v1/notifications?ticket={anns}&user_id=bob"),
        vec![],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let own = EventStream::open(web, &format!("/v1/notifications?ticket={anns}"), &[]).await;
    assert_eq!(
        own.head.status, 200,
        "the refused request left the ticket usable"
    );
    drop(own);
    let (status, _) = refused(
        "/v1/notifications?user_id=bob".into(),
        vec![("Authorization", ann.clone())],
    )
    .await;
    assert_eq!(status, 403);
    // Expired, forged, garbage tickets; no credentials; a bad token.
    let expiring = ticket(web, "ann").await;
    let foreign =
        herald_logger::web::Tickets::new("another secret, just as long", Duration::from_secs(30))
            .issue("ann")
            .expect("issued")
            .ticket;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (ticket, why) in [
        (expiring.as_str(), "expired"),
        (foreign.as_str(), "not issued"),
        ("junk", "not a ticket"),
    ] {
        let (status, body) = refused(format!("/v1/notifications?ticket={ticket}"), vec![]).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["message"].as_str().expect("message").contains(why),
            "{body}"
        );
    }
    let (status, _) = refused("/v1/notifications?user_id=ann".into(), vec![]).await;
    assert_eq!(status, 401);
    let (status, _) = ticket_call(web, "Bearer not-a-token").await;
    assert_eq!(status, 401);
    // Tickets are for users' tokens; an API key streams with its header.
    let (status, body) = ticket_call(web, "Bearer reader-key").await;
    assert_eq!(status, 409, "{body}");
    let reader = EventStream::open(
        web,
        "/v1/notifications?user_id=bob",
        &[("Authorization", "Bearer reader-key")],
    )
    .await;
    assert_eq!(reader.head.status, 200);
    drop(reader);
    // Malformed requests name their field.
    for (path, last, field) in [
        ("/v1/notifications?statuses=SENT", None, "statuses"),
        ("/v1/notifications?colour=red", None, "colour"),
        ("/v1/notifications", Some("not-a-cursor"), "after_cursor"),
    ] {
        let mut headers = vec![("Authorization", ann.clone())];
        if let Some(last) = last {
            headers.push(("Last-Event-ID", last.to_owned()));
        }
        let (status, body) = refused(path.into(), headers).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{path}: {body}"
        );
    }
    let many = (0..500)
        .map(|i| format!("categories=c{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let (status, body) = refused(
        format!("/v1/notifications?{many}"),
        vec![("Authorization", ann.clone())],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .starts_with("categories"),
        "{body}"
    );

    // Origins: the listed one gets CORS answers, any other 403, preflights too.
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-grpc-web,authorization",
            ),
        ];
        http_call(
            web,
            "OPTIONS",
            "/herald.v1.Notifier/Subscribe",
            &headers,
            "",
        )
        .await
    };
    let (status, head, _) = preflight(ORIGIN).await;
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{head}"
    );
    assert!(head.contains("x-grpc-web"), "{head}");
    let (status, head, body) = preflight("https://evil.example").await;
    assert_eq!(status, 403, "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin")
    );
    assert!(body.contains("--cors-allow-origin"), "{body}");
    let (status, _) = refused(
        format!("/v1/notifications?ticket={}", ticket(web, "ann").await),
        vec![("Origin", "https://evil.example".into())],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, body) = http_call(web, "GET", "/nothing/here", &[], "").await;
    assert_eq!(status, 404, "{body}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_browser_that_stops_reading_is_cut_off_and_told() {
    let (_keys, logger, web, admin) = setup(&["--max-buffered-bytes-per-client", "65536"]).await;
    let mut stream = EventStream::open(
        web,
        "/v1/notifications?user_id=ann&statuses=PENDING",
        &[("Authorization", "Bearer reader-key")],
    )
    .await;
    assert_eq!(stream.head.status, 200);
    stream.next().await.expect("opening");
    stream.next().await.expect("the stream's start");
    // About 1.6 MB for a reader that reads nothing meanwhile: more than the
    // sockets hold and the client's 64 KiB budget.
    for _ in 0..8 {
        let events = (0..100)
            .map(|_| herald::domain::EventInput {
                user_id: "ann".into(),
                description: "d".repeat(2000),
                ..Default::default()
            })
            .collect();
        admin.create_many(events).await.expect("created");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut notifications = 0;
    let lagged = loop {
        let sse = stream
            .next()
            .await
            .expect("the stream ends with an explanation");
        match sse.name.as_deref() {
            None if sse.data.is_some() => notifications += 1,
            None | Some("unread") => {}
            Some("lagged") => break sse,
            Some(other) => panic!("unexpected {other}: {sse:?}"),
        }
    };
    assert!(
        notifications < 800,
        "cut off before the end: {notifications}"
    );
    assert!(lagged.id.is_some(), "a position to resume after");
    let end = stream.next().await.expect("the reason");
    assert_eq!(end.name.as_deref(), Some("end"));
    assert_eq!(end.json()["code"], "RESOURCE_EXHAUSTED");
    assert!(stream.next().await.is_none(), "and the stream is over");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// `method path` on the end users' listener as `authorization`, with a
/// JSON `body` (if any): the status and the JSON answer.
pub(crate) async fn json_call(
    web: SocketAddr,
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", authorization)];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, head, text) = http_call(web, method, path, &headers, &body).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {head}\n{text}"));
    (status, value)
}

#[tokio::test]
async fn browser_streams_count_against_the_users_stream_limit_and_bodies_have_a_deadline() {
    let (_keys, logger) =
        web_logger(&["--max-streams-per-client", "2", "--body-timeout", "1s"]).await;
    let web = logger.web_addr.expect("web listener");
    let ann = format!("Bearer {}", token("ann"));
    // Two streams of one user, over SSE and a ticket: the third is refused.
    let first = EventStream::open(web, "/v1/notifications", &[("Authorization", &ann)]).await;
    let second = EventStream::open(
        web,
        &format!("/v1/notifications?ticket={}", ticket(web, "ann").await),
        &[],
    )
    .await;
    assert_eq!(
        (first.head.status.as_u16(), second.head.status.as_u16()),
        (200, 200)
    );
    let (status, err) = EventStream::open(web, "/v1/notifications", &[("Authorization", &ann)])
        .await
        .refusal()
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (429, Some("RESOURCE_EXHAUSTED")),
        "{err}"
    );
    // Another user is not held back by ann's streams.
    let bob = format!("Bearer {}", token("bob"));
    let other = EventStream::open(web, "/v1/notifications", &[("Authorization", &bob)]).await;
    assert_eq!(other.head.status, 200);
    drop((first, second, other));

    // A body promised and never finished is cut off.
    let head = format!(
        "POST /v1/inbox/read HTTP/1.1\r\nhost: {web}\r\nauthorization: {ann}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"all\":"
    );
    let text = common::unfinished_body(web, &head).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("--body-timeout"), "{text}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn random_queries_and_bytes_get_client_errors_never_server_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_keys, logger) = web_logger(&[]).await;
    let web = logger.web_addr.expect("web listener");
    let ann = format!("Bearer {}", token("ann"));
    // A fixed-seed generator: the same cases on every run.
    let mut seed: u64 = 0x5eed_1234_abcd_0042;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let keys = [
        "user_id",
        "categories",
        "types",
        "statuses",
        "session_id",
        "after_cursor",
        "ticket",
        "unread_only",
        "page_size",
        "page_token",
        "x",
    ];
    let values = [
        "",
        "ann",
        "bob",
        "PROCESSED",
        "-1",
        "99999999999",
        "%00",
        "%ff%fe",
        "2:16:0:,,",
        "*",
        "a%0Ab",
        "true",
    ];
    for case in 0..300 {
        let mut query = String::new();
        for _ in 0..next() % 5 {
            query.push_str(&format!(
                "{}={}&",
                keys[next() % keys.len()],
                values[next() % values.len()]
            ));
        }
        let path = ["/v1/notifications", "/v1/inbox", "/v1/inbox/unread_count"][case % 3];
        let full = format!("{path}?{query}");
        let (status, head) = if path == "/v1/notifications" {
            let stream = EventStream::open(web, &full, &[("Authorization", &ann)]).await;
            (stream.head.status.as_u16(), format!("{:?}", stream.head))
        } else {
            let (status, head, _) =
                http_call(web, "GET", &full, &[("Authorization", &ann)], "").await;
            (status, head)
        };
        assert!(
            status == 200 || (400..500).contains(&status),
            "{full}: {head}"
        );
    }
    // Bytes that are not HTTP: the connection is closed, the server goes on.
    for junk in [
        &b"\x00\x01\x02\x03garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05][..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(web).await.expect("connect");
        stream.write_all(junk).await.expect("write");
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 500 "),
            "{answer:?}"
        );
    }
    let (status, _) = json_call(web, "GET", "/v1/inbox/unread_count", &ann, None).await;
    assert_eq!(status, 200, "still serving");
    logger.stop_within(Duration::from_secs(10)).await;
}
