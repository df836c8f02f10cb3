//! Operating Herald: the Prometheus endpoints of the logger and the
//! processor, and retention, on real servers over real sockets.

use std::time::Duration;

use common::{Lines, Logger, Processor, Scrape, eventually, http_get};
use herald::{EventStatus, domain::EventInput};
use herald_storage::testing::{RedisServer, skip_redis_tests};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common;

async fn wait_processed(client: &herald_client::Client, id: uuid::Uuid) {
    eventually(
        Duration::from_secs(10),
        "the event to be PROCESSED",
        || async {
            let event = client.get_event(id).await.expect("get");
            (event.status == EventStatus::Processed).then_some(())
        },
    )
    .await;
}

fn billing(user: &str) -> EventInput {
    EventInput {
        user_id: user.into(),
        description: "invoice sent".into(),
        category: "billing".into(),
        ..EventInput::default()
    }
}

#[tokio::test]
async fn the_logger_metrics_follow_what_it_does() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let _stream = client.subscribe("ann").await.expect("subscribe");
    let first = client.create(billing("ann")).await.expect("create");
    let refused = client.create(billing("")).await.expect_err("no user id");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let batch = client
        .create_many(vec![billing("bob"), billing(""), billing("cy")])
        .await
        .expect("create many");
    assert!(batch[1].is_err());
    for event in [
        &first,
        batch[0].as_ref().expect("ok"),
        batch[2].as_ref().expect("ok"),
    ] {
        wait_processed(&client, event.id).await;
    }

    let m = Scrape::of(logger.metrics_addr).await;
    let created = [("category", "billing"), ("type", "")];
    assert_eq!(m.get("herald_events_created_total", &created), 3.0);
    assert_eq!(
        m.get(
            "herald_events_rejected_total",
            &[("reason", "InvalidArgument")]
        ),
        2.0,
        "one refused call, one refused item"
    );
    assert_eq!(m.get("herald_events_published_total", &[]), 3.0);
    assert_eq!(m.get("herald_publish_failures_total", &[]), 0.0);
    assert_eq!(
        m.get("herald_status_updates_total", &[("status", "PROCESSED")]),
        3.0
    );
    assert_eq!(m.get("herald_events", &[("status", "PROCESSED")]), 3.0);
    assert_eq!(m.get("herald_events", &[("status", "PENDING")]), 0.0);
    assert_eq!(m.get("herald_subscribers_active", &[]), 1.0);
    // The embedded worker's own.
    assert_eq!(
        m.get("herald_notifications_sent_total", &[("channel", "line")]),
        3.0
    );
    assert_eq!(m.get("herald_processing_duration_seconds_count", &[]), 3.0);
    assert_eq!(m.get("herald_queue_pending", &[]), 0.0);
    assert_eq!(m.get("herald_queue_lag", &[]), 0.0);
    assert!(m.get("herald_uptime_seconds", &[]) > 0.0);
    // Every call, by method and code, from the one layer.
    let calls = |method: &str, code: &str| {
        m.value(
            "herald_rpc_duration_seconds_count",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(calls("herald.v1.EventLogger/CreateEvent", "OK"), Some(1.0));
    assert_eq!(
        calls("herald.v1.EventLogger/CreateEvent", "InvalidArgument"),
        Some(1.0)
    );
    assert_eq!(calls("herald.v1.EventLogger/CreateEvents", "OK"), Some(1.0));
    assert!(calls("herald.v1.EventLogger/GetEvent", "OK").is_some_and(|n| n >= 3.0));
    // The worker's settle calls go through its own listener, not counted here.
    assert_eq!(calls("herald.v1.EventLogger/BatchUpdateStatus", "OK"), None);

    let (status, _) = http_get(logger.metrics_addr, "/").await;
    assert_eq!(status, 404);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn calls_refused_by_the_auth_layer_are_counted_too() {
    // One call's worth of burst, then nothing for a long while.
    let logger = Logger::start(
        &["--rate-limit", "0.001", "--rate-burst", "1"],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await.with_retry(common::NO_RETRIES);
    client.create_event("ann", "first").await.expect("admitted");
    let limited = client
        .create_event("ann", "second")
        .await
        .expect_err("over the limit");
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(
        m.get(
            "herald_events_rejected_total",
            &[("reason", "ResourceExhausted")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "herald_rpc_duration_seconds_count",
            &[
                ("method", "herald.v1.EventLogger/CreateEvent"),
                ("code", "ResourceExhausted")
            ]
        ),
        1.0
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_processor_metrics_count_failures_and_dead_letters() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let client = logger.client().await;
    for i in 0..3 {
        client
            .create_event("dee", &format!("undeliverable {i}"))
            .await
            .expect("create");
    }
    // Every attempt is lost: each event fails after two.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_addr = listener.local_addr().expect("addr");
    let config = Processor::config(
        &redis.url(),
        &logger.url(),
        "",
        &[
            "--sink",
            "simulated",
            "--loss-ratio",
            "1",
            "--max-deliveries",
            "2",
            "--retry-backoff",
            "1ms",
            "--block",
            "200ms",
        ],
    );
    let shutdown = CancellationToken::new();
    let processor = tokio::spawn(herald_processor::run_with(
        config,
        Some(listener),
        Lines::default().sink(),
        shutdown.clone(),
    ));
    let m = eventually(Duration::from_secs(10), "three dead letters", || async {
        let m = Scrape::of(metrics_addr).await;
        (m.value("herald_dead_letters", &[]) == Some(3.0)).then_some(m)
    })
    .await;
    assert_eq!(
        m.get(
            "herald_notifications_failed_total",
            &[("channel", "simulated"), ("reason", "simulated_loss")]
        ),
        6.0
    );
    assert_eq!(
        m.value(
            "herald_notifications_sent_total",
            &[("channel", "simulated")]
        ),
        None
    );
    assert_eq!(m.get("herald_dead_lettered_total", &[]), 3.0);
    assert_eq!(m.get("herald_queue_pending", &[]), 0.0);
    assert_eq!(m.get("herald_queue_lag", &[]), 0.0);
    assert_eq!(m.get("herald_queue_length", &[]), 3.0);
    assert!(m.get("herald_uptime_seconds", &[]) > 0.0);
    let logged = Scrape::of(logger.metrics_addr).await;
    assert_eq!(logged.get("herald_events", &[("status", "FAILED")]), 3.0);
    assert_eq!(logged.get("herald_dead_letters", &[]), 3.0);
    shutdown.cancel();
    processor.await.expect("join").expect("processor ran");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn retention_removes_settled_events_and_keeps_pending_ones() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    // No processor: events stay PENDING until marked by hand.
    let logger = Logger::start(
        &[
            "--redis-url",
            &redis.url(),
            "--request-id-window",
            "1s",
            "--retention",
            "2s",
            "--retention-interval",
            "200ms",
        ],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let done = client.create_event("eve", "done").await.expect("create");
    let waiting = client.create_event("eve", "waiting").await.expect("create");
    client
        .update_status(done.id, EventStatus::Processed)
        .await
        .expect("processed");
    eventually(
        Duration::from_secs(15),
        "the settled event to go",
        || async {
            match client.get_event(done.id).await {
                Err(err) if err.code() == tonic::Code::NotFound => Some(()),
                Ok(_) => None,
                Err(err) => panic!("{err}"),
            }
        },
    )
    .await;
    let kept = client.get_event(waiting.id).await.expect("PENDING stays");
    assert_eq!(kept.status, EventStatus::Pending);
    let stats = client.stats().await.expect("stats");
    assert_eq!((stats.total_events, stats.pending_events), (1, 1));
    let listed = client
        .list_events(herald_client::ListEvents::new())
        .await
        .expect("list");
    assert_eq!(
        listed.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [waiting.id]
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[test]
fn bad_retention_settings_name_the_option() {
    let config = herald_logger::Config::from_args(&["--retention", "1h"]);
    let err = config
        .retention()
        .expect_err("shorter than the request-id window");
    assert!(err.to_string().contains("--retention"), "{err}");
    let err = <herald_logger::Config as clap::Parser>::try_parse_from([
        "herald-logger",
        "--retention",
        "soon",
    ])
    .expect_err("not a duration");
    assert!(err.to_string().contains("--retention"), "{err}");
    let off = herald_logger::Config::from_args(&["--retention", "off"]);
    assert_eq!(off.retention().expect("valid").max_age, None);
}

/// Writes `toml` to a config file in a new directory.
fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, toml).expect("write");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path)
}

fn parse(args: &[&str]) -> Result<herald_logger::Config, String> {
    let argv = std::iter::once("herald-logger")
        .chain(args.iter().copied())
        .map(Into::into)
        .collect();
    herald_runtime::process::try_parse_args(argv).map_err(|e| e.to_string())
}

#[test]
fn a_config_file_sets_options_under_the_flags() {
    let (_dir, path) = config_file(
        r#"
        redis-url = "redis://127.0.0.1:1/"
        heartbeat = "7s"
        max-streams-per-client = 5
        worker = true
        retention = "7d"
        metrics-listen = "off"
        max-deliveries = 3
        log-format = "json"
        "#,
    );
    let config = parse(&["--config", &path, "--heartbeat", "9s"]).expect("valid");
    assert_eq!(
        config.redis.redis_url.as_deref(),
        Some("redis://127.0.0.1:1/")
    );
    assert_eq!(
        config.heartbeat,
        Duration::from_secs(9),
        "the flag wins over the file"
    );
    assert_eq!(config.max_streams_per_client, 5);
    assert!(config.worker);
    assert_eq!(
        config.retention().expect("valid").max_age,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(config.metrics_listen.0, None);
    assert_eq!(config.embedded_worker.max_deliveries, 3);
    assert_eq!(
        config.log.log_format,
        herald_runtime::process::LogFormat::Json
    );
    // Untouched options keep their defaults.
    assert_eq!(config.subscriber_buffer, 1_024);
}

#[test]
fn a_bad_config_file_names_the_file_and_the_option() {
    let cases = [
        ("heartbeat = \"0s\"", "--heartbeat"),
        ("claim-idle = 30000", "--claim-idle"),
        ("retention = \"soon\"", "--retention"),
        ("no-such-option = 1", "`no-such-option`"),
        ("worker = \"yes\"", "`worker` must be true or false"),
        ("listen = [1, 2]", "--listen"),
        ("this is not toml", "not valid TOML"),
    ];
    for (toml, named) in cases {
        let (_dir, path) = config_file(toml);
        let err = parse(&["--config", &path]).expect_err(toml);
        assert!(
            err.contains(named) && err.contains("herald.toml"),
            "{toml}: {err}"
        );
    }
    let err = parse(&["--config", "/nonexistent/herald.toml"]).expect_err("missing");
    assert!(err.contains("--config: cannot read"), "{err}");
}

#[tokio::test]
async fn a_trace_follows_the_event_through_the_queue_and_the_processor() {
    if skip_redis_tests() {
        return;
    }
    use herald::{pb, trace::TraceParent};
    let redis = RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let processor = Processor::start(
        &redis.url(),
        &logger.url(),
        &["--block", "200ms"],
        Lines::default().sink(),
    );
    let caller = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("valid");
    let mut raw = pb::event_logger_client::EventLoggerClient::new(logger.channel().await);
    let request = pb::CreateEventRequest {
        user_id: "tia".into(),
        description: "traced".into(),
        ..Default::default()
    };
    let created = raw
        .create_event(common::traced(request, &caller))
        .await
        .expect("create")
        .into_inner()
        .event
        .expect("event");
    let at_creation = TraceParent::parse(&created.traceparent).expect("a traceparent");
    assert_eq!(
        at_creation.trace_id(),
        caller.trace_id(),
        "the caller's trace"
    );
    assert_ne!(
        at_creation.span_id(),
        caller.span_id(),
        "the logger's own span"
    );

    let client = logger.client().await;
    let id = created.event_id.parse().expect("uuid");
    wait_processed(&client, id).await;
    let processed = client.get_event(id).await.expect("get");
    let settled = processed.traceparent.expect("a traceparent");
    assert_eq!(
        settled.trace_id(),
        caller.trace_id(),
        "the processor continued the trace it found in the queue entry"
    );
    assert_ne!(
        settled.span_id(),
        at_creation.span_id(),
        "and its status change carried its own span"
    );

    // A single UpdateStatus takes the call's traceparent header.
    let opener = caller.child();
    let request = pb::UpdateStatusRequest {
        event_id: id.to_string(),
        status: EventStatus::Opened.to_pb() as i32,
        ..Default::default()
    };
    let opened = raw
        .update_status(common::traced(request, &opener))
        .await
        .expect("opened")
        .into_inner();
    assert_eq!(opened.event.expect("event").traceparent, opener.to_string());

    // Without a header, an event starts a trace of its own.
    let untraced = client
        .create_event("tia", "untraced")
        .await
        .expect("create");
    let own = untraced.traceparent.expect("a new trace");
    assert_ne!(own.trace_id(), caller.trace_id());
    processor.kill();
    logger.stop_within(Duration::from_secs(10)).await;
}
