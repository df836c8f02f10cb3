//! Shared support of the logger's end-to-end tests: real servers on
//! `127.0.0.1:0`, stopped through their shutdown token.

#![allow(dead_code)]

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use herald::{Event, EventStatus};
use herald_client::{Client, Message, Notification, RetryPolicy, Subscription};
use herald_logger::Config;
use herald_processor::{Channel, LineChannel};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A writer whose output tests can read: the lines a [`LineChannel`] printed.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    /// A line sink writing here.
    pub fn sink(&self) -> Arc<dyn Channel> {
        Arc::new(LineChannel::new(self.clone()))
    }

    /// Every complete line written so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("lines lock").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A logger running in this process.
pub struct Logger {
    pub addr: SocketAddr,
    /// Where it serves /metrics.
    pub metrics_addr: SocketAddr,
    /// Where it serves the console, if it does.
    pub console_addr: Option<SocketAddr>,
    /// Where it serves end users' endpoints, if it does.
    pub web_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Logger {
    /// Starts a logger with `args` (flags) on a free port, and its metrics
    /// on another; an embedded worker writes to `sink`.
    pub async fn start(args: &[&str], sink: Arc<dyn Channel>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, args, sink).await
    }

    /// [`Logger::start`], also serving the console on a free port.
    pub async fn start_with_console(args: &[&str], sink: Arc<dyn Channel>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let console = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_serving(listener, Some(console), None, args, sink).await
    }

    /// [`Logger::start`], also serving end users' endpoints on a free port.
    pub async fn start_with_web(args: &[&str], sink: Arc<dyn Channel>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let web = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_with_web_on(listener, web, args, sink).await
    }

    /// [`Logger::start_with_web`] on `listener` and `web` (addresses taken
    /// before: a restart's).
    pub async fn start_with_web_on(
        listener: TcpListener,
        web: TcpListener,
        args: &[&str],
        sink: Arc<dyn Channel>,
    ) -> Self {
        Self::start_serving(listener, None, Some(web), args, sink).await
    }

    /// [`Logger::start`] on `listener` (an address taken before, say).
    pub async fn start_on(listener: TcpListener, args: &[&str], sink: Arc<dyn Channel>) -> Self {
        Self::start_serving(listener, None, None, args, sink).await
    }

    async fn start_serving(
        listener: TcpListener,
        console: Option<TcpListener>,
        web: Option<TcpListener>,
        args: &[&str],
        sink: Arc<dyn Channel>,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let console_addr = console.as_ref().map(|c| c.local_addr().expect("addr"));
        let web_addr = web.as_ref().map(|w| w.local_addr().expect("addr"));
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics_addr = metrics.local_addr().expect("addr");
        let config = Config::from_args(args);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(herald_logger::run_with(
            herald_logger::Listeners {
                grpc: listener,
                metrics: Some(metrics),
                console,
                web,
            },
            config,
            sink,
            shutdown.clone(),
        ));
        Self {
            addr,
            metrics_addr,
            console_addr,
            web_addr,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw gRPC channel to it, for the generated clients.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// A client of it that authenticates with `key` (an API key or user token).
    pub async fn client_with_key(&self, key: &str) -> Client {
        self.client().await.with_api_key(key).expect("a usable key")
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.url())
            .await
            .expect("connect to the logger")
    }

    /// Stops it and waits for the end, which must come within `limit`.
    pub async fn stop_within(self, limit: Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.handle)
            .await
            .expect("logger stops in time")
            .expect("join")
            .expect("logger ran without error");
    }
}

/// A listener on a port no other test takes while its server is down
/// ([`herald_storage::testing::restartable_port`]), and its address.
pub async fn restartable_listener() -> (TcpListener, SocketAddr) {
    loop {
        let port = herald_storage::testing::restartable_port();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            let addr = listener.local_addr().expect("addr");
            return (listener, addr);
        }
    }
}

/// `addr` bound again after its server stopped, as a restarted server
/// would (its old connections may hold it for a moment).
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}

/// A processor running in this process.
pub struct Processor {
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub shutdown: CancellationToken,
}

impl Processor {
    /// Starts a processor on `redis_url`, calling the logger at `logger_url`.
    pub fn start(
        redis_url: &str,
        logger_url: &str,
        worker_args: &[&str],
        sink: Arc<dyn Channel>,
    ) -> Self {
        Self::start_with_key(redis_url, logger_url, "", worker_args, sink)
    }

    /// [`Processor::start`], authenticating with `api_key`.
    pub fn start_with_key(
        redis_url: &str,
        logger_url: &str,
        api_key: &str,
        worker_args: &[&str],
        sink: Arc<dyn Channel>,
    ) -> Self {
        let config = Self::config(redis_url, logger_url, api_key, worker_args);
        Self::start_with_config(config, sink)
    }

    /// A processor on the Redis Cluster whose nodes are `seeds`.
    pub fn start_on_cluster(
        seeds: &[String],
        logger_url: &str,
        worker_args: &[&str],
        sink: Arc<dyn Channel>,
    ) -> Self {
        let mut config = Self::config("", logger_url, "", worker_args);
        config.redis = herald_runtime::flags::RedisArgs::parse_from_args(&[
            "--redis-cluster",
            &seeds.join(","),
        ]);
        Self::start_with_config(config, sink)
    }

    /// A processor with `config`, printing through `sink`.
    pub fn start_with_config(config: herald_processor::Config, sink: Arc<dyn Channel>) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(herald_processor::run(config, sink, shutdown.clone()));
        Self { handle, shutdown }
    }

    /// The configuration of a processor on `redis_url` calling `logger_url`
    /// with `api_key` and `worker_args`, serving no metrics.
    pub fn config(
        redis_url: &str,
        logger_url: &str,
        api_key: &str,
        worker_args: &[&str],
    ) -> herald_processor::Config {
        herald_processor::Config {
            config: None,
            redis: herald_runtime::flags::RedisArgs::node(redis_url),
            logger_url: logger_url.to_owned(),
            api_key: Some(api_key.to_owned()).filter(|k| !k.is_empty()),
            tls: herald_runtime::flags::TlsArgs::default(),
            log: Default::default(),
            runtime: Default::default(),
            metrics_listen: herald_runtime::http::Listen(None),
            worker: herald_processor::WorkerArgs::parse_from_args(worker_args),
        }
    }

    /// Kills it on the spot: nothing in flight is finished or acknowledged.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// A processor on a runtime of its own, so that killing it stops every
/// task it started at once (as `kill -9` would), not only its main one.
pub struct IsolatedProcessor {
    runtime: Option<tokio::runtime::Runtime>,
}

impl IsolatedProcessor {
    /// Starts a processor with `config`, printing through `sink`.
    pub fn start(config: herald_processor::Config, sink: Arc<dyn Channel>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.spawn(herald_processor::run(
            config,
            sink,
            CancellationToken::new(),
        ));
        Self {
            runtime: Some(runtime),
        }
    }

    /// Kills it: no task of it runs another step.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for IsolatedProcessor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The next event message of `stream` within `limit`, skipping heartbeats and
/// other notices; `None` if none came in time, `Some(Err)` if the stream
/// ended with an error.
pub async fn next_event(
    stream: &mut Subscription,
    limit: Duration,
) -> Option<Result<Notification, herald_client::Error>> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return None,
            Ok(None) => panic!("the stream ended without an error"),
            Ok(Some(Err(err))) => return Some(Err(err)),
            Ok(Some(Ok(Message::Event(n)))) => return Some(Ok(*n)),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The next event of `stream`, which must come within 10 s.
pub async fn expect_event(stream: &mut Subscription) -> Notification {
    next_event(stream, Duration::from_secs(10))
        .await
        .expect("a notification in time")
        .expect("the stream is open")
}

/// Asserts that a subscription ends within 5 s, with UNAVAILABLE.
pub async fn assert_ends_unavailable(stream: &mut Subscription) {
    let end = next_event(stream, Duration::from_secs(5))
        .await
        .expect("stream ended in time");
    let err = end.expect_err("ends with an error");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

/// Client retries that give up at once, to see how a stream ends.
pub const NO_RETRIES: RetryPolicy = RetryPolicy {
    retries: 0,
    initial_backoff: Duration::ZERO,
    max_backoff: Duration::ZERO,
};

/// Event `id` once it is in `status`, waiting up to `limit`.
pub async fn status_is(
    client: &Client,
    id: uuid::Uuid,
    status: EventStatus,
    limit: Duration,
) -> Event {
    eventually(limit, &format!("event {id} {status}"), || async {
        client
            .get_event(id)
            .await
            .ok()
            .filter(|e| e.status == status)
    })
    .await
}

/// Polls `check` until it yields a value or `limit` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request carrying `trace` in its `traceparent` header.
pub fn traced<T>(message: T, trace: &herald::trace::TraceParent) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        herald::trace::HEADER,
        trace.to_string().parse().expect("an ASCII header"),
    );
    request
}

/// Fetches `path` from the HTTP server at `addr`: the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_call(addr, "GET", path, &[], "").await;
    (status, body)
}

/// Sends `head` (an HTTP/1.1 request's head promising a longer body, and
/// the first bytes of it) to `addr`, then nothing more: what the server
/// answers before it closes the connection (20 s at most).
pub async fn unfinished_body(addr: SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send a head and a bit");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends one HTTP/1.1 request to `addr` (`Host` is `addr` unless `headers`
/// give one): the status code, the head and the body of the answer.
pub async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head.to_owned(), body.to_owned())
}

/// One scrape of a Prometheus endpoint.
pub struct Scrape(pub String);

impl Scrape {
    /// Scrapes `/metrics` at `addr`.
    pub async fn of(addr: SocketAddr) -> Self {
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        Self(body)
    }

    /// The value of the sample `name` whose labels are exactly `labels`, if any.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        wanted.sort();
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, mut got) = match series.split_once('{') {
                    Some((metric, rest)) => (
                        metric,
                        rest.trim_end_matches('}')
                            .split(',')
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>(),
                    ),
                    None => (series, Vec::new()),
                };
                got.sort();
                (metric == name && got == wanted).then(|| value.parse().expect("a number"))
            })
    }

    /// [`Scrape::value`], which must be there.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", self.0))
    }
}

/// Reads `subscription` until it has had every event of `user` among
/// `events` as PROCESSED; checks each came exactly once and nothing else.
pub async fn assert_heard_once(subscription: &mut Subscription, events: &[Event], user: &str) {
    let mut expected: Vec<uuid::Uuid> = events
        .iter()
        .filter(|e| e.user_id == user)
        .map(|e| e.id)
        .collect();
    let mut heard = Vec::new();
    while heard.len() < expected.len() {
        let next = expect_event(subscription).await;
        assert_eq!(next.event.status, EventStatus::Processed);
        heard.push(next.event.id);
    }
    assert!(
        next_event(subscription, Duration::from_millis(300))
            .await
            .is_none()
    );
    heard.sort();
    expected.sort();
    assert_eq!(heard, expected);
}

/// A keys file of a reader, an operator and an admin, whose keys are
/// `reader-key`, `operator-key` and `admin-key`: the console tests' clients.
pub fn console_keys_file(dir: &tempfile::TempDir) -> String {
    let key = |client: &str, scopes: &[&str]| serde_json::json!({"client_id": client, "key_sha256": herald::auth::hash_key(&format!("{client}-key")), "scopes": scopes});
    let keys = serde_json::json!({"keys": [
        key("reader", &["events:read", "notifications:subscribe"]),
        key("operator", &["events:read", "events:process", "notifications:subscribe"]),
        key("admin", &["admin"]),
        key("support", &["events:read", "recipients:read"]),
    ]});
    let path = dir.path().join("keys.json");
    std::fs::write(&path, keys.to_string()).expect("write keys");
    path.to_str().expect("utf-8").to_owned()
}
