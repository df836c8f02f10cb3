//! The pipeline on a private redis-server: a logger and separate processors,
//! all in this process over real sockets, with faults injected.

use std::{collections::HashSet, time::Duration};

use common::{Lines, Logger, Processor, Scrape, eventually};
use herald::{Event, EventStatus};
use herald_client::Client;
use herald_processor::channels::notification_line;
use herald_storage::{
    self as storage, BackendTarget, Consumer, ConsumerOptions,
    testing::{RedisServer, skip_redis_tests},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::common;

/// A private redis-server with a logger on it and a client of that logger;
/// `None` when Redis tests are skipped.
async fn redis_and_logger() -> Option<(RedisServer, Logger, Client)> {
    if skip_redis_tests() {
        return None;
    }
    let redis = RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let client = logger.client().await;
    Some((redis, logger, client))
}

/// Waits until every event is PROCESSED.
async fn all_processed(client: &Client, ids: &[Uuid], limit: Duration) {
    for id in ids {
        eventually(limit, &format!("event {id} PROCESSED"), || async {
            let e = client.get_event(*id).await.ok()?;
            (e.status == EventStatus::Processed).then_some(())
        })
        .await;
    }
}

fn assert_each_printed(events: &[Event], lines: &[String]) {
    let printed: HashSet<&str> = lines.iter().map(String::as_str).collect();
    for e in events {
        assert!(
            printed.contains(notification_line(e).as_str()),
            "no line printed for {}",
            e.id
        );
    }
}

async fn create_many(client: &Client, n: usize, tag: &str) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("user-{}", i % 37);
        events.push(
            client
                .create_event(&user, &format!("{tag} {i}"))
                .await
                .expect("create"),
        );
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_process_a_thousand_events_none_lost() {
    let Some((redis, logger, client)) = redis_and_logger().await else {
        return;
    };
    let (lines_a, lines_b) = (Lines::default(), Lines::default());
    let a = Processor::start(
        &redis.url(),
        &logger.url(),
        &["--consumer-name", "a"],
        lines_a.sink(),
    );
    let b = Processor::start(
        &redis.url(),
        &logger.url(),
        &["--consumer-name", "b"],
        lines_b.sink(),
    );
    let mut subscription = client.subscribe("user-0").await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let events = create_many(&client, 1_000, "event").await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    all_processed(&client, &ids, Duration::from_secs(60)).await;

    // The subscriber heard of each of its user's events exactly once, and nothing else.
    common::assert_heard_once(&mut subscription, &events, "user-0").await;

    let mut lines = lines_a.lines();
    lines.extend(lines_b.lines());
    assert_each_printed(&events, &lines);
    assert!(
        !lines_a.lines().is_empty() && !lines_b.lines().is_empty(),
        "both processors took part"
    );

    a.shutdown.cancel();
    b.shutdown.cancel();
    a.handle.await.expect("join").expect("processor a");
    b.handle.await.expect("join").expect("processor b");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// Starts processor "a" that takes `n` entries but cannot finish them (its
/// logger answers, but its key may not change statuses, so UpdateStatus
/// never succeeds and nothing is acknowledged), waits until it holds all of
/// them, and kills it. Returns a consumer to inspect the group with, and
/// the lines "a" printed.
async fn strand_with_killed_processor(
    redis: &RedisServer,
    n: u64,
    args: &[&str],
) -> (std::sync::Arc<dyn Consumer>, Lines) {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.json");
    let entry = serde_json::json!({"keys": [{
        "client_id": "reader", "key_sha256": herald::auth::hash_key("reader-key"), "scopes": ["events:read"],
    }]});
    std::fs::write(&keys, entry.to_string()).expect("keys file");
    let refusing = Logger::start(
        &[
            "--redis-url",
            &redis.url(),
            "--keys-file",
            keys.to_str().expect("utf-8"),
        ],
        Lines::default().sink(),
    )
    .await;
    let lines = Lines::default();
    let mut args = args.to_vec();
    args.extend(["--consumer-name", "a"]);
    let a = Processor::start_with_key(
        &redis.url(),
        &refusing.url(),
        "reader-key",
        &args,
        lines.sink(),
    );
    let inspect = storage::open(&BackendTarget::Redis {
        url: redis.url(),
        prefix: "herald".into(),
    })
    .expect("backend")
    .queue
    .consumer(ConsumerOptions {
        name: "inspector".into(),
        claim_idle: Duration::from_secs(3600),
        block: Duration::from_millis(10),
    });
    eventually(
        Duration::from_secs(20),
        "entries pending with a",
        || async {
            let pending = inspect.pending_by_consumer().await.ok()?;
            (pending == [("a".to_owned(), n)]).then_some(())
        },
    )
    .await;
    a.kill();
    refusing.stop_within(Duration::from_secs(10)).await;
    (inspect, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_often_delivered_events_are_failed_and_dead_lettered() {
    let Some((redis, logger, client)) = redis_and_logger().await else {
        return;
    };
    let events = create_many(&client, 5, "poison").await;
    let (inspect, _) = strand_with_killed_processor(&redis, 5, &[]).await;

    // The reclaim is the second delivery: one more than "b" allows.
    let lines_b = Lines::default();
    let b = Processor::start(
        &redis.url(),
        &logger.url(),
        &[
            "--consumer-name",
            "b",
            "--claim-idle",
            "300ms",
            "--max-deliveries",
            "1",
        ],
        lines_b.sink(),
    );
    for e in &events {
        eventually(Duration::from_secs(20), "FAILED", || async {
            (client.get_event(e.id).await.ok()?.status == EventStatus::Failed).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(10), "nothing pending", || async {
        inspect
            .pending_by_consumer()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    // Every partition's dead letters, as the storage reads them back.
    let dead_letters = storage::open(&BackendTarget::Redis {
        url: redis.url(),
        prefix: "herald".into(),
    })
    .expect("backend")
    .dead_letters;
    let start = herald::cursor::Cursor::start(dead_letters.partitions());
    let dead = dead_letters
        .dead_letters(&start, 100)
        .await
        .expect("dead letters");
    let dead_ids: HashSet<Uuid> = dead.iter().map(|d| d.delivery.event.id).collect();
    let ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(dead_ids, ids);
    assert!(
        dead.iter()
            .all(|d| d.delivery.deliveries == 2 && d.reason.contains("2 times"))
    );
    assert!(lines_b.lines().is_empty(), "given up without sending again");

    b.shutdown.cancel();
    b.handle.await.expect("join").expect("processor b");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// The entries of a processor killed after it sent their notifications but
/// before it could settle them are reclaimed and settled by another, which
/// (its channels file's line channel recording each success) does not send
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processors_pending_entries_are_reclaimed() {
    let Some((redis, logger, client)) = redis_and_logger().await else {
        return;
    };
    let events = create_many(&client, 50, "doomed").await;
    let dir = tempfile::tempdir().expect("dir");
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        "[channels.line]\nkind = \"line\"\n[[routes]]\nchannels = [\"line\"]\n",
    )
    .expect("write");
    let channels = channels.to_str().expect("utf-8");

    let (inspect, lines_a) =
        strand_with_killed_processor(&redis, 50, &["--channels", channels]).await;

    let lines_b = Lines::default();
    let b = Processor::start(
        &redis.url(),
        &logger.url(),
        &[
            "--consumer-name",
            "b",
            "--claim-idle",
            "500ms",
            "--channels",
            channels,
        ],
        lines_b.sink(),
    );
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    all_processed(&client, &ids, Duration::from_secs(30)).await;
    // "a" printed lines it could not settle; their channel's success is in
    // the records, so "b" settles those without printing them again.
    let mut printed = lines_a.lines();
    printed.extend(lines_b.lines());
    assert_each_printed(&events, &printed);
    assert_eq!(printed.len(), events.len(), "each line once: {printed:?}");
    eventually(Duration::from_secs(10), "nothing pending", || async {
        inspect
            .pending_by_consumer()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;

    b.shutdown.cancel();
    b.handle.await.expect("join").expect("processor b");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_and_no_acknowledged_event_is_lost() {
    if skip_redis_tests() {
        return;
    }
    let mut redis = RedisServer::start_with_aof();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let lines = Lines::default();
    let p = Processor::start(
        &redis.url(),
        &logger.url(),
        &["--consumer-name", "p", "--claim-idle", "1000ms"],
        lines.sink(),
    );
    let client = logger.client().await;
    let mut health = HealthClient::new(logger.channel().await);
    let health_is = |want: ServingStatus| {
        let mut health = health.clone();
        async move {
            let r = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?;
            (r.into_inner().status == want as i32).then_some(())
        }
    };

    let mut events = create_many(&client, 100, "before").await;
    redis.stop();

    let err = client
        .create_event("alice", "while Redis is down")
        .await
        .expect_err("Redis is down");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let err = client
        .get_event(events[0].id)
        .await
        .expect_err("Redis is down");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    eventually(Duration::from_secs(10), "NOT_SERVING", || {
        health_is(ServingStatus::NotServing)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "every partition unwritable",
        || all_writable(&logger, 0.0),
    )
    .await;

    redis.restart();
    eventually(Duration::from_secs(20), "SERVING again", || {
        health_is(ServingStatus::Serving)
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "every partition writable again",
        || all_writable(&logger, 1.0),
    )
    .await;
    let first_after = eventually(Duration::from_secs(20), "creates succeed again", || async {
        client.create_event("alice", "after the restart").await.ok()
    })
    .await;
    events.push(first_after);
    events.extend(create_many(&client, 100, "after").await);

    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    all_processed(&client, &ids, Duration::from_secs(60)).await;
    assert_each_printed(&events, &lines.lines());
    let _ = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;

    p.shutdown.cancel();
    p.handle.await.expect("join").expect("processor");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// `Some(())` once every one of the 16 partitions' `herald_partition_writable`
/// gauges on `logger` is `want`.
async fn all_writable(logger: &Logger, want: f64) -> Option<()> {
    let scrape = Scrape::of(logger.metrics_addr).await;
    (0..16)
        .all(|p| {
            let p = format!("p{p:02}");
            scrape.value("herald_partition_writable", &[("partition", &p)]) == Some(want)
        })
        .then_some(())
}

/// A logger started while its Redis is down says every partition takes no
/// writes (its layout cannot even be checked), and each writable once
/// Redis is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_unwritable_while_redis_was_never_reached() {
    if skip_redis_tests() {
        return;
    }
    let mut redis = RedisServer::start();
    redis.stop();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    eventually(
        Duration::from_secs(10),
        "every partition unwritable",
        || all_writable(&logger, 0.0),
    )
    .await;
    redis.restart();
    eventually(Duration::from_secs(20), "every partition writable", || {
        all_writable(&logger, 1.0)
    })
    .await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_flag_embeds_a_processor_in_a_redis_logger() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let lines = Lines::default();
    let logger = Logger::start(&["--redis-url", &redis.url(), "--worker"], lines.sink()).await;
    let client = logger.client().await;
    let events = create_many(&client, 20, "embedded").await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    all_processed(&client, &ids, Duration::from_secs(30)).await;
    assert_each_printed(&events, &lines.lines());
    logger.stop_within(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_settle_soon_after_the_logger_comes_back() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let (listener, addr) = common::restartable_listener().await;
    let args = ["--redis-url", &redis.url()];
    let logger = Logger::start_on(listener, &args, Lines::default().sink()).await;
    // The processor starts while its logger answers (it takes no event
    // before), and settles a first event.
    let lines = Lines::default();
    let processor = Processor::start(
        &redis.url(),
        &format!("http://{addr}"),
        &["--claim-idle", "120000ms"],
        lines.sink(),
    );
    let first = create_many(&logger.client().await, 1, "before").await;
    all_processed(
        &logger.client().await,
        &[first[0].id],
        Duration::from_secs(15),
    )
    .await;
    logger.stop_within(Duration::from_secs(10)).await;

    // Its logger gone, events made through another one: the processor
    // delivers them, and its settles wait for longer than the client's own
    // retries, far less than the reclaim time.
    let other = Logger::start(&args, Lines::default().sink()).await;
    let events = create_many(&other.client().await, 50, "outage").await;
    eventually(Duration::from_secs(10), "every line printed", || async {
        (lines.lines().len() > events.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let listener = common::rebind(addr).await;
    let logger = Logger::start_on(listener, &args, Lines::default().sink()).await;
    let client = logger.client().await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    all_processed(&client, &ids, Duration::from_secs(5)).await;
    assert_eq!(
        lines.lines().len(),
        events.len() + 1,
        "each line printed once"
    );
    processor.shutdown.cancel();
    let _ = processor.handle.await;
    other.stop_within(Duration::from_secs(10)).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_processor_takes_no_event_until_its_logger_answers() {
    let Some((redis, logger, client)) = redis_and_logger().await else {
        return;
    };
    // The processor's logger is not there yet: a free port, nothing on it.
    let later = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let later_url = format!("http://{}", later.local_addr().expect("addr"));
    drop(later);
    let lines = Lines::default();
    let processor = Processor::start(&redis.url(), &later_url, &[], lines.sink());
    let event = client
        .create_event("ivy", "waits for its logger")
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        lines.lines().is_empty(),
        "nothing sent before a settle can work"
    );
    let pending = client.get_event(event.id).await.expect("get");
    assert_eq!(pending.status, EventStatus::Pending);

    // Its logger comes up: the event goes through, once.
    let listener = tokio::net::TcpListener::bind(later_url.trim_start_matches("http://"))
        .await
        .expect("the same port again");
    let second = Logger::start_on(
        listener,
        &["--redis-url", &redis.url()],
        Lines::default().sink(),
    )
    .await;
    all_processed(&client, &[event.id], Duration::from_secs(20)).await;
    assert_eq!(lines.lines(), [notification_line(&event)]);
    processor.shutdown.cancel();
    second.stop_within(Duration::from_secs(10)).await;
    logger.stop_within(Duration::from_secs(10)).await;
}
