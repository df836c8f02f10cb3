//! Live notifications over gRPC: filters, resuming after a cursor (also
//! across a logger restart), gap and lag notices, heartbeats, many
//! subscribers, and two loggers sharing one Redis.

use std::{collections::HashSet, time::Duration};

use common::{Lines, Logger, expect_event, next_event};
use futures_util::StreamExt;
use herald::{
    EventStatus,
    domain::EventInput,
    pb::{self, notifier_client::NotifierClient, subscribe_response::Kind},
};
use herald_client::{Message, RetryPolicy, SubscribeOptions, Subscription};
use herald_storage::testing::{RedisServer, skip_redis_tests};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::common;

/// The events of the next `n` event messages, in order.
async fn take_events(stream: &mut Subscription, n: usize) -> Vec<(Uuid, EventStatus, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = expect_event(stream).await;
        out.push((got.event.id, got.event.status, got.cursor));
    }
    out
}

/// Asserts that no further event arrives within 300 ms.
async fn assert_quiet(stream: &mut Subscription) {
    if let Some(extra) = next_event(stream, Duration::from_millis(300)).await {
        panic!("unexpected message {extra:?}");
    }
}

fn input(user: &str, description: &str) -> EventInput {
    EventInput {
        user_id: user.into(),
        description: description.into(),
        ..EventInput::default()
    }
}

#[tokio::test]
async fn filters_choose_which_changes_a_subscriber_gets() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    // A dashboard: every user's changes into any status.
    let mut dashboard = client
        .subscribe_with(SubscribeOptions {
            statuses: EventStatus::ALL.to_vec(),
            ..SubscribeOptions::default()
        })
        .await
        .expect("dashboard");
    let mut billing = client
        .subscribe_with(SubscribeOptions {
            user_id: "ann".into(),
            categories: vec!["billing".into()],
            ..SubscribeOptions::default()
        })
        .await
        .expect("billing");
    let mut session = client
        .subscribe_with(SubscribeOptions {
            types: vec!["pageview".into(), "click".into()],
            session_id: "s-1".into(),
            statuses: vec![EventStatus::Pending],
            ..SubscribeOptions::default()
        })
        .await
        .expect("session");

    let invoice = client
        .create(EventInput {
            category: "billing".into(),
            ..input("ann", "Invoice ready")
        })
        .await
        .expect("create");
    let promo = client
        .create(EventInput {
            category: "marketing".into(),
            ..input("ann", "A promotion")
        })
        .await
        .expect("create");
    let view = client
        .create(EventInput {
            event_type: "click".into(),
            session_id: "s-1".into(),
            payload: Some(serde_json::from_str(r#"{"element": "buy"}"#).expect("json")),
            ..input("bob", "Clicked buy")
        })
        .await
        .expect("create");

    // The dashboard sees each event created (PENDING) and processed, in log order.
    let seen = take_events(&mut dashboard, 6).await;
    for id in [invoice.id, promo.id, view.id] {
        let statuses: Vec<EventStatus> = seen
            .iter()
            .filter(|(e, _, _)| *e == id)
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(statuses, [EventStatus::Pending, EventStatus::Processed]);
    }
    let cursors: Vec<herald::cursor::Cursor> = seen
        .iter()
        .map(|(_, _, c)| c.parse().expect("cursor"))
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "log order");
    // Ann's billing notification only, when processed.
    let got = expect_event(&mut billing).await;
    assert_eq!(
        (got.event.id, got.event.status),
        (invoice.id, EventStatus::Processed)
    );
    assert_quiet(&mut billing).await;
    // The session's click as it was created.
    let got = expect_event(&mut session).await;
    assert_eq!(
        (got.event.id, got.event.status),
        (view.id, EventStatus::Pending)
    );
    assert_quiet(&mut session).await;
    // Opening is a change the dashboard hears of too.
    client
        .update_status(invoice.id, EventStatus::Opened)
        .await
        .expect("open");
    let opened = take_events(&mut dashboard, 1).await;
    assert_eq!(opened[0].0, invoice.id);
    assert_eq!(opened[0].1, EventStatus::Opened);

    // Bad filters are refused, naming the field.
    let err = client
        .subscribe_with(SubscribeOptions {
            after_cursor: "yesterday".into(),
            categories: vec![" ".into()],
            ..SubscribeOptions::default()
        })
        .await
        .err()
        .expect("invalid");
    let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["categories[0]", "after_cursor"]);
    logger.stop_within(Duration::from_secs(10)).await;
}

/// A live subscription starts where the log ends when it joins, even on a
/// logger with no subscriber (whose tail does not follow the log then):
/// a change logged just before it is not sent, the next one is.
#[tokio::test]
async fn a_live_subscription_starts_at_the_end_of_the_log() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    // Something in the log, then a pause: the tail has started and naps.
    client
        .create(input("cleo", "long ago"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = client
        .create(input("cleo", "before"))
        .await
        .expect("create");
    let mut stream = client
        .subscribe_with(SubscribeOptions {
            user_id: "cleo".into(),
            statuses: vec![EventStatus::Pending],
            ..SubscribeOptions::default()
        })
        .await
        .expect("subscribe");
    let after = client.create(input("cleo", "after")).await.expect("create");
    let first = expect_event(&mut stream).await;
    assert_eq!(
        first.event.id, after.id,
        "{} was logged before the subscription",
        before.id
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn resuming_after_a_cursor_has_no_gap_and_no_duplicate() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let mut first = client.subscribe("cy").await.expect("subscribe");
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            client
                .create_event("cy", &format!("before {i}"))
                .await
                .expect("create")
                .id,
        );
    }
    let heard = take_events(&mut first, 3).await;
    let cursor = heard[2].2.clone();
    drop(first);

    // Events keep coming while the subscriber comes back.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200 {
                ids.push(
                    client
                        .create_event("cy", &format!("during {i}"))
                        .await
                        .expect("create")
                        .id,
                );
            }
            ids
        })
    };
    // The raw stream: the server's own guarantee, without the client
    // library's safety net of dropping repeats.
    let mut resumed = NotifierClient::new(logger.channel().await)
        .subscribe(pb::SubscribeRequest {
            user_id: "cy".into(),
            after_cursor: cursor,
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    created.extend(writer.await.expect("writer"));
    let mut all: Vec<Uuid> = heard.iter().map(|(id, _, _)| *id).collect();
    loop {
        let message = tokio::time::timeout(Duration::from_millis(500), resumed.message()).await;
        match message {
            Err(_) if all.len() >= created.len() => break,
            Err(_) => panic!("only {} of {} arrived", all.len(), created.len()),
            Ok(Ok(Some(pb::SubscribeResponse {
                kind: Some(Kind::Event(event)),
                ..
            }))) => all.push(event.event_id.parse().expect("uuid")),
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("stream ended: {other:?}"),
        }
    }
    // Each event once; per user, notifications follow processing order, which
    // for one embedded worker may differ from creation order.
    assert_eq!(all.len(), created.len());
    assert_eq!(
        all.iter().collect::<HashSet<_>>(),
        created.iter().collect::<HashSet<_>>()
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_cursor_outside_the_kept_history_is_told_first() {
    let logger = Logger::start(&["--notifications-max-len", "10"], Lines::default().sink()).await;
    let client = logger.client().await;
    let mut early = client.subscribe("di").await.expect("subscribe");
    for i in 0..30 {
        client
            .create_event("di", &format!("n{i}"))
            .await
            .expect("create");
    }
    let first = take_events(&mut early, 30).await;
    drop(early);

    let mut resumed = client
        .subscribe_with(SubscribeOptions {
            after_cursor: first[0].2.clone(),
            ..SubscribeOptions::user("di")
        })
        .await
        .expect("resume");
    match resumed.next().await.expect("a message").expect("ok") {
        Message::HistoryGap {
            requested_cursor,
            oldest_cursor,
            reason,
        } => {
            assert_eq!(requested_cursor, first[0].2);
            assert!(reason.contains("trimmed"), "{reason}");
            let oldest: herald::cursor::Cursor = oldest_cursor.parse().expect("cursor");
            assert!(oldest > requested_cursor.parse().expect("cursor"));
        }
        other => panic!("expected a gap notice first, got {other:?}"),
    }
    // Then what is kept: the newest notifications, up to the last one.
    let kept = take_events(&mut resumed, 1).await;
    assert!(first.iter().any(|(id, _, _)| *id == kept[0].0));

    // A cursor beyond the log (one from before a reset) is told too.
    let partitions = herald::partition::Partitions::default();
    let mut beyond = herald::cursor::Cursor::start(partitions);
    for p in partitions.all() {
        beyond.advance(
            p,
            herald::cursor::EntryId {
                ms: 0,
                seq: 999_999,
            },
        );
    }
    let mut ahead = client
        .subscribe_with(SubscribeOptions {
            after_cursor: beyond.to_string(),
            ..SubscribeOptions::user("di")
        })
        .await
        .expect("resume");
    match ahead.next().await.expect("a message").expect("ok") {
        Message::HistoryGap { reason, .. } => assert!(reason.contains("reset"), "{reason}"),
        other => panic!("expected a gap notice first, got {other:?}"),
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn idle_streams_get_heartbeats_with_a_cursor_to_resume_from() {
    let logger = Logger::start(&["--heartbeat", "1s"], Lines::default().sink()).await;
    let client = logger.client().await;
    let mut stream = client.subscribe("eve").await.expect("subscribe");
    let mut heartbeats = Vec::new();
    while heartbeats.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a heartbeat within 5 s")
            .expect("open")
            .expect("ok")
        {
            Message::Heartbeat { cursor } => heartbeats.push(cursor),
            other => panic!("only heartbeats on an idle stream, got {other:?}"),
        }
    }
    // Resuming after a heartbeat's cursor yields what came later.
    let event = client.create_event("eve", "later").await.expect("create");
    let mut resumed = client
        .subscribe_with(SubscribeOptions {
            after_cursor: heartbeats[1].clone(),
            ..SubscribeOptions::user("eve")
        })
        .await
        .expect("resume");
    assert_eq!(expect_event(&mut resumed).await.event.id, event.id);
    assert_eq!(expect_event(&mut stream).await.event.id, event.id);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_cut_off_without_slowing_others() {
    let logger = Logger::start(&["--subscriber-buffer", "16"], Lines::default().sink()).await;
    let client = logger.client().await;
    // A raw stream nobody reads: its HTTP/2 window fills, then its queue.
    let mut raw = NotifierClient::new(logger.channel().await);
    let mut stuck = raw
        .subscribe(pb::SubscribeRequest {
            user_id: "fay".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut reader = client.subscribe("gus").await.expect("subscribe");
    // A slow client-library reader: cut off too, but it resumes by itself.
    let mut slow = client.subscribe("fay").await.expect("subscribe");

    let text = "x".repeat(3_500);
    let mut fays = Vec::new();
    let mut guss = Vec::new();
    for i in 0..600 {
        let batch = vec![input("fay", &text), input("gus", &format!("g{i}"))];
        let created = client.create_many(batch).await.expect("create");
        fays.push(created[0].as_ref().expect("fay").id);
        guss.push(created[1].as_ref().expect("gus").id);
    }
    // The reading subscriber got everything, promptly.
    let got: Vec<Uuid> = take_events(&mut reader, guss.len())
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(got.iter().collect::<HashSet<_>>(), guss.iter().collect());

    // The stuck one: what it had buffered, then Lagged, then RESOURCE_EXHAUSTED.
    let mut events = 0;
    let lagged_cursor = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stuck.message())
            .await
            .expect("in time");
        match message {
            Ok(Some(pb::SubscribeResponse {
                kind: Some(Kind::Event(_)),
                ..
            })) => events += 1,
            Ok(Some(pb::SubscribeResponse {
                kind: Some(Kind::Lagged(_)),
                cursor,
                ..
            })) => break cursor,
            Ok(Some(_)) => {}
            other => panic!("expected a Lagged message, got {other:?}"),
        }
    };
    assert!(events < fays.len(), "cut off before the end ({events})");
    assert!(!lagged_cursor.is_empty());
    let end = stuck.message().await.expect_err("ends with an error");
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end}");

    // The library's slow reader resumed after its lag and lost nothing.
    let heard: Vec<Uuid> = take_events(&mut slow, fays.len())
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(heard.iter().collect::<HashSet<_>>(), fays.iter().collect());
    assert_eq!(heard.len(), fays.len(), "no duplicates");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_thousand_subscribers_each_get_exactly_their_own() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let mut streams = Vec::new();
    for i in 0..1_000 {
        streams.push(
            client
                .subscribe(&format!("user-{i}"))
                .await
                .expect("subscribe"),
        );
    }
    let mut expected = Vec::new();
    for chunk in 0..2 {
        let batch: Vec<EventInput> = (0..1_000)
            .map(|i| input(&format!("user-{i}"), &format!("n{chunk}")))
            .collect();
        let created = client.create_many(batch).await.expect("create");
        expected.push(
            created
                .into_iter()
                .map(|r| r.expect("created").id)
                .collect::<Vec<_>>(),
        );
    }
    let readers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            let want: HashSet<Uuid> = [expected[0][i], expected[1][i]].into();
            tokio::spawn(async move {
                let got: HashSet<Uuid> = take_events(&mut stream, 2)
                    .await
                    .into_iter()
                    .map(|(id, _, _)| id)
                    .collect();
                assert_eq!(got, want, "user-{i}");
                assert_quiet(&mut stream).await;
            })
        })
        .collect();
    for reader in readers {
        reader.await.expect("reader");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn shutdown_ends_ten_thousand_streams_within_the_grace_time() {
    let logger = Logger::start(&["--shutdown-grace", "5000ms"], Lines::default().sink()).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let channel = logger.channel().await;
        for j in 0..500 {
            let mut raw = NotifierClient::new(channel.clone());
            let stream = raw
                .subscribe(pb::SubscribeRequest {
                    user_id: format!("user-{j}"),
                    ..Default::default()
                })
                .await
                .expect("subscribe")
                .into_inner();
            streams.push(stream);
        }
    }
    assert_eq!(streams.len(), 10_000);
    let started = tokio::time::Instant::now();
    logger.shutdown.cancel();
    for stream in &mut streams {
        loop {
            match tokio::time::timeout_at(started + Duration::from_secs(5), stream.message())
                .await
                .expect("every stream ends within the grace time")
            {
                Ok(Some(_)) => continue, // a heartbeat sent before the end
                Ok(None) => panic!("a stream ended without a status"),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                    break;
                }
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(10), logger.handle)
        .await
        .expect("logger stopped in time")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn subscribers_on_one_logger_hear_events_created_through_another() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let a = Logger::start(
        &["--redis-url", &redis.url(), "--worker"],
        Lines::default().sink(),
    )
    .await;
    let b = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let mut on_a = a.client().await.subscribe("hal").await.expect("subscribe");
    let event = b
        .client()
        .await
        .create_event("hal", "through b")
        .await
        .expect("create");
    assert_eq!(expect_event(&mut on_a).await.event.id, event.id);
    a.stop_within(Duration::from_secs(10)).await;
    b.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_subscription_resumes_across_a_logger_restart_without_loss_or_duplicate() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let args = ["--redis-url", &redis.url(), "--worker"];
    let first = Logger::start(&args, Lines::default().sink()).await;
    let port = first.addr.port();
    let other = Logger::start(&args, Lines::default().sink()).await;
    let writer = other.client().await;
    // Patient enough to wait out the restart.
    let client = first.client().await.with_resubscribe(RetryPolicy {
        retries: 50,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    });
    let mut stream = client.subscribe("ida").await.expect("subscribe");
    let mut created = Vec::new();
    for i in 0..10 {
        created.push(
            writer
                .create_event("ida", &format!("before {i}"))
                .await
                .expect("create")
                .id,
        );
    }
    let mut heard: Vec<Uuid> = take_events(&mut stream, 10)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();

    first.stop_within(Duration::from_secs(10)).await;
    for i in 0..20 {
        created.push(
            writer
                .create_event("ida", &format!("while down {i}"))
                .await
                .expect("create")
                .id,
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the same port again");
    let config =
        herald_logger::Config::from_args(&[&args[..], &["--metrics-listen", "off"]].concat());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let restarted = tokio::spawn(herald_logger::run(listener, config, shutdown.clone()));
    heard.extend(
        take_events(&mut stream, 20)
            .await
            .into_iter()
            .map(|(id, _, _)| id),
    );
    assert_quiet(&mut stream).await;
    assert_eq!(heard.len(), created.len());
    assert_eq!(
        heard.iter().collect::<HashSet<_>>(),
        created.iter().collect::<HashSet<_>>()
    );
    shutdown.cancel();
    restarted.await.expect("join").expect("clean stop");
    other.stop_within(Duration::from_secs(10)).await;
}
