//! The second hardening round (issue 34), as a hostile but fair client or
//! operator tries it over real sockets: an open console beyond loopback,
//! look-alike identifiers, secrets in what readers and logs see, failed
//! authentications, the metrics endpoint's hosts, the console's feed before
//! authentication, and methods the contract does not have.

use std::time::Duration;

use common::{Lines, Logger, Scrape, console_keys_file, eventually, http_call};
use herald::domain::EventInput;
use herald_storage::testing::free_port;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::common;

#[tokio::test]
async fn an_open_console_beyond_loopback_stops_the_start_naming_both_flags() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let console = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let config = herald_logger::Config::from_args(&[]);
    let err = herald_logger::run_with(
        herald_logger::Listeners {
            console: Some(console),
            ..herald_logger::Listeners::grpc(listener)
        },
        config,
        Lines::default().sink(),
        CancellationToken::new(),
    )
    .await
    .expect_err("an open console on 0.0.0.0 must not start");
    let message = format!("{err:#}");
    assert!(
        message.contains("--console-listen") && message.contains("--keys-file"),
        "{message}"
    );

    // On loopback it starts, and answers only loopback hosts' names.
    let logger = Logger::start_with_console(&[], Lines::default().sink()).await;
    let console = logger.console_addr.expect("console");
    let (status, _) = common::http_get(console, "/api/session").await;
    assert_eq!(status, 200);
    for host in ["10.1.2.3:8088", "evil.example", "0.0.0.0"] {
        let (status, _, body) =
            http_call(console, "GET", "/api/events", &[("Host", host)], "").await;
        assert_eq!(status, 421, "{host}: {body}");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_open_web_listener_beyond_loopback_stops_the_start_naming_both_flags() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let web = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = herald_logger::run_with(
        herald_logger::Listeners {
            web: Some(web),
            ..herald_logger::Listeners::grpc(listener)
        },
        herald_logger::Config::from_args(&[]),
        Lines::default().sink(),
        CancellationToken::new(),
    )
    .await
    .expect_err("an open web listener on 0.0.0.0 must not start");
    let message = format!("{err:#}");
    assert!(
        message.contains("--web-listen") && message.contains("--keys-file"),
        "{message}"
    );
}

#[tokio::test]
async fn identifiers_with_invisible_characters_are_refused_naming_the_field() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let cases = [
        ("user_id", "al\u{200B}ice"),
        ("user_id", "\u{FEFF}alice"),
        ("category", "billing\u{2060}"),
        ("type", "order\u{00AD}.paid"),
        ("session_id", "s\u{200C}1"),
        ("request_id", "r\u{061C}1"),
        ("user_id", "bob\u{FFF9}"),
    ];
    for (field, value) in cases {
        let mut input = EventInput {
            user_id: "alice".into(),
            description: "hello".into(),
            ..EventInput::default()
        };
        match field {
            "user_id" => input.user_id = value.into(),
            "category" => input.category = value.into(),
            "type" => input.event_type = value.into(),
            "session_id" => input.session_id = value.into(),
            _ => input.request_id = value.into(),
        }
        let err = client.create(input).await.expect_err("invisible character");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field} {value:?}: {err}"
        );
        let fields: Vec<_> = err.violations().iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, [field], "{value:?}");
        assert!(err.to_string().contains("invisible"), "{err}");
    }
    // A subscription filter is an identifier too.
    let err = client
        .subscribe_with(herald_client::SubscribeOptions::user("al\u{200B}ice"))
        .await
        .err()
        .expect("filter refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // Nothing was stored; a description may still hold a joiner (emoji).
    assert_eq!(client.stats().await.expect("stats").total_events, 0);
    client
        .create_event("alice", "👩\u{200D}💻 shipped")
        .await
        .expect("a description keeps its joiners");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_are_shown_without_their_credentials() {
    // Nothing listens there: the attempt fails, and is recorded with its target.
    let url = format!(
        "http://hook-user:hook-pass@127.0.0.1:{}/in?token=s3cret&x=1",
        free_port()
    );
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("channels.toml");
    std::fs::write(
        &path,
        format!(
            "[channels.hooks]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"1s\"\n[[routes]]\nchannels = [\"hooks\"]\n"
        ),
    )
    .expect("write");
    let logger = Logger::start(
        &["--channels", path.to_str().expect("utf-8")],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let event = client.create_event("ann", "hi").await.expect("create");
    let attempts = eventually(Duration::from_secs(30), "a failed attempt", || async {
        let attempts = client.delivery_attempts(event.id).await.ok()?;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    let a = &attempts[0];
    assert!(!a.succeeded, "{a:?}");
    assert!(
        a.target.starts_with("http://***@127.0.0.1:") && a.target.ends_with("/in?token=***&x=***"),
        "{a:?}"
    );
    let shown = format!("{a:?}");
    for secret in ["hook-user", "hook-pass", "s3cret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

/// A keys file of one writer (`writer-key`, events:write only).
fn writer_keys(dir: &tempfile::TempDir) -> String {
    let keys = serde_json::json!({"keys": [{
        "client_id": "writer",
        "key_sha256": herald::auth::hash_key("writer-key"),
        "scopes": ["events:write"],
    }]});
    let path = dir.path().join("writer-keys.json");
    std::fs::write(&path, keys.to_string()).expect("write keys");
    path.to_str().expect("utf-8").to_owned()
}

#[tokio::test]
async fn a_method_the_contract_lacks_is_refused_whatever_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = writer_keys(&dir);
    let logger = Logger::start(&["--keys-file", &keys], Lines::default().sink()).await;
    let mut grpc = tonic::client::Grpc::new(logger.channel().await);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(herald::pb::GetEventRequest::default());
    request.metadata_mut().insert(
        "authorization",
        "Bearer writer-key".parse().expect("header"),
    );
    // Today's read-only fallback would have answered PERMISSION_DENIED
    // (events:read): a method that is not in the contract is no read.
    let answer: Result<tonic::Response<herald::pb::GetEventResponse>, _> = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static("/herald.v1.EventLogger/DeleteEvents"),
            herald::codec::Codec::default(),
        )
        .await;
    let status = answer.expect_err("unknown method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn failed_authentications_are_limited_per_peer_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = writer_keys(&dir);
    let logger = Logger::start(&["--keys-file", &keys], Lines::default().sink()).await;
    let guesser = logger.client_with_key("guess-0").await;
    let mut refused = None;
    for i in 0..200 {
        let guesser = guesser
            .clone()
            .with_api_key(&format!("guess-{i}"))
            .expect("key");
        match guesser.create_event("u", "x").await {
            Err(err) if err.code() == Code::Unauthenticated => {}
            Err(err) if err.code() == Code::ResourceExhausted => {
                refused = Some((i, err));
                break;
            }
            other => panic!("a wrong key got {other:?}"),
        }
    }
    let (after, err) = refused.expect("guesses are limited");
    assert!(after >= 10, "refused after {after} failures: {err}");
    assert!(err.to_string().contains("failed authentications"), "{err}");
    // While the peer is over its limit, even a right key waits (a guess
    // must not be told whether it was right).
    let writer = logger.client_with_key("writer-key").await;
    let err = writer.create_event("u", "x").await.expect_err("locked out");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let scrape = Scrape::of(logger.metrics_addr).await;
    assert!(scrape.get("herald_auth_failures_total", &[("outcome", "failed")]) >= after as f64);
    assert!(scrape.get("herald_auth_failures_total", &[("outcome", "refused")]) >= 2.0);
    // Health checks are never limited.
    let health = logger.client().await.health("").await.expect("health");
    assert_eq!(health, herald_client::Health::Serving);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn metrics_on_loopback_answer_loopback_hosts_only() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let scrape_at = |host: &'static str| {
        let addr = logger.metrics_addr;
        async move { http_call(addr, "GET", "/metrics", &[("Host", host)], "").await }
    };
    let (status, _, _) = http_call(logger.metrics_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    for host in ["localhost:9464", "[::1]:9464"] {
        assert_eq!(scrape_at(host).await.0, 200, "{host}");
    }
    for host in ["rebound.example:9464", "10.0.0.9", ""] {
        let (status, _, body) = scrape_at(host).await;
        assert_eq!(status, 421, "{host}: {body}");
        assert!(!body.contains("herald_"), "{body}");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_console_feed_authenticates_before_it_reads_storage() {
    // A Redis nobody runs: any read of storage fails with 503.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let dir = tempfile::tempdir().expect("dir");
    let keys = console_keys_file(&dir);
    let logger = Logger::start_with_console(
        &["--redis-url", &url, "--keys-file", &keys],
        Lines::default().sink(),
    )
    .await;
    let console = logger.console_addr.expect("console");
    let (status, _, body) = http_call(console, "GET", "/api/feed", &[], "").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http_call(
        console,
        "GET",
        "/api/feed",
        &[("Authorization", "Bearer wrong-key")],
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[test]
fn the_binary_never_prints_a_secret_it_was_given() {
    let logger = env!("CARGO_BIN_EXE_herald-logger");
    // --help shows no value of a secret-bearing variable.
    let help = std::process::Command::new(logger)
        .arg("--help")
        .env("HERALD_REDIS_URL", "redis://u:hunter2@127.0.0.1:1/")
        .env("HERALD_REDIS_CLUSTER", "redis://u:hunter3@127.0.0.1:2")
        .env("HERALD_USER_TOKEN_SECRET", "hunter4-hunter4-hunter4")
        .output()
        .expect("run herald-logger --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("HERALD_REDIS_URL"), "{text}");
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!text.contains(secret), "--help shows {secret}");
    }
    // A config file that is not TOML is named by line and key, never quoted.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("herald.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nredis-url = \"redis://u:hunter2@127.0.0.1:1/\n",
    )
    .expect("write");
    let run = std::process::Command::new(logger)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run herald-logger --config");
    assert!(!run.status.success());
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(text.contains("line 2, key redis-url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// A TCP stream whose reads stop for good once `frozen` is set: a client
/// that stops reading its connection (and so never answers a PING).
struct Freezable {
    tcp: tokio::net::TcpStream,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for Freezable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Freezable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn shutdown_ends_once_every_stream_has_ended_whoever_stops_reading() {
    use prost::Message as _;
    let logger = Logger::start(&["--shutdown-grace", "20s"], Lines::default().sink()).await;
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tcp = tokio::net::TcpStream::connect(logger.addr)
        .await
        .expect("connect");
    let (send, connection) = h2::client::handshake(Freezable {
        tcp,
        frozen: frozen.clone(),
    })
    .await
    .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut streams = Vec::new();
    for i in 0..50 {
        let request = http::Request::post(format!(
            "http://{}/herald.v1.Notifier/Subscribe",
            logger.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
        let mut send = send.clone().ready().await.expect("ready");
        let (response, mut body) = send.send_request(request, false).expect("send");
        let message = herald::pb::SubscribeRequest {
            user_id: format!("u{i}"),
            ..Default::default()
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        body.send_data(framed.into(), true).expect("subscribe");
        streams.push(response.await.expect("stream starts"));
    }
    eventually(Duration::from_secs(10), "50 streams open", || async {
        let stats = logger.client().await.stats().await.ok()?;
        (stats.active_subscribers == 50).then_some(())
    })
    .await;
    // From now on the client reads nothing: it never answers the PING that
    // follows the server's GOAWAY. Every stream still ends at once, and so
    // must the logger, long before its 20 s grace.
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    logger.stop_within(Duration::from_secs(10)).await;
    drop(streams);
}

#[tokio::test]
async fn page_tokens_are_tamper_evident_and_shared_by_a_deployments_loggers() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    let redis = herald_storage::testing::RedisServer::start();
    let url = redis.url();
    let a = Logger::start(&["--redis-url", &url], Lines::default().sink()).await;
    let b = Logger::start(&["--redis-url", &url], Lines::default().sink()).await;
    let (to_a, to_b) = (a.client().await, b.client().await);
    for i in 0..5 {
        to_a.create_event("ann", &format!("event {i}"))
            .await
            .expect("create");
    }
    let list = || herald_client::ListEvents::new().user("ann").page_size(2);
    let first = to_a.list_events(list()).await.expect("first page");
    let token = first.next.clone().expect("a next page");
    // Another logger of the deployment reads it.
    let second = to_b
        .list_events(list().page_token(token.clone()))
        .await
        .expect("second page, from the other logger");
    assert_eq!(second.items.len(), 2);
    assert_ne!(second.items[0].id, first.items[0].id);
    // A token changed in any digit, or of the old unsigned form, is refused
    // naming page_token, and so is one carried to other filters.
    let mut forged = token.clone().into_bytes();
    for at in [3, 20, 60] {
        forged[at] = if forged[at] == b'0' { b'f' } else { b'0' };
    }
    let forged = String::from_utf8(forged).expect("hex");
    let unsigned: String = format!("v1|{}|{}|0", i64::MAX, uuid::Uuid::max())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    for bad in [forged, unsigned] {
        let err = to_b
            .list_events(list().page_token(bad))
            .await
            .expect_err("a forged token");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let fields: Vec<_> = err.violations().iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, ["page_token"]);
    }
    let err = to_a
        .list_events(
            herald_client::ListEvents::new()
                .user("bob")
                .page_token(token),
        )
        .await
        .expect_err("another query's token");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    a.stop_within(Duration::from_secs(10)).await;
    b.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_console_limits_failed_authentications_with_the_grpc_listener() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = console_keys_file(&dir);
    let logger = Logger::start_with_console(
        &["--keys-file", &keys, "--auth-failures-per-minute", "10"],
        Lines::default().sink(),
    )
    .await;
    let console = logger.console_addr.expect("console");
    // The page's first question, without a key, is no failure.
    for _ in 0..20 {
        let (status, _, _) = http_call(console, "GET", "/api/session", &[], "").await;
        assert_eq!(status, 401);
    }
    let mut statuses = Vec::new();
    for i in 0..15 {
        let key = format!("Bearer guess-{i}");
        let (status, _, _) = http_call(
            console,
            "GET",
            "/api/session",
            &[("Authorization", &key)],
            "",
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 5], "{statuses:?}");
    // The right key waits too, on the console and on gRPC alike.
    let (status, _, body) = http_call(
        console,
        "GET",
        "/api/session",
        &[("Authorization", "Bearer admin-key")],
        "",
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let err = logger
        .client_with_key("admin-key")
        .await
        .stats()
        .await
        .expect_err("locked out");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let scrape = Scrape::of(logger.metrics_addr).await;
    assert_eq!(
        scrape.get("herald_auth_failures_total", &[("outcome", "failed")]),
        10.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}
