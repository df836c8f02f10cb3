//! Delivery channels end to end: a logger with its embedded worker reads a
//! channels file and delivers to real HTTP receivers started here, whose
//! answers each test scripts. Signatures are checked with an HMAC written
//! here from the Standard Webhooks text, not with Herald's code.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Lines, Logger, Scrape, eventually};
use herald::{Event, EventStatus, domain::EventInput};
use herald_client::{Client, Redrive, webhooks};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::common;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// HMAC-SHA256 as RFC 2104 defines it, over SHA-256 (64-byte blocks).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The Standard Webhooks signature of a message: `v1,` and base64 of the
/// HMAC of `id.timestamp.body` keyed with the secret's decoded bytes.
fn signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_"))
        .expect("base64");
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed)))
}

#[test]
fn the_independent_signature_matches_the_specifications_example() {
    assert_eq!(
        signature(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// How a receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) delay: Duration,
}

pub(crate) fn answer(status: u16) -> Answer {
    Answer {
        status,
        retry_after: None,
        delay: Duration::ZERO,
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub(crate) fn event_id(&self) -> Uuid {
        let json: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON body");
        json["event_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("event_id")
    }
}

type Script = Box<dyn Fn(usize) -> Answer + Send + Sync>;

/// A webhook receiver on a free port: records every request and answers
/// as its script says (given the request's number, from 0).
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub(crate) async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Self {
            url: format!("http://{}/hook", listener.local_addr().expect("addr")),
            received: Arc::default(),
            script: Arc::new(Mutex::new(Box::new(script))),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// Answers from now on as `script` says.
    fn answer(&self, script: impl Fn(usize) -> Answer + Send + Sync + 'static) {
        *self.script.lock().expect("lock") = Box::new(script);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// How many requests carried each event.
    fn counts(&self) -> HashMap<Uuid, usize> {
        let mut counts = HashMap::new();
        for r in self.received() {
            *counts.entry(r.event_id()).or_default() += 1;
        }
        counts
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut received = receiver.received.lock().expect("lock");
        received.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        received.len() - 1
    };
    let answer = (receiver.script.lock().expect("lock"))(n);
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).expect("status");
    match answer.retry_after {
        Some(seconds) => (status, [("retry-after", seconds.to_string())], "busy").into_response(),
        None => (status, "answer").into_response(),
    }
}

/// A TLS front for `receiver` on a free port, with a self-signed
/// certificate for `localhost` written to `dir/cert.pem`: the URL to give.
async fn https_front(receiver: &Receiver, dir: &std::path::Path) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write");
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let upstream = receiver
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/hook")
        .to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    format!("https://localhost:{port}/hook")
}

/// The value of metric `name` for channel `channel`.
fn channel_metric(m: &Scrape, name: &str, channel: &str) -> f64 {
    m.get(name, &[("channel", channel)])
}

/// A logger with an embedded worker delivering through the channels file
/// `text`, with extra worker flags.
pub(crate) async fn logger_with(text: &str, flags: &[&str]) -> (Logger, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("channels.toml");
    std::fs::write(&path, text).expect("write");
    let path = path.to_str().expect("utf-8").to_owned();
    let mut args = vec!["--channels", path.as_str()];
    args.extend(flags);
    let logger = Logger::start(&args, Lines::default().sink()).await;
    let client = logger.client().await;
    (logger, client, dir)
}

pub(crate) fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[channels.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

async fn create(client: &Client, user: &str, category: &str, event_type: &str) -> Event {
    client
        .create(EventInput {
            user_id: user.into(),
            description: format!("{event_type} for {user}"),
            category: category.into(),
            event_type: event_type.into(),
            ..EventInput::default()
        })
        .await
        .expect("create")
}

pub(crate) async fn status_of(client: &Client, id: Uuid, status: EventStatus) -> Event {
    eventually(
        Duration::from_secs(30),
        &format!("event {id} {status}"),
        || async {
            let event = client.get_event(id).await.ok()?;
            (event.status == status).then_some(event)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_only_routed_events_are_sent() {
    let hook = Receiver::start(|_| answer(204)).await;
    let file = format!(
        "{}[[routes]]\ntypes = [\"account.*\"]\nchannels = [\"hooks\"]\n",
        webhook("hooks", &hook.url, "")
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let mut events = Vec::new();
    for (user, kind) in [("ann", "account.opened"), ("bob", "account.closed")] {
        events.push(create(&client, user, "", kind).await);
    }
    let unrouted = create(&client, "cy", "", "order.paid").await;
    for e in events.iter().chain([&unrouted]) {
        status_of(&client, e.id, EventStatus::Processed).await;
    }

    let received = hook.received();
    assert_eq!(received.len(), 2, "one POST per routed event");
    for e in &events {
        // Two users' events go out concurrently, in either order.
        let r = received
            .iter()
            .find(|r| r.event_id() == e.id)
            .expect("a POST of the event");
        let id = r.header(webhooks::ID);
        let timestamp = r.header(webhooks::TIMESTAMP);
        assert_eq!(id, format!("msg_{}_hooks", e.id.simple()));
        assert_eq!(
            r.header(webhooks::SIGNATURE),
            signature(SECRET, id, timestamp, &r.body)
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(timestamp.parse().expect("seconds")) < 60);
        assert_eq!(
            webhooks::verify(SECRET, &r.headers, &r.body, webhooks::DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(r.header("content-type"), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(body["event_id"], e.id.to_string());
        assert_eq!(body["user_id"], e.user_id);
        assert_eq!(body["type"], e.event_type);
        assert_eq!(body["description"], e.description);
    }

    let attempts = client
        .delivery_attempts(events[0].id)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let a = &attempts[0];
    assert!(a.succeeded && a.error.is_empty(), "{a:?}");
    assert_eq!((a.channel.as_str(), a.kind.as_str()), ("hooks", "webhook"));
    assert_eq!(
        (a.target.as_str(), a.http_status),
        (hook.url.as_str(), Some(204))
    );
    assert!(
        client
            .delivery_attempts(unrouted.id)
            .await
            .expect("none")
            .is_empty()
    );
    let missing = client
        .delivery_attempts(Uuid::now_v7())
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(m.get("herald_events_unrouted_total", &[]), 1.0);
    assert_eq!(
        channel_metric(&m, "herald_notifications_sent_total", "hooks"),
        2.0
    );
    assert_eq!(
        channel_metric(&m, "herald_channel_attempts_total", "hooks"),
        2.0
    );
    assert_eq!(
        channel_metric(&m, "herald_channel_attempt_duration_seconds_count", "hooks"),
        2.0
    );
    assert_eq!(
        channel_metric(&m, "herald_channel_breaker_state", "hooks"),
        0.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_times_out_and_is_tried_again_with_the_same_id() {
    let hook = Receiver::start(|n| Answer {
        delay: if n == 0 {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        },
        ..answer(200)
    })
    .await;
    let file = format!(
        "{}[[routes]]\nchannels = [\"hooks\"]\n",
        webhook("hooks", &hook.url, "timeout = \"300ms\"")
    );
    let (logger, client, _dir) = logger_with(&file, &["--retry-backoff", "10ms"]).await;
    let e = create(&client, "ann", "", "").await;
    status_of(&client, e.id, EventStatus::Processed).await;
    let received = hook.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].header(webhooks::ID),
        received[1].header(webhooks::ID)
    );
    let attempts = client.delivery_attempts(e.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(!attempts[0].succeeded && attempts[0].http_status.is_none());
    assert!(
        attempts[0].error.contains("no answer within 300ms"),
        "{:?}",
        attempts[0]
    );
    assert!(attempts[0].latency >= Duration::from_millis(300));
    assert!(attempts[1].succeeded);
    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(
        m.get(
            "herald_notifications_failed_total",
            &[("channel", "hooks"), ("reason", "timeout")]
        ),
        1.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_backs_off_is_dead_lettered_and_redriven() {
    // The first answer asks for a second's wait; the others fail at once.
    let hook = Receiver::start(|n| Answer {
        retry_after: (n == 0).then_some(1),
        ..answer(503)
    })
    .await;
    let file = format!(
        "{}[[routes]]\nchannels = [\"hooks\"]\n",
        webhook(
            "hooks",
            &hook.url,
            "retry = { attempts = 4, backoff = \"100ms\", max_backoff = \"1s\" }"
        )
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let e = create(&client, "ann", "", "").await;
    status_of(&client, e.id, EventStatus::Failed).await;
    let received = hook.received();
    assert_eq!(received.len(), 4, "the attempts the channel allows");
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_secs(1),
        "Retry-After honoured: {gaps:?}"
    );
    // Then 100ms and 200ms, each with jitter over its upper half.
    assert!(
        gaps[1] >= Duration::from_millis(100) && gaps[2] >= Duration::from_millis(200),
        "{gaps:?}"
    );
    // The event is FAILED just before its entry becomes a dead letter.
    let dead = eventually(Duration::from_secs(10), "the dead letter", || async {
        let items = client.list_dead_letters(10, "").await.ok()?.items;
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].reason;
    assert!(
        reason.starts_with("channel hooks: 4 attempts failed, the last with: HTTP 503"),
        "{reason}"
    );

    hook.answer(|_| answer(200));
    client
        .redrive(Redrive::Ids(vec![e.id]))
        .await
        .expect("redrive");
    status_of(&client, e.id, EventStatus::Processed).await;
    assert_eq!(hook.received().len(), 5);
    let attempts = client.delivery_attempts(e.id).await.expect("attempts");
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(
        statuses,
        [Some(503), Some(503), Some(503), Some(503), Some(200)]
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_other_4xx_fail_at_once() {
    let gone = Receiver::start(|_| answer(410)).await;
    let refused = Receiver::start(|_| answer(422)).await;
    let file = format!(
        "{}{}[[routes]]\ncategories = [\"gone\"]\nchannels = [\"gone\"]\n[[routes]]\ncategories = [\"refused\"]\nchannels = [\"refused\"]\n",
        webhook("gone", &gone.url, ""),
        webhook("refused", &refused.url, ""),
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let first = create(&client, "ann", "gone", "").await;
    status_of(&client, first.id, EventStatus::Failed).await;
    let second = create(&client, "ann", "gone", "").await;
    status_of(&client, second.id, EventStatus::Failed).await;
    assert_eq!(
        gone.received().len(),
        1,
        "nothing is sent to a disabled endpoint"
    );
    let unprocessable = create(&client, "bob", "refused", "").await;
    status_of(&client, unprocessable.id, EventStatus::Failed).await;
    assert_eq!(refused.received().len(), 1, "a 422 is not retried");

    // An event is FAILED just before its entry becomes a dead letter.
    let dead = eventually(Duration::from_secs(10), "three dead letters", || async {
        let items = client.list_dead_letters(10, "").await.ok()?.items;
        (items.len() == 3).then_some(items)
    })
    .await;
    let reason_of = |id: Uuid| {
        dead.iter()
            .find(|d| d.event.id == id)
            .map(|d| d.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason_of(first.id).contains("HTTP 410 Gone"),
        "{}",
        reason_of(first.id)
    );
    assert!(
        reason_of(second.id).contains("disabled"),
        "{}",
        reason_of(second.id)
    );
    assert!(
        reason_of(unprocessable.id).contains("HTTP 422"),
        "{}",
        reason_of(unprocessable.id)
    );
    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(channel_metric(&m, "herald_channel_disabled", "gone"), 1.0);
    assert_eq!(
        channel_metric(&m, "herald_channel_disabled", "refused"),
        0.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_dead_endpoint_holds_up_nobody_and_closes_when_it_returns() {
    let dead = Receiver::start(|_| answer(500)).await;
    let live = Receiver::start(|_| answer(204)).await;
    let breaker = "timeout = \"400ms\"\nbreaker_failures = 3\nbreaker_cooldown = \"500ms\"\nretry = { attempts = 100, backoff = \"10ms\", max_backoff = \"20ms\" }";
    let file = format!(
        "{}{}[[routes]]\ncategories = [\"dead\"]\nchannels = [\"dead\"]\n[[routes]]\ncategories = [\"live\"]\nchannels = [\"live\"]\n",
        webhook("dead", &dead.url, breaker),
        webhook("live", &live.url, "timeout = \"400ms\""),
    );
    let (logger, client, _dir) = logger_with(
        &file,
        &[
            "--claim-idle",
            "1s",
            "--max-deliveries",
            "100",
            "--concurrency",
            "8",
        ],
    )
    .await;
    let mut to_dead = Vec::new();
    for i in 0..20 {
        to_dead.push(create(&client, &format!("d{i}"), "dead", "").await);
    }
    let m = eventually(Duration::from_secs(10), "the breaker open", || async {
        let m = Scrape::of(logger.metrics_addr).await;
        (m.value("herald_channel_breaker_state", &[("channel", "dead")]) == Some(2.0)).then_some(m)
    })
    .await;
    assert!(
        m.get(
            "herald_notifications_failed_total",
            &[("channel", "dead"), ("reason", "http_5xx")]
        ) >= 3.0
    );
    // With the dead endpoint's events in the worker, the live one's go through.
    let mut to_live = Vec::new();
    for i in 0..20 {
        to_live.push(create(&client, &format!("l{i}"), "live", "").await);
    }
    for e in &to_live {
        status_of(&client, e.id, EventStatus::Processed).await;
    }
    assert!(live.counts().values().all(|n| *n == 1) && live.counts().len() == 20);
    let m = Scrape::of(logger.metrics_addr).await;
    assert!(
        m.get(
            "herald_notifications_failed_total",
            &[("channel", "dead"), ("reason", "circuit_open")]
        ) >= 1.0,
        "events met the open breaker"
    );
    let tried_while_open = dead.received().len();
    assert!(
        tried_while_open < 20 * 3,
        "{tried_while_open} requests: the breaker held most back"
    );

    // The endpoint returns: a probe closes the breaker and every event goes through.
    dead.answer(|_| answer(200));
    for e in &to_dead {
        status_of(&client, e.id, EventStatus::Processed).await;
    }
    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(
        channel_metric(&m, "herald_channel_breaker_state", "dead"),
        0.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_two_endpoints_failing_the_other_gets_each_event_once() {
    let good = Receiver::start(|_| answer(200)).await;
    // "flaky" asks for a long wait first (the entry comes back after the
    // claim idle time), then fails until the event is dead-lettered.
    let flaky = Receiver::start(|n| Answer {
        retry_after: (n < 5).then_some(30),
        ..answer(503)
    })
    .await;
    // (Its breaker stays closed: this is about the records of successes.)
    let retry =
        "timeout = \"400ms\"\nbreaker_failures = 100\nretry = { attempts = 3, backoff = \"10ms\" }";
    let file = format!(
        "{}{}[[routes]]\nchannels = [\"good\"]\n[[routes]]\ntypes = [\"order.*\"]\nchannels = [\"flaky\", \"good\"]\n",
        webhook("good", &good.url, retry),
        webhook("flaky", &flaky.url, retry),
    );
    let (logger, client, _dir) = logger_with(&file, &["--claim-idle", "1s"]).await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(create(&client, &format!("u{i}"), "", "order.paid").await);
    }
    for e in &events {
        status_of(&client, e.id, EventStatus::Failed).await;
    }
    // Each event: an attempt deferred by its long Retry-After, then (its
    // entry delivered again) failed attempts until the three are used.
    assert_eq!(flaky.received().len(), 5 + 5 * 2);
    flaky.answer(|_| answer(200));
    client.redrive(Redrive::All).await.expect("redrive");
    for e in &events {
        status_of(&client, e.id, EventStatus::Processed).await;
    }
    let counts = good.counts();
    for e in &events {
        assert_eq!(counts.get(&e.id), Some(&1), "good got {} once", e.id);
    }
    assert_eq!(flaky.counts().values().sum::<usize>(), 5 + 5 * 2 + 5);
    let dead = client
        .list_dead_letters(10, "")
        .await
        .expect("dead letters")
        .items;
    assert!(dead.is_empty(), "redriven events lose their dead letters");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_trusted_through_the_ca_it_is_given_only() {
    let hook = Receiver::start(|_| answer(204)).await;
    let certs = tempfile::tempdir().expect("dir");
    let url = https_front(&hook, certs.path()).await;
    let ca = certs.path().join("cert.pem");
    let file = format!(
        "{}{}[[routes]]\ncategories = [\"trusted\"]\nchannels = [\"trusted\"]\n\
         [[routes]]\ncategories = [\"untrusted\"]\nchannels = [\"untrusted\"]\n",
        webhook("trusted", &url, &format!("tls_ca = \"{}\"", ca.display())),
        webhook("untrusted", &url, "retry = { attempts = 1 }"),
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let trusted = create(&client, "ann", "trusted", "").await;
    status_of(&client, trusted.id, EventStatus::Processed).await;
    let untrusted = create(&client, "bob", "untrusted", "").await;
    status_of(&client, untrusted.id, EventStatus::Failed).await;

    let received = hook.received();
    assert_eq!(received.len(), 1, "only the trusting channel got through");
    assert_eq!(received[0].event_id(), trusted.id);
    assert_eq!(
        webhooks::verify(
            SECRET,
            &received[0].headers,
            &received[0].body,
            webhooks::DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    let attempts = client
        .delivery_attempts(untrusted.id)
        .await
        .expect("attempts");
    assert!(
        attempts[0].error.contains("certificate"),
        "{:?}",
        attempts[0].error
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_channels_are_skipped_unless_a_required_route_chose_them() {
    let hooks = Receiver::start(|_| answer(204)).await;
    let mail = Receiver::start(|_| answer(204)).await;
    let file = format!(
        "{}{}[[routes]]\nchannels = [\"hooks\", \"mail\"]\n\n\
         [[routes]]\ntypes = [\"security.*\"]\nchannels = [\"mail\"]\nrequired = true\n",
        webhook("hooks", &hooks.url, ""),
        webhook("mail", &mail.url, ""),
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let opt_outs = vec![
        herald_client::OptOut {
            channel: "mail".into(),
            category: "marketing".into(),
            ..Default::default()
        },
        herald_client::OptOut {
            event_type: "promo.daily".into(),
            ..Default::default()
        },
    ];
    client
        .set_preferences("ann", opt_outs)
        .await
        .expect("preferences");
    let weekly = create(&client, "ann", "marketing", "promo.weekly").await;
    let daily = create(&client, "ann", "", "promo.daily").await;
    let alert = create(&client, "ann", "marketing", "security.login").await;
    let bobs = create(&client, "bob", "marketing", "promo.weekly").await;
    for e in [&weekly, &daily, &alert, &bobs] {
        status_of(&client, e.id, EventStatus::Processed).await;
    }
    let got = |r: &Receiver| {
        let mut ids: Vec<Uuid> = r.received().iter().map(Received::event_id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids
    };
    assert_eq!(got(&hooks), sorted(vec![weekly.id, alert.id, bobs.id]));
    assert_eq!(
        got(&mail),
        sorted(vec![alert.id, bobs.id]),
        "a required route ignores the opt-out"
    );

    let attempts = client.delivery_attempts(weekly.id).await.expect("attempts");
    let skipped: Vec<_> = attempts.iter().filter(|a| a.skipped).collect();
    assert_eq!(skipped.len(), 1, "{attempts:?}");
    assert_eq!(skipped[0].channel, "mail");
    assert!(!skipped[0].succeeded);
    assert_eq!(
        skipped[0].error,
        "opted out: channel mail, category marketing"
    );
    let daily_attempts = client.delivery_attempts(daily.id).await.expect("attempts");
    assert!(
        daily_attempts.len() == 2 && daily_attempts.iter().all(|a| a.skipped),
        "{daily_attempts:?}"
    );

    // A change applies to the next event, without a restart.
    client
        .set_preferences("ann", vec![])
        .await
        .expect("cleared");
    let after = create(&client, "ann", "marketing", "promo.weekly").await;
    status_of(&client, after.id, EventStatus::Processed).await;
    assert!(got(&mail).contains(&after.id));

    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(
        channel_metric(&m, "herald_notifications_skipped_total", "mail"),
        2.0
    );
    assert_eq!(
        channel_metric(&m, "herald_notifications_skipped_total", "hooks"),
        1.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

/// Each user's request order at `receiver`, with a repeat of the request
/// just before it (a redelivery after a processor died) counted once.
fn order_per_user(
    receiver: &Receiver,
    users: &HashMap<Uuid, String>,
) -> HashMap<String, Vec<Uuid>> {
    let mut order: HashMap<String, Vec<Uuid>> = HashMap::new();
    for r in receiver.received() {
        let id = r.event_id();
        let seen = order.entry(users[&id].clone()).or_default();
        if seen.last() != Some(&id) {
            seen.push(id);
        }
    }
    order
}

/// 1,000 events of 10 users through an ordered webhook route, by two
/// processors on one Redis, one of them killed mid-run: each user's
/// requests arrive one at a time, in the order the events were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_route_delivers_each_users_events_in_order_across_processors() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    // Answers take 0 to 6 ms, so unordered deliveries would overtake.
    let receiver = Receiver::start(|n| Answer {
        delay: Duration::from_millis((n % 7) as u64),
        ..answer(200)
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        format!(
            "[channels.hooks]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             timeout = \"500ms\"\n[[routes]]\nchannels = [\"hooks\"]\nordered = true\n",
            receiver.url
        ),
    )
    .expect("write channels");
    let redis = herald_storage::testing::RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let channels = channels.to_str().expect("utf-8");
    let processor = |name: &str| {
        common::Processor::start(
            &redis.url(),
            &logger.url(),
            &[
                "--channels",
                channels,
                "--consumer-name",
                name,
                "--claim-idle",
                "2s",
            ],
            Lines::default().sink(),
        )
    };
    let (a, mut b) = (processor("a"), Some(processor("b")));
    // The processors record that the deployment uses ordering (the logger
    // indexes each user's PENDING events from its next create on).
    eventually(Duration::from_secs(20), "ordering recorded", || async {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port().to_string(),
                "hget",
                "herald:meta",
                "ordering",
            ])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "1").then_some(())
    })
    .await;
    let client = logger.client().await;
    let mut made: Vec<Event> = Vec::new();
    for batch in 0..10 {
        let events = (0..100)
            .map(|i| EventInput {
                user_id: format!("user-{}", i % 10),
                description: format!("#{batch}.{i}"),
                ..EventInput::default()
            })
            .collect();
        let created = client.create_many(events).await.expect("create");
        made.extend(created.into_iter().map(|r| r.expect("created")));
        if batch == 4 {
            // Halfway: one processor dies with what it holds.
            eventually(Duration::from_secs(20), "deliveries under way", || async {
                (receiver.received().len() >= 200).then_some(())
            })
            .await;
            b.take().expect("b runs").kill();
        }
    }
    for event in &made {
        eventually(Duration::from_secs(60), "every event processed", || async {
            client
                .get_event(event.id)
                .await
                .ok()
                .filter(|e| e.status == EventStatus::Processed)
        })
        .await;
    }
    let users: HashMap<Uuid, String> = made.iter().map(|e| (e.id, e.user_id.clone())).collect();
    let order = order_per_user(&receiver, &users);
    assert_eq!(order.len(), 10);
    for (user, got) in order {
        let wanted: Vec<Uuid> = made
            .iter()
            .filter(|e| e.user_id == user)
            .map(|e| e.id)
            .collect();
        assert_eq!(got, wanted, "{user}'s requests, in creation order");
    }
    a.shutdown.cancel();
    a.handle.await.expect("join").expect("processor a");
    logger.stop_within(Duration::from_secs(10)).await;
}
