//! Scheduled delivery end to end: real loggers (with their embedded
//! processors) deliver a scheduled event when due and not before, never a
//! cancelled one, once when two loggers share a Redis, and after restarts
//! of the logger and of Redis; CancelEvent's and CreateEvent's refusals.

use std::time::{Duration, SystemTime};

use common::{Lines, Logger, eventually};
use herald::{
    Event, EventStatus,
    domain::EventInput,
    pb::{self, event_logger_client::EventLoggerClient},
};
use herald_client::Client;
use herald_storage::testing::{RedisServer, skip_redis_tests};
use tonic::Code;
use uuid::Uuid;

use crate::common;

const LIMIT: Duration = Duration::from_secs(20);

fn later(user: &str, description: &str, after: Duration) -> EventInput {
    EventInput {
        user_id: user.into(),
        description: description.into(),
        deliver_after: Some(after),
        ..EventInput::default()
    }
}

/// How many notification lines name `event`.
fn printed(lines: &Lines, event: &Event) -> usize {
    let line = format!("Event {} has been sent to", event.id);
    lines.lines().iter().filter(|l| l.contains(&line)).count()
}

/// `message` as the client `shop` sends it.
fn with_key<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", "Bearer shop-key".parse().expect("ascii"));
    request
}

async fn status_is(client: &Client, id: Uuid, status: EventStatus) -> Event {
    common::status_is(client, id, status, LIMIT).await
}

#[tokio::test]
async fn a_scheduled_event_is_delivered_when_due_and_a_cancelled_one_never() {
    let lines = Lines::default();
    let logger = Logger::start(&[], lines.sink()).await;
    let client = logger.client().await;

    let reminder = client
        .create(later(
            "ann",
            "Your trial ends tomorrow",
            Duration::from_secs(2),
        ))
        .await
        .expect("create");
    assert_eq!(reminder.status, EventStatus::Scheduled);
    let due = reminder.deliver_at.expect("deliver_at");
    let cancelled = client
        .create(later("ann", "Come back!", Duration::from_secs(1)))
        .await
        .expect("create");
    let now = client.create_event("ann", "now").await.expect("create");
    let cancel = client.cancel_event(cancelled.id).await.expect("cancel");
    assert_eq!(cancel.status, EventStatus::Cancelled);

    // The event made without a time goes at once; the scheduled one waits.
    status_is(&client, now.id, EventStatus::Processed).await;
    assert_eq!(printed(&lines, &reminder), 0, "not before it is due");
    let delivered = status_is(&client, reminder.id, EventStatus::Processed).await;
    assert!(SystemTime::now() >= due);
    assert!(delivered.updated_at >= due, "processed after its time");
    assert_eq!(printed(&lines, &reminder), 1);

    // A queued (or delivered) event cannot be cancelled; the cancelled one
    // stays cancelled, never delivered.
    let err = client
        .cancel_event(reminder.id)
        .await
        .expect_err("delivered");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.to_string()
            .contains("only a SCHEDULED event can be cancelled"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(printed(&lines, &cancelled), 0);
    let stats = client.stats().await.expect("stats");
    assert_eq!(
        (stats.scheduled_events, stats.cancelled_events),
        (0, 1),
        "{stats:?}"
    );
    logger.stop_within(LIMIT).await;
}

#[tokio::test]
async fn bad_schedules_and_cancels_name_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let key = |client: &str, scopes: &[&str]| serde_json::json!({"client_id": client, "key_sha256": herald::auth::hash_key(&format!("{client}-key")), "scopes": scopes});
    let keys = serde_json::json!({"keys": [
        key("shop", &["events:write", "events:read"]),
        key("billing", &["events:write", "events:read"]),
        key("ops", &["events:write", "events:process", "events:read"]),
    ]});
    let path = dir.path().join("keys.json");
    std::fs::write(&path, keys.to_string()).expect("write keys");
    let logger = Logger::start(
        &[
            "--keys-file",
            path.to_str().expect("utf-8"),
            "--max-schedule-ahead",
            "7d",
        ],
        Lines::default().sink(),
    )
    .await;
    let shop = logger.client_with_key("shop-key").await;
    let billing = logger.client_with_key("billing-key").await;
    let ops = logger.client_with_key("ops-key").await;
    let mut raw = EventLoggerClient::new(logger.channel().await);

    let timestamp = |t: SystemTime| Some(prost_types::Timestamp::from(t));
    let base = || pb::CreateEventRequest {
        user_id: "ann".into(),
        description: "reminder".into(),
        ..Default::default()
    };
    for (request, field, words) in [
        (
            pb::CreateEventRequest {
                deliver_at: timestamp(SystemTime::now() + Duration::from_secs(60)),
                deliver_after: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..base()
            },
            "deliver_after",
            "not both",
        ),
        (
            pb::CreateEventRequest {
                deliver_after: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..base()
            },
            "deliver_after",
            "positive",
        ),
        (
            pb::CreateEventRequest {
                deliver_at: timestamp(SystemTime::now() + Duration::from_secs(8 * 24 * 3600)),
                ..base()
            },
            "deliver_at",
            "at most 604800 s ahead",
        ),
        (
            pb::CreateEventRequest {
                deliver_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -1,
                }),
                ..base()
            },
            "deliver_at",
            "nanos",
        ),
    ] {
        let status = raw
            .create_event(with_key(request))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let err = herald_client::Error::from(status);
        let v = &err.violations()[0];
        assert_eq!(v.field, field, "{err}");
        assert!(v.description.contains(words), "{err}");
    }
    let stats = ops.stats().await.expect("stats");
    assert_eq!(stats.total_events, 0, "nothing stored");

    // UpdateStatus cannot enter the new statuses.
    let event = shop
        .create(later("ann", "in an hour", Duration::from_secs(3600)))
        .await
        .expect("create");
    for status in [EventStatus::Scheduled, EventStatus::Cancelled] {
        let err = ops
            .update_status(event.id, status)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert_eq!(err.violations()[0].field, "status");
    }

    // A client cancels its own events; events:process cancels any.
    let err = billing
        .cancel_event(event.id)
        .await
        .expect_err("not its own");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("did not create"), "{err}");
    assert_eq!(
        shop.get_event(event.id).await.expect("get").status,
        EventStatus::Scheduled
    );
    for (id, code) in [("nope", Code::InvalidArgument), ("", Code::InvalidArgument)] {
        let status = raw
            .cancel_event(with_key(pb::CancelEventRequest {
                event_id: id.into(),
            }))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains("event_id"), "{status:?}");
    }
    let err = shop
        .cancel_event(Uuid::now_v7())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let other = billing
        .create(later("bob", "in an hour", Duration::from_secs(3600)))
        .await
        .expect("create");
    assert_eq!(
        ops.cancel_event(other.id).await.expect("any").status,
        EventStatus::Cancelled
    );
    assert_eq!(
        shop.cancel_event(event.id).await.expect("own").status,
        EventStatus::Cancelled
    );
    logger.stop_within(LIMIT).await;
}

/// Two loggers (each with its embedded processor) on one Redis: every
/// scheduled event is delivered once, by whichever moved it; then the
/// loggers and Redis (with its AOF) restart under a scheduled event, which
/// is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_go_once_across_loggers_and_survive_restarts() {
    if skip_redis_tests() {
        return;
    }
    let mut redis = RedisServer::start_with_aof();
    let url = redis.url();
    let args = ["--redis-url", url.as_str(), "--worker"];
    let (lines_a, lines_b) = (Lines::default(), Lines::default());
    let a = Logger::start(&args, lines_a.sink()).await;
    let b = Logger::start(&args, lines_b.sink()).await;
    let client = a.client().await;
    let batch = (0..60)
        .map(|i| {
            later(
                &format!("u{}", i % 13),
                &format!("due {i}"),
                Duration::from_secs(1),
            )
        })
        .collect();
    let events: Vec<Event> = client
        .create_many(batch)
        .await
        .expect("create")
        .into_iter()
        .map(|r| r.expect("created"))
        .collect();
    for event in &events {
        status_is(&client, event.id, EventStatus::Processed).await;
    }
    for event in &events {
        assert_eq!(
            printed(&lines_a, event) + printed(&lines_b, event),
            1,
            "{} delivered once",
            event.id
        );
    }

    // Everything stops with an event still waiting; it is delivered after.
    let waiting = client
        .create(later("ann", "after the restarts", Duration::from_secs(3)))
        .await
        .expect("create");
    a.stop_within(LIMIT).await;
    b.stop_within(LIMIT).await;
    redis.restart();
    let lines = Lines::default();
    let c = Logger::start(&args, lines.sink()).await;
    let client = c.client().await;
    let stored = eventually(LIMIT, "Redis reloaded", || async {
        client.get_event(waiting.id).await.ok()
    })
    .await;
    assert_eq!(
        stored.status,
        EventStatus::Scheduled,
        "kept through the restart"
    );
    status_is(&client, waiting.id, EventStatus::Processed).await;
    assert_eq!(printed(&lines, &waiting), 1);
    c.stop_within(LIMIT).await;
}
