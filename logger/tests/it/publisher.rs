//! `herald_client::Publisher` against a real logger: nothing that fitted in
//! the buffer is lost while the logger is down, nothing is created twice, a
//! full buffer drops and counts, refused events are counted, close flushes.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Lines, Logger, eventually};
use futures_util::TryStreamExt;
use herald::domain::EventInput;
use herald_client::{
    Client, ListEvents, Observer, Outcome, Publish, Publisher, PublisherOptions, WhenFull,
};
use herald_storage::testing::{RedisServer, skip_redis_tests};

use crate::common;

/// A publisher of a logger at `addr` that may not be up yet, retrying fast.
fn publisher_of(addr: std::net::SocketAddr, options: PublisherOptions) -> Publisher {
    let client = Client::connect_lazy(format!("http://{addr}")).expect("url");
    Publisher::new(client, options)
}

/// Options that retry soon, for a logger that comes back within a second.
fn fast_retries() -> PublisherOptions {
    PublisherOptions {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..PublisherOptions::default()
    }
}

fn event(user: &str, description: String) -> EventInput {
    EventInput {
        user_id: user.into(),
        description,
        ..EventInput::default()
    }
}

/// Publishes `n` events of `user` described `{label}-{i}`; each must be queued.
async fn publish_all(publisher: &Publisher, user: &str, label: &str, n: usize) {
    for i in 0..n {
        let queued = publisher.publish(event(user, format!("{label}-{i}"))).await;
        assert_eq!(queued, Publish::Queued, "{label}-{i} fits the buffer");
    }
}

/// The descriptions of every stored event of `user`.
async fn descriptions_of(client: &Client, user: &str) -> Vec<String> {
    client
        .events(ListEvents::new().user(user).page_size(1_000))
        .map_ok(|e| e.description)
        .try_collect()
        .await
        .expect("list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_doubled_while_the_logger_is_down() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let args = ["--redis-url", &redis.url()];
    let (listener, addr) = common::restartable_listener().await;
    let publisher = publisher_of(addr, fast_retries());

    let logger = Logger::start_on(listener, &args, Lines::default().sink()).await;
    publish_all(&publisher, "ann", "before", 100).await;
    publisher
        .flush(Duration::from_secs(10))
        .await
        .expect("flushed while up");
    logger.stop_within(Duration::from_secs(10)).await;

    // Down: events wait in the buffer and their batches are retried.
    publish_all(&publisher, "ann", "down", 300).await;
    eventually(
        Duration::from_secs(10),
        "batches retried while down",
        || async { (publisher.stats().retried > 0).then_some(()) },
    )
    .await;
    let stats = publisher.stats();
    assert_eq!(stats.published, 100, "{stats:?}");
    assert_eq!(stats.buffered, 300, "{stats:?}");

    let listener = common::rebind(addr).await;
    let logger = Logger::start_on(listener, &args, Lines::default().sink()).await;
    publish_all(&publisher, "ann", "after", 100).await;
    publisher
        .flush(Duration::from_secs(20))
        .await
        .expect("flushed once back");
    let stats = publisher.stats();
    assert_eq!(
        (
            stats.published,
            stats.dropped,
            stats.refused,
            stats.buffered
        ),
        (500, 0, 0, 0),
        "{stats:?}"
    );

    let stored = descriptions_of(&logger.client().await, "ann").await;
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), 500, "each event stored once");
    assert_eq!(unique.len(), 500, "no duplicates");
    for label in ["before", "down", "after"] {
        assert!(unique.contains(&format!("{label}-0")), "{label}-0 stored");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_full_buffer_drops_the_newest_and_counts_it() {
    // Nothing listens yet: every event stays in the buffer.
    let (listener, addr) = common::restartable_listener().await;
    drop(listener);
    let publisher = publisher_of(
        addr,
        PublisherOptions {
            capacity: 10,
            ..fast_retries()
        },
    );
    let mut outcomes = Vec::new();
    for i in 0..25 {
        outcomes.push(publisher.publish(event("bo", format!("full-{i}"))).await);
    }
    let queued = outcomes.iter().filter(|o| **o == Publish::Queued).count();
    assert_eq!(queued, 10);
    assert!(
        outcomes[10..].iter().all(|o| *o == Publish::Dropped),
        "the newest are the ones dropped"
    );
    let stats = publisher.stats();
    assert_eq!((stats.buffered, stats.dropped), (10, 15), "{stats:?}");

    // Waiting for room gives up at its deadline, and counts the drop too.
    let waiting = publisher_of(
        addr,
        PublisherOptions {
            capacity: 1,
            when_full: WhenFull::Wait(Duration::from_millis(100)),
            ..fast_retries()
        },
    );
    assert_eq!(
        waiting.publish(event("bo", "first".into())).await,
        Publish::Queued
    );
    let started = std::time::Instant::now();
    assert_eq!(
        waiting.publish(event("bo", "second".into())).await,
        Publish::Dropped
    );
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
    assert_eq!(waiting.stats().dropped, 1);

    // Once a logger answers there, the buffered events are stored.
    let listener = common::rebind(addr).await;
    let logger = Logger::start_on(listener, &[], Lines::default().sink()).await;
    publisher
        .flush(Duration::from_secs(20))
        .await
        .expect("flushed");
    waiting
        .flush(Duration::from_secs(20))
        .await
        .expect("flushed");
    assert_eq!(publisher.stats().published, 10);
    let stored = descriptions_of(&logger.client().await, "bo").await;
    assert_eq!(stored.len(), 11, "{stored:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn refused_events_are_counted_and_not_retried() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let outcomes: Arc<Mutex<HashMap<(Outcome, String), u64>>> = Arc::default();
    let seen = outcomes.clone();
    let publisher = publisher_of(
        logger.addr,
        PublisherOptions {
            observer: Some(Observer::new(move |outcome, event_type| {
                let mut seen = seen.lock().expect("outcomes");
                *seen.entry((outcome, event_type.to_owned())).or_default() += 1;
            })),
            ..fast_retries()
        },
    );
    let typed = |user: &str, description: String, event_type: &str| EventInput {
        event_type: event_type.into(),
        ..event(user, description)
    };
    for i in 0..3 {
        publisher
            .publish(typed("cy", format!("good-{i}"), "t.good"))
            .await;
    }
    // No user id, and a description past its 4,096-byte limit.
    publisher
        .publish(typed("", "no user".into(), "t.bad"))
        .await;
    publisher
        .publish(typed("cy", "x".repeat(100_000), "t.bad"))
        .await;
    publisher
        .flush(Duration::from_secs(10))
        .await
        .expect("flushed");
    let stats = publisher.stats();
    assert_eq!(
        (
            stats.published,
            stats.refused,
            stats.retried,
            stats.buffered
        ),
        (3, 2, 0, 0),
        "{stats:?}"
    );
    let outcomes = outcomes.lock().expect("outcomes").clone();
    assert_eq!(
        outcomes,
        HashMap::from([
            ((Outcome::Published, "t.good".to_owned()), 3),
            ((Outcome::Refused, "t.bad".to_owned()), 2),
        ])
    );
    assert_eq!(descriptions_of(&logger.client().await, "cy").await.len(), 3);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn close_sends_what_is_buffered_then_takes_nothing_more() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let publisher = publisher_of(
        logger.addr,
        PublisherOptions {
            // Long enough that only close's flush sends the batch.
            linger: Duration::from_secs(30),
            ..fast_retries()
        },
    );
    publish_all(&publisher, "di", "closing", 50).await;
    let stats = publisher.close(Duration::from_secs(10)).await;
    assert_eq!((stats.published, stats.buffered), (50, 0), "{stats:?}");
    assert_eq!(
        publisher.publish(event("di", "late".into())).await,
        Publish::Dropped
    );
    assert_eq!(publisher.stats().dropped, 1);
    assert_eq!(
        descriptions_of(&logger.client().await, "di").await.len(),
        50
    );

    // Closing with the logger gone gives up at the deadline, counting what
    // it held as dropped.
    let down = publisher_of(logger.addr, fast_retries());
    logger.stop_within(Duration::from_secs(10)).await;
    publish_all(&down, "di", "unsent", 5).await;
    let stats = down.close(Duration::from_millis(300)).await;
    assert_eq!(
        (stats.published, stats.dropped, stats.buffered),
        (0, 5, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_rate_limited_publisher_waits_as_told_and_loses_nothing() {
    // 20 calls a second, 2 at once: one event per call is mostly refused
    // with RESOURCE_EXHAUSTED and the time to wait.
    let logger = Logger::start(
        &["--rate-limit", "20", "--rate-burst", "2"],
        Lines::default().sink(),
    )
    .await;
    let publisher = publisher_of(
        logger.addr,
        PublisherOptions {
            batch_size: 1,
            linger: Duration::ZERO,
            // Far longer than the server's hint: a retry that waits the
            // backoff instead of the hint would not finish in time.
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            ..PublisherOptions::default()
        },
    );
    publish_all(&publisher, "ed", "limited", 20).await;
    publisher
        .flush(Duration::from_secs(15))
        .await
        .expect("flushed at the allowed rate");
    let stats = publisher.stats();
    assert_eq!((stats.published, stats.refused), (20, 0), "{stats:?}");
    assert!(stats.retried > 0, "the rate limit was hit: {stats:?}");
    // The listing is rate-limited too: let the bucket refill first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = descriptions_of(&logger.client().await, "ed").await;
    assert_eq!(stored.len(), 20);
    logger.stop_within(Duration::from_secs(10)).await;
}
