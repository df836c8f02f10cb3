//! Subscribers that read slowly or not at all, over raw HTTP/2 streams
//! (`hostile::Raw`) whose windows fill: what they make the logger hold, when
//! they are cut off, and that a subscriber that keeps up never is.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Lines, Logger, Scrape, eventually};
use futures_util::StreamExt;
use herald::pb;
use prost::Message;

use crate::{
    common,
    hostile::{Raw, first_message},
};

/// Creates `n` events of about 2 KB each in one call.
async fn create_big_events(client: &herald_client::Client, n: usize) {
    let events = (0..n)
        .map(|i| herald::domain::EventInput {
            user_id: format!("u{i}"),
            description: "d".repeat(2000),
            ..Default::default()
        })
        .collect();
    client.create_many(events).await.expect("created");
}

#[tokio::test]
async fn subscribers_that_stop_reading_hold_nothing_once_cut_off() {
    let logger = Logger::start(&["--subscriber-buffer", "64"], Lines::default().sink()).await;
    let client = logger.client().await;
    // 200 streams of every user's changes that are never read.
    let mut raw = Raw::connect(logger.addr).await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(raw.subscribe_to_new_events().await);
    }
    eventually(Duration::from_secs(10), "200 streams open", || async {
        (client.stats().await.ok()?.active_subscribers == 200).then_some(())
    })
    .await;
    for _ in 0..4 {
        create_big_events(&client, 100).await;
    }
    // Every queue overflowed and was emptied on the spot, though each
    // stream is still open and unread.
    eventually(Duration::from_secs(20), "queues freed", || async {
        let page = Scrape::of(logger.metrics_addr).await;
        (page.get("herald_subscriber_buffered_bytes", &[]) == 0.0).then_some(())
    })
    .await;
    assert_eq!(held.len(), 200);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn one_clients_queues_share_a_byte_budget() {
    let logger = Logger::start(
        &["--max-buffered-bytes-per-client", "65536"],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let mut raw = Raw::connect(logger.addr).await;
    let (response, _stream) = raw.subscribe_to_new_events().await;
    let response = response.await.expect("stream starts");
    let mut body = response.into_body();
    // 100 events of 2 KB: more than the budget, far fewer than the buffer.
    create_big_events(&client, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Now read: the stream ends with a Lagged message and RESOURCE_EXHAUSTED.
    let messages = read_to_the_end(&mut body, "8").await;
    let events = messages
        .iter()
        .filter(|m| matches!(m.kind, Some(pb::subscribe_response::Kind::Event(_))))
        .count();
    assert!(
        events < 40,
        "cut off by the budget, not the buffer: {events}"
    );
    assert!(matches!(
        messages.last().and_then(|m| m.kind.as_ref()),
        Some(pb::subscribe_response::Kind::Lagged(_))
    ));
    logger.stop_within(Duration::from_secs(10)).await;
}

/// Reads a Subscribe stream's body to its end: its messages, after checking
/// that its trailers' grpc-status is `status`.
async fn read_to_the_end(body: &mut h2::RecvStream, status: &str) -> Vec<pb::SubscribeResponse> {
    let mut data = BytesMut::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("data in time")
    {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(trailers.get("grpc-status").expect("status"), status);
    let mut messages = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 5 {
        let message = first_message(&Bytes::copy_from_slice(rest)).to_vec();
        rest = &rest[5 + message.len()..];
        messages.push(pb::SubscribeResponse::decode(&message[..]).expect("message"));
    }
    messages
}

/// Catching up from the log is bounded as live streams are: 40 streams
/// resuming at the start of a log of 2 KB events and never reading hold at
/// most their client's budget while they stall, are cut off once they have
/// taken nothing for two heartbeats (their queues freed at once, and a
/// stream read later says so), and meanwhile other calls answer; a client
/// that reads catches up whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_streams_that_never_read_are_bounded_and_cut_off() {
    let budget = 512 * 1024;
    let logger = Logger::start(
        &[
            "--subscriber-buffer",
            "64",
            "--max-buffered-bytes-per-client",
            &budget.to_string(),
            "--heartbeat",
            "1s",
        ],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let mut watch = client
        .subscribe_with(herald_client::SubscribeOptions {
            statuses: herald::EventStatus::ALL.to_vec(),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let start = match watch.next().await {
        Some(Ok(herald_client::Message::Heartbeat { cursor })) => cursor,
        other => panic!("a live stream starts with its cursor: {other:?}"),
    };
    drop(watch);
    for _ in 0..10 {
        create_big_events(&client, 100).await;
    }
    eventually(Duration::from_secs(30), "every event processed", || async {
        (client.stats().await.ok()?.processed_events == 1000).then_some(())
    })
    .await;

    let mut raw = Raw::connect(logger.addr).await;
    let mut stalled = Vec::new();
    for _ in 0..39 {
        stalled.push(raw.subscribe_after(&start).await);
    }
    // One on a connection of its own, whose window the others do not use
    // up, to be read at the end.
    let (last, _send) = Raw::connect(logger.addr)
        .await
        .subscribe_after(&start)
        .await;
    // While they stall, what they hold stays within the budgets, and other
    // calls answer at once.
    let mut peak = 0.0f64;
    for _ in 0..10 {
        let held = Scrape::of(logger.metrics_addr)
            .await
            .get("herald_subscriber_buffered_bytes", &[]);
        peak = peak.max(held);
        tokio::time::timeout(Duration::from_secs(2), client.stats())
            .await
            .expect("GetStats in time")
            .expect("GetStats");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Open mode: each of the two connections has a budget of its own.
    assert!(peak <= 2.0 * budget as f64, "{peak} bytes held");
    // Two heartbeats without a read: every catch-up queue is cut off and freed.
    eventually(Duration::from_secs(20), "stalled queues freed", || async {
        let page = Scrape::of(logger.metrics_addr).await;
        (page.get("herald_subscriber_buffered_bytes", &[]) == 0.0).then_some(())
    })
    .await;
    let mut body = last.await.expect("stream starts").into_body();
    let messages = read_to_the_end(&mut body, "8").await;
    assert!(
        matches!(
            messages.last().and_then(|m| m.kind.as_ref()),
            Some(pb::subscribe_response::Kind::Lagged(_))
        ),
        "told it was cut off"
    );
    // A client that reads catches up whole, in order, and goes on live.
    let mut reader = client
        .subscribe_with(herald_client::SubscribeOptions {
            statuses: herald::EventStatus::ALL.to_vec(),
            after_cursor: start,
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let mut changes = 0;
    while changes < 2000 {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(Ok(herald_client::Message::Event(_)))) => changes += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("after {changes} changes: {other:?}"),
        }
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

/// In open mode every caller is anonymous, yet slow subscribers on one
/// connection never cut off a fast one on another: each connection has a
/// budget of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_open_mode_slow_connections_never_cut_off_a_fast_one() {
    let logger = Logger::start(
        &["--max-buffered-bytes-per-client", "4194304"],
        Lines::default().sink(),
    )
    .await;
    let slow = Raw::connect(logger.addr).await;
    let fast = pb::notifier_client::NotifierClient::new(logger.channel().await)
        .subscribe(new_events())
        .await
        .expect("subscribe")
        .into_inner();
    a_fast_reader_keeps_up_beside_slow_ones(&logger, slow, fast).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

/// With keys, one key's streams share one budget, yet its slow streams
/// never cut off its fast one: past the budget the fullest queue goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_slow_streams_never_cut_off_its_fast_one() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = common::console_keys_file(&dir);
    let logger = Logger::start(
        &[
            "--max-buffered-bytes-per-client",
            "4194304",
            "--keys-file",
            &keys,
        ],
        Lines::default().sink(),
    )
    .await;
    let slow = Raw::connect_with_key(logger.addr, "reader-key").await;
    let mut request = tonic::Request::new(new_events());
    request
        .metadata_mut()
        .insert("authorization", "Bearer reader-key".parse().expect("key"));
    let fast = pb::notifier_client::NotifierClient::new(logger.channel().await)
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    a_fast_reader_keeps_up_beside_slow_ones(&logger, slow, fast).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

/// A Subscribe request for every user's new (PENDING) events.
fn new_events() -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        statuses: vec![pb::EventStatus::Pending as i32],
        ..Default::default()
    }
}

/// 30 streams on `slow` never read while `fast` reads every one of 1,000
/// new events of 2 KB (60 KB a change for the slow ones: a 4 MiB budget
/// is full after about 70), never cut off.
async fn a_fast_reader_keeps_up_beside_slow_ones(
    logger: &Logger,
    mut slow: Raw,
    mut fast: tonic::Streaming<pb::SubscribeResponse>,
) {
    let client = logger.client_with_key("admin-key").await;
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(slow.subscribe_to_new_events().await);
    }
    eventually(Duration::from_secs(10), "31 streams open", || async {
        (client.stats().await.ok()?.active_subscribers == 31).then_some(())
    })
    .await;
    let reader = tokio::spawn(async move {
        let mut events = 0;
        while events < 1000 {
            let message = tokio::time::timeout(Duration::from_secs(20), fast.message())
                .await
                .expect("a message in time")
                .unwrap_or_else(|status| panic!("after {events} events: {status}"))
                .expect("the stream goes on");
            match message.kind {
                Some(pb::subscribe_response::Kind::Event(_)) => events += 1,
                Some(pb::subscribe_response::Kind::Lagged(_)) => {
                    panic!("the fast reader was cut off after {events} events")
                }
                _ => {}
            }
        }
    });
    // Bursts well under the budget: past it, what tells the slow from the
    // fast is that their messages have waited longer.
    for _ in 0..100 {
        create_big_events(&client, 10).await;
    }
    reader.await.expect("the fast reader had every event");
    assert_eq!(held.len(), 30);
}
