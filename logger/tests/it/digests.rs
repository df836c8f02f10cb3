//! Digests end to end: a digest route collects each user's events of one
//! type over its window and sends them to a real webhook receiver as one
//! notification listing them; `max_events` seals a full digest at once; a
//! processor killed while it sends a digest leaves it to another, which
//! sends the same digest (same id, same events), never a second one.

use std::{collections::HashMap, time::Duration};

use herald::{Event, EventStatus, domain::EventInput};
use herald_client::Client;
use uuid::Uuid;

use crate::{
    channels::{Answer, Received, Receiver, answer, logger_with, status_of, webhook},
    common::{self, IsolatedProcessor, Lines, Logger, Scrape, eventually},
};

/// A digest as a webhook request carries it: its id and its events' ids.
fn digest_of(request: &Received) -> (Uuid, Vec<Uuid>) {
    let json: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    let digest = &json["payload"]["digest"];
    // Listed in the order they were made.
    assert_eq!(
        json["event_id"], digest["id"],
        "the digest is the event sent"
    );
    let events: Vec<Uuid> = digest["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").parse().expect("uuid"))
        .collect();
    assert_eq!(digest["count"], events.len(), "{json}");
    assert!(events.is_sorted(), "{events:?}");
    (request.event_id(), events)
}

/// `n` events of `user` and `event_type`, made in one call.
async fn create_many(client: &Client, user: &str, event_type: &str, n: usize) -> Vec<Event> {
    let inputs = (0..n)
        .map(|i| EventInput {
            user_id: user.into(),
            description: format!("{event_type} #{i}"),
            event_type: event_type.into(),
            ..EventInput::default()
        })
        .collect();
    client
        .create_many(inputs)
        .await
        .expect("create")
        .into_iter()
        .map(|r| r.expect("created"))
        .collect()
}

/// Checks that every event is PROCESSED, with one successful attempt of
/// channel `hooks` naming the digest `digests` says it went out in.
async fn each_went_out_in_its_digest(
    client: &Client,
    events: &[Event],
    digests: &HashMap<Uuid, Uuid>,
) {
    for event in events {
        status_of(client, event.id, EventStatus::Processed).await;
        let attempts = client.delivery_attempts(event.id).await.expect("attempts");
        let sent: Vec<_> = attempts.iter().filter(|a| a.succeeded).collect();
        assert_eq!(sent.len(), 1, "{attempts:?}");
        assert_eq!(sent[0].channel, "hooks");
        assert_eq!(
            sent[0].digest_id,
            digests.get(&event.id).copied(),
            "{attempts:?}"
        );
    }
}

/// Which digest each event went out in, from the requests; panics if an
/// event is in two digests.
fn membership(requests: &[Received]) -> HashMap<Uuid, Uuid> {
    let mut of = HashMap::new();
    for request in requests {
        let (digest, events) = digest_of(request);
        for event in events {
            let before = of.insert(event, digest);
            assert!(
                before.is_none_or(|d| d == digest),
                "event {event} in digests {before:?} and {digest}"
            );
        }
    }
    of
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_events_goes_out_as_one_notification_listing_them() {
    let hook = Receiver::start(|_| answer(204)).await;
    let file = format!(
        "{}[[routes]]\ntypes = [\"comment.*\"]\nchannels = [\"hooks\"]\ndigest = \"2s\"\n\
         [[routes]]\ntypes = [\"order.*\"]\nchannels = [\"hooks\"]\n",
        webhook("hooks", &hook.url, "")
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let ann = create_many(&client, "ann", "comment.created", 25).await;
    let bob = create_many(&client, "bob", "comment.created", 3).await;
    let order = create_many(&client, "ann", "order.paid", 1).await;
    // The order goes at once; the comments wait for their window.
    status_of(&client, order[0].id, EventStatus::Processed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.received().len(),
        1,
        "only the order before the window closes"
    );
    assert_eq!(
        client.get_event(ann[0].id).await.expect("get").status,
        EventStatus::Pending
    );

    eventually(Duration::from_secs(20), "two digests", || async {
        (hook.received().len() == 3).then_some(())
    })
    .await;
    let digests: Vec<(Uuid, Vec<Uuid>)> = hook.received()[1..].iter().map(digest_of).collect();
    let of_user = |events: &[Event]| {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        digests
            .iter()
            .find(|(_, members)| *members == ids)
            .unwrap_or_else(|| panic!("a digest listing {ids:?}: {digests:?}"))
            .0
    };
    let (ann_digest, bob_digest) = (of_user(&ann), of_user(&bob));
    assert_ne!(ann_digest, bob_digest);
    let members = membership(&hook.received()[1..]);
    each_went_out_in_its_digest(&client, &ann, &members).await;
    each_went_out_in_its_digest(&client, &bob, &members).await;
    let request = hook
        .received()
        .into_iter()
        .find(|r| r.event_id() == ann_digest)
        .expect("ann's digest");
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(
        (&body["user_id"], &body["type"]),
        (&"ann".into(), &"comment.created".into())
    );
    assert_eq!(
        body["description"],
        "25 notifications, the latest: comment.created #24"
    );
    assert_eq!(
        body["payload"]["digest"]["events"][3]["description"],
        "comment.created #3"
    );
    let m = Scrape::of(logger.metrics_addr).await;
    assert_eq!(m.get("herald_digests_sent_total", &[]), 2.0);
    assert_eq!(m.get("herald_digested_events_total", &[]), 28.0);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_events_sends_a_full_digest_at_once() {
    let hook = Receiver::start(|_| answer(200)).await;
    let file = format!(
        "{}[[routes]]\nchannels = [\"hooks\"]\ndigest = \"3s\"\nmax_events = 10\n",
        webhook("hooks", &hook.url, "")
    );
    let (logger, client, _dir) = logger_with(&file, &[]).await;
    let before = std::time::Instant::now();
    let events = create_many(&client, "ann", "comment.created", 25).await;
    eventually(Duration::from_secs(20), "three digests", || async {
        (hook.received().len() == 3).then_some(())
    })
    .await;
    let received = hook.received();
    let sizes: Vec<usize> = received.iter().map(|r| digest_of(r).1.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let mut listed: Vec<Uuid> = received.iter().flat_map(|r| digest_of(r).1).collect();
    listed.sort();
    let made: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(listed, made, "each event once");
    // The full ones did not wait for the window; the last did.
    assert!(received[1].at < received[2].at);
    assert!(
        received[2].at.duration_since(before) >= Duration::from_secs(3),
        "the last digest waited for its window"
    );
    each_went_out_in_its_digest(&client, &events, &membership(&received)).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

/// Two processors on one Redis; the one that took a digest is killed
/// while its request is under way: the other takes the digest once its
/// lease runs out and sends it again, the same digest with the same
/// events, and every event settles once, in that digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_while_sending_a_digest_leaves_it_whole_to_another() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    // The first request is answered late: its sender dies before then.
    let hook = Receiver::start(|n| match n {
        0 => Answer {
            delay: Duration::from_secs(3),
            ..answer(200)
        },
        _ => answer(200),
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        format!(
            "{}[[routes]]\nchannels = [\"hooks\"]\ndigest = \"2s\"\n",
            webhook("hooks", &hook.url, "timeout = \"1s\"")
        ),
    )
    .expect("write channels");
    let redis = herald_storage::testing::RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let channels = channels.to_str().expect("utf-8");
    let processor = |name: &str| {
        let flags = [
            "--channels",
            channels,
            "--consumer-name",
            name,
            "--claim-idle",
            "3s",
        ];
        let config = common::Processor::config(&redis.url(), &logger.url(), "", &flags);
        IsolatedProcessor::start(config, Lines::default().sink())
    };
    let a = processor("a");
    let client = logger.client().await;
    let events = create_many(&client, "ann", "comment.created", 25).await;
    eventually(Duration::from_secs(20), "the digest under way", || async {
        (!hook.received().is_empty()).then_some(())
    })
    .await;
    let b = processor("b");
    a.kill();
    for event in &events {
        status_of(&client, event.id, EventStatus::Processed).await;
    }
    let received = hook.received();
    let digests: Vec<(Uuid, Vec<Uuid>)> = received.iter().map(digest_of).collect();
    let made: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(digests.len(), 2, "sent by a, then again by b: {digests:?}");
    for (digest, members) in &digests {
        assert_eq!(*digest, digests[0].0, "one digest");
        assert_eq!(*members, made, "the same events");
    }
    each_went_out_in_its_digest(&client, &events, &membership(&received)).await;
    drop(b);
    logger.stop_within(Duration::from_secs(10)).await;
}
