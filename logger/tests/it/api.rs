//! The gRPC API of an in-process logger on the memory backend (the embedded
//! default): errors and their fields, the lifecycle, health, reflection,
//! subscriptions and shutdown, over real sockets.

use std::time::Duration;

use common::{
    Lines, Logger, NO_RETRIES, assert_ends_unavailable, eventually, expect_event, next_event,
};
use futures_util::StreamExt;
use herald::{
    EventStatus,
    domain::StatusChange,
    pb::{self, event_logger_client::EventLoggerClient},
};
use herald_processor::channels::notification_line;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common;

/// The field names of an INVALID_ARGUMENT error, checking the code.
fn invalid_fields(err: &herald_client::Error) -> Vec<String> {
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    err.violations().iter().map(|v| v.field.clone()).collect()
}

fn status_fields(status: &tonic::Status) -> Vec<String> {
    herald_client::Error::from(status.clone())
        .violations()
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

#[tokio::test]
async fn embedded_default_processes_events_and_rejects_bad_input() {
    let lines = Lines::default();
    let logger = Logger::start(&[], lines.sink()).await;
    let client = logger.client().await;

    let err = client
        .create_event("", " ")
        .await
        .expect_err("blank fields");
    assert_eq!(invalid_fields(&err), ["user_id", "description"]);
    let err = client
        .create_event(&"u".repeat(257), "hi")
        .await
        .expect_err("long user id");
    assert_eq!(invalid_fields(&err), ["user_id"]);

    let event = client
        .create_event("alice", "Welcome to Herald")
        .await
        .expect("create");
    assert_eq!(event.status, EventStatus::Pending);
    let processed = eventually(Duration::from_secs(10), "PROCESSED", || async {
        let e = client.get_event(event.id).await.expect("get");
        (e.status == EventStatus::Processed).then_some(e)
    })
    .await;
    assert!(processed.updated_at >= processed.created_at);
    // The rejected creates queued nothing: only the valid event was delivered.
    assert_eq!(lines.lines(), [notification_line(&event)]);
    assert_eq!(
        lines.lines(),
        [format!(
            "Event {} has been sent to alice: Welcome to Herald",
            event.id
        )]
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn ids_and_statuses_are_checked_and_rejections_change_nothing() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let mut raw = EventLoggerClient::connect(logger.url())
        .await
        .expect("connect");

    let status = raw
        .get_event(pb::GetEventRequest {
            event_id: "not-a-uuid".into(),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status_fields(&status), ["event_id"]);

    let unknown = uuid::Uuid::now_v7();
    let err = client.get_event(unknown).await.expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .update_status(unknown, EventStatus::Processed)
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);

    let event = client.create_event("bob", "hello").await.expect("create");
    let processed = eventually(Duration::from_secs(10), "PROCESSED", || async {
        let e = client.get_event(event.id).await.expect("get");
        (e.status == EventStatus::Processed).then_some(e)
    })
    .await;

    let status = raw
        .update_status(pb::UpdateStatusRequest {
            event_id: event.id.to_string(),
            status: 0,
            ..Default::default()
        })
        .await
        .expect_err("unspecified status");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status_fields(&status), ["status"]);

    let err = client
        .update_status(event.id, EventStatus::Pending)
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .update_status(event.id, EventStatus::Failed)
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        client.get_event(event.id).await.expect("get"),
        processed,
        "unchanged"
    );

    let again = client
        .update_status(event.id, EventStatus::Processed)
        .await
        .expect("no-op");
    assert_eq!(again, processed);
    let opened = client
        .update_status(event.id, EventStatus::Opened)
        .await
        .expect("opened");
    assert_eq!(opened.status, EventStatus::Opened);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn health_and_reflection_cover_every_service() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let mut health = HealthClient::new(logger.channel().await);
    for service in [
        "",
        "herald.v1.EventLogger",
        "herald.v1.Notifier",
        "herald.v1.Inbox",
        "herald.v1.Recipients",
    ] {
        eventually(Duration::from_secs(5), "SERVING", || {
            let mut health = health.clone();
            async move {
                let response = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .ok()?;
                (response.into_inner().status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(logger.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "herald.v1.EventLogger",
            "herald.v1.Inbox",
            "herald.v1.Notifier",
            "herald.v1.Recipients",
        ]
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn subscribers_get_their_own_notifications_and_shutdown_ends_streams() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await.with_resubscribe(NO_RETRIES);
    let err = match client.subscribe(" ").await {
        Ok(_) => panic!("blank user accepted"),
        Err(err) => err,
    };
    assert_eq!(invalid_fields(&err), ["user_id"]);

    let mut alice = client.subscribe("alice").await.expect("subscribe");
    let mut idle = client.subscribe("nobody").await.expect("subscribe");
    // Subscriptions register when the stream starts; give the server a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = client
        .create_event("carol", "not for alice")
        .await
        .expect("create");
    let mine = client
        .create_event("alice", "for alice")
        .await
        .expect("create");

    let first = expect_event(&mut alice).await;
    assert_eq!(first.event.id, mine.id);
    assert_eq!(first.event.status, EventStatus::Processed);
    assert!(!first.cursor.is_empty());
    // carol's event was processed too, and alice heard nothing of it.
    eventually(
        Duration::from_secs(10),
        "carol's event processed",
        || async {
            let e = client.get_event(other.id).await.expect("get");
            (e.status == EventStatus::Processed).then_some(())
        },
    )
    .await;
    assert!(
        next_event(&mut alice, Duration::from_millis(300))
            .await
            .is_none()
    );

    // Shutdown ends open streams with UNAVAILABLE, well within the grace time.
    logger.shutdown.cancel();
    for stream in [&mut alice, &mut idle] {
        assert_ends_unavailable(stream).await;
    }
    tokio::time::timeout(Duration::from_secs(5), logger.handle)
        .await
        .expect("logger stopped in time")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn batch_update_status_answers_each_change_on_its_own() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let event = client
        .create_event("erin", "batch me")
        .await
        .expect("create");
    eventually(Duration::from_secs(10), "PROCESSED", || async {
        (client.get_event(event.id).await.ok()?.status == EventStatus::Processed).then_some(())
    })
    .await;
    let unknown = uuid::Uuid::now_v7();
    let results = client
        .batch_update_status(&[
            StatusChange::new(event.id, EventStatus::Opened),
            StatusChange::new(unknown, EventStatus::Processed),
            StatusChange::new(event.id, EventStatus::Pending),
            StatusChange::new(event.id, EventStatus::Opened),
        ])
        .await
        .expect("batch");
    assert_eq!(
        results[0].as_ref().expect("opened").status,
        EventStatus::Opened
    );
    assert_eq!(
        results[1].as_ref().expect_err("unknown").code(),
        Code::NotFound
    );
    assert_eq!(
        results[2].as_ref().expect_err("forbidden").code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        results[3].as_ref().expect("no-op").status,
        EventStatus::Opened
    );
    let outcomes = client
        .batch_update_status_outcomes(&[
            StatusChange::new(event.id, EventStatus::Opened),
            StatusChange::new(unknown, EventStatus::Processed),
        ])
        .await
        .expect("batch");
    assert!(outcomes[0].is_ok());
    assert_eq!(
        outcomes[1].as_ref().expect_err("unknown").code(),
        Code::NotFound
    );

    let mut raw = EventLoggerClient::new(logger.channel().await);
    let item = |id: &str, status: EventStatus| pb::UpdateStatusRequest {
        event_id: id.into(),
        status: status.to_pb() as i32,
        ..Default::default()
    };
    let response = raw
        .batch_update_status(pb::BatchUpdateStatusRequest {
            requests: vec![
                item("nope", EventStatus::Opened),
                item(&event.id.to_string(), EventStatus::Opened),
            ],
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner();
    let Some(pb::update_status_result::Result::Error(error)) = &response.results[0].result else {
        panic!("the malformed id is refused: {response:?}");
    };
    assert_eq!(error.code, Code::InvalidArgument as i32);
    let status = tonic::Status::with_details(
        Code::InvalidArgument,
        "",
        prost::Message::encode_to_vec(error).into(),
    );
    assert_eq!(status_fields(&status), ["requests[0].event_id"]);
    assert!(matches!(
        response.results[1].result,
        Some(pb::update_status_result::Result::Event(_))
    ));

    // Asked for summaries only, a caller gets each change's outcome and
    // the event's id, user, status and times, nothing more.
    let response = raw
        .batch_update_status(pb::BatchUpdateStatusRequest {
            requests: vec![item(&event.id.to_string(), EventStatus::Opened)],
            summaries_only: true,
        })
        .await
        .expect("batch")
        .into_inner();
    let Some(pb::update_status_result::Result::Event(summary)) = &response.results[0].result else {
        panic!("the no-op is answered: {response:?}");
    };
    assert_eq!(summary.event_id, event.id.to_string());
    assert_eq!(summary.status, pb::EventStatus::Opened as i32);
    assert!(summary.updated_at.is_some());
    assert!(summary.description.is_empty() && summary.traceparent.is_empty());

    let empty = raw
        .batch_update_status(pb::BatchUpdateStatusRequest::default())
        .await
        .expect_err("empty batch");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(status_fields(&empty), ["requests"]);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn get_stats_counts_events_by_status_and_this_loggers_work() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let fresh = client.stats().await.expect("stats");
    assert_eq!(fresh.total_events, 0);
    assert!(fresh.started_at.is_some() && fresh.uptime < Duration::from_secs(60));

    let _subscriptions = [
        client.subscribe("sam").await.expect("subscribe"),
        client.subscribe("tom").await.expect("subscribe"),
    ];
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            client
                .create_event("sam", &format!("n{i}"))
                .await
                .expect("create")
                .id,
        );
    }
    // Rejected input counts nowhere.
    assert!(client.create_event("", "bad").await.is_err());
    eventually(Duration::from_secs(10), "all three processed", || async {
        let stats = client.stats().await.ok()?;
        (stats.processed_events == 3).then_some(())
    })
    .await;
    client
        .update_status(ids[0], EventStatus::Opened)
        .await
        .expect("open");
    let stats = client.stats().await.expect("stats");
    assert_eq!(stats.total_events, 3);
    assert_eq!(
        (
            stats.pending_events,
            stats.processed_events,
            stats.opened_events,
            stats.failed_events
        ),
        (0, 2, 1, 0)
    );
    assert_eq!(stats.events_created, 3);
    assert_eq!(stats.events_published, 3);
    // Three to PROCESSED by the embedded worker, one to OPENED.
    assert_eq!(stats.status_updates, 4);
    assert_eq!(stats.publish_failures, 0);
    assert_eq!(stats.active_subscribers, 2);

    // What changes nothing counts nothing: a repeated request id, a status
    // the event already has.
    let once = || herald::domain::EventInput {
        user_id: "sam".into(),
        description: "once".into(),
        request_id: "r-1".into(),
        ..Default::default()
    };
    let first = client.create(once()).await.expect("create");
    client.create(once()).await.expect("repeat");
    eventually(Duration::from_secs(10), "processed", || async {
        let e = client.get_event(first.id).await.ok()?;
        (e.status == EventStatus::Processed).then_some(())
    })
    .await;
    client
        .update_status(ids[0], EventStatus::Opened)
        .await
        .expect("no-op");
    let after = client.stats().await.expect("stats");
    assert_eq!(after.events_created, 4);
    // Only the new event's PROCESSED, not the no-op.
    assert_eq!(after.status_updates, stats.status_updates + 1);
    assert_eq!(after.total_events, 4);
    logger.stop_within(Duration::from_secs(10)).await;
}
