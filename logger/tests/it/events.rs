//! Events for real traffic, over gRPC against in-process loggers: attributes,
//! per-type payload validation with the shipped registry, timestamps,
//! idempotency, and the web analytics samples through the whole pipeline.

use std::time::{Duration, SystemTime};

use common::{Lines, Logger, Processor, eventually};
use futures_util::TryStreamExt;
use herald::{
    EventStatus,
    domain::EventInput,
    pb::{self, event_logger_client::EventLoggerClient},
};
use herald_client::{Client, ListEvents};
use herald_processor::channels::notification_line;
use herald_storage::testing::{RedisServer, skip_redis_tests};
use serde_json::json;
use tonic::Code;

use crate::common;

fn event(user: &str, event_type: &str, payload: serde_json::Value) -> EventInput {
    EventInput {
        user_id: user.into(),
        description: format!("{event_type} by {user}"),
        category: "page interaction".into(),
        event_type: event_type.into(),
        session_id: format!("{user}-session"),
        payload: payload.as_object().cloned(),
        ..EventInput::default()
    }
}

/// The web analytics samples of the shipped registry, as a front end sends them.
fn web_analytics(user: &str) -> Vec<EventInput> {
    vec![
        event(
            user,
            "pageview",
            json!({"host": "shop.example", "path": "/"}),
        ),
        event(
            user,
            "cta click",
            json!({"host": "shop.example", "path": "/", "element": "buy-now"}),
        ),
        event(
            user,
            "form interaction",
            json!({"form": {"first_name": "Ada", "last_name": "Lovelace"}}),
        ),
    ]
}

fn violations(err: &herald_client::Error) -> Vec<(String, String)> {
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    err.violations()
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

#[tokio::test]
async fn payloads_are_checked_against_their_types_schema() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;

    for sample in web_analytics("ada") {
        let stored = client.create(sample.clone()).await.expect("valid sample");
        assert_eq!(stored.event_type, sample.event_type);
        assert_eq!(stored.payload, sample.payload);
        assert_eq!(stored.session_id, "ada-session");
        assert_eq!(stored.source, "", "no identities configured");
    }

    let err = client
        .create(event(
            "ada",
            "form interaction",
            json!({"form": {"last_name": 7}}),
        ))
        .await
        .expect_err("bad form");
    assert_eq!(
        violations(&err),
        [
            (
                "payload.form.first_name".to_owned(),
                "is required".to_owned()
            ),
            (
                "payload.form.last_name".to_owned(),
                "expected string".to_owned()
            ),
        ]
    );
    let err = client
        .create(event("ada", "pageview", json!({})))
        .await
        .expect_err("no payload fields");
    let fields: Vec<String> = violations(&err).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["payload.host", "payload.path"]);
    let unknown = client
        .create(event("ada", "checkout", json!({"total": 12.5})))
        .await
        .expect("unknown types pass");
    assert_eq!(unknown.payload, json!({"total": 12.5}).as_object().cloned());

    // The answer says which types the registry does not know, one by one
    // and in batches (an event without a type is not reported).
    let reported = client
        .create_reporting(event("ada", "chekout", json!({})))
        .await
        .expect("created");
    assert!(reported.unregistered_type);
    let known = web_analytics("ada").remove(0);
    let reported = client.create_reporting(known).await.expect("known");
    assert!(!reported.unregistered_type);
    let page = json!({"host": "shop.example", "path": "/"});
    let request = |event_type: &str| pb::CreateEventRequest {
        user_id: "ada".into(),
        description: "typed or not".into(),
        r#type: event_type.into(),
        payload: page.as_object().map(herald::domain::json_to_struct),
        ..Default::default()
    };
    let mut raw = EventLoggerClient::connect(logger.url()).await.expect("raw");
    let results = raw
        .create_events(pb::CreateEventsRequest {
            requests: vec![request("pageview"), request("chekout"), request("")],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let flags: Vec<_> = results
        .iter()
        .map(|r| {
            let stored = matches!(r.result, Some(pb::create_event_result::Result::Event(_)));
            (stored, r.unregistered_type)
        })
        .collect();
    assert_eq!(flags, [(true, false), (true, true), (true, false)]);

    let future = EventInput {
        occurred_at: Some(SystemTime::now() + Duration::from_secs(600)),
        ..event("ada", "checkout", json!({}))
    };
    let err = client.create(future).await.expect_err("too far ahead");
    let v = violations(&err);
    assert_eq!(v[0].0, "occurred_at");
    assert!(v[0].1.starts_with("invalid timestamp: "), "{}", v[0].1);
    let past = EventInput {
        occurred_at: Some(SystemTime::now() - Duration::from_secs(3600)),
        ..event("ada", "checkout", json!({}))
    };
    let stored = client.create(past).await.expect("an hour ago is fine");
    assert!(stored.occurred_at < stored.created_at);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn strict_loggers_refuse_unknown_types_and_bad_registries_stop_start_up() {
    let logger = Logger::start(&["--reject-unknown-types"], Lines::default().sink()).await;
    let client = logger.client().await;
    let err = client
        .create(event("ada", "checkout", json!({})))
        .await
        .expect_err("unknown type");
    assert_eq!(violations(&err)[0].0, "type");
    client
        .create(web_analytics("ada").remove(0))
        .await
        .expect("registered type");
    logger.stop_within(Duration::from_secs(10)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("types.json");
    std::fs::write(
        &path,
        r#"{"event_types": {"signup": {"type": "no such type"}}}"#,
    )
    .expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = herald_logger::Config::from_args(&[
        "--event-types",
        path.to_str().expect("utf-8"),
        "--metrics-listen",
        "off",
    ]);
    let err = herald_logger::run(listener, config, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a bad registry stops start-up");
    let message = format!("{err:#}");
    assert!(
        message.contains("--event-types") && message.contains("\"signup\""),
        "{message}"
    );
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_event() {
    let lines = Lines::default();
    let logger = Logger::start(&[], lines.sink()).await;
    let client = logger.client().await;
    let with_key = EventInput {
        request_id: "order-42".into(),
        ..event("bo", "checkout", json!({}))
    };
    let first = client.create(with_key.clone()).await.expect("create");
    let again = client.create(with_key).await.expect("repeat");
    assert_eq!(again.id, first.id);
    eventually(Duration::from_secs(10), "PROCESSED", || async {
        (client.get_event(first.id).await.ok()?.status == EventStatus::Processed).then_some(())
    })
    .await;
    assert_eq!(
        lines.lines(),
        [notification_line(&first)],
        "queued and notified once"
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_analytics_events_go_through_the_whole_pipeline() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let lines = Lines::default();
    let processor = Processor::start(
        &redis.url(),
        &logger.url(),
        &["--consumer-name", "p"],
        lines.sink(),
    );
    let client: Client = logger.client().await;
    let mut created = Vec::new();
    for user in ["ada", "grace"] {
        for sample in web_analytics(user) {
            created.push(client.create(sample).await.expect("create"));
        }
    }
    for e in &created {
        let processed = eventually(Duration::from_secs(20), "PROCESSED", || async {
            let got = client.get_event(e.id).await.ok()?;
            (got.status == EventStatus::Processed).then_some(got)
        })
        .await;
        assert_eq!(
            processed.payload, e.payload,
            "payload survives the pipeline"
        );
        assert_eq!(processed.session_id, e.session_id);
        assert_eq!(processed.occurred_at, e.occurred_at);
        assert!(lines.lines().contains(&notification_line(e)));
    }
    processor.shutdown.cancel();
    processor.handle.await.expect("join").expect("processor");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn create_events_answers_each_item_in_order() {
    let lines = Lines::default();
    let logger = Logger::start(&[], lines.sink()).await;
    let client = logger.client().await;
    let mut batch = web_analytics("kim");
    batch.insert(
        1,
        EventInput {
            user_id: String::new(),
            ..event("kim", "checkout", json!({}))
        },
    );
    batch.push(event("kim", "pageview", json!({"host": "shop.example"})));
    let results = client.create_many(batch.clone()).await.expect("batch");
    assert_eq!(results.len(), 5);
    let stored: Vec<_> = [0, 2, 3]
        .iter()
        .map(|&i| results[i].as_ref().expect("valid item").clone())
        .collect();
    assert_eq!(stored[0].event_type, "pageview");
    assert_eq!(stored[2].event_type, "form interaction");
    let fields = |i: usize| -> Vec<String> {
        let err = results[i].as_ref().expect_err("refused item");
        violations(err).into_iter().map(|(f, _)| f).collect()
    };
    assert_eq!(fields(1), ["requests[1].user_id"]);
    assert_eq!(fields(4), ["requests[4].payload.path"]);
    for e in &stored {
        let got = client.get_event(e.id).await.expect("stored");
        // The embedded worker may have processed it already.
        assert_eq!(
            (got.payload.as_ref(), got.created_at),
            (e.payload.as_ref(), e.created_at)
        );
    }
    // Only the valid items were queued: three notification lines in the end.
    eventually(Duration::from_secs(10), "three deliveries", || async {
        (lines.lines().len() == 3).then_some(())
    })
    .await;

    let err = client
        .create_many(Vec::new())
        .await
        .expect_err("empty batch");
    assert_eq!(violations(&err)[0].0, "requests");
    let too_many = vec![event("kim", "checkout", json!({})); 1001];
    let err = client.create_many(too_many).await.expect_err("too many");
    assert_eq!(violations(&err)[0].0, "requests");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn list_events_filters_orders_and_pages() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let base = SystemTime::now() - Duration::from_secs(600);
    for (i, secs) in [30u64, 10, 20, 40].into_iter().enumerate() {
        let input = EventInput {
            occurred_at: Some(base + Duration::from_secs(secs)),
            description: format!("step {i}"),
            ..event("lee", "pageview", json!({"host": "h", "path": "/"}))
        };
        client.create(input).await.expect("create");
    }
    client
        .create(event("max", "pageview", json!({"host": "h", "path": "/"})))
        .await
        .expect("create");

    let session = ListEvents::new().session("lee-session").page_size(3);
    let first = client.list_events(session.clone()).await.expect("page 1");
    assert_eq!(
        first
            .items
            .iter()
            .map(|e| e.description.as_str())
            .collect::<Vec<_>>(),
        ["step 1", "step 2", "step 0"]
    );
    let token = first.next.expect("a second page");
    let second = client
        .list_events(session.page_token(token))
        .await
        .expect("page 2");
    assert_eq!(
        second
            .items
            .iter()
            .map(|e| e.description.as_str())
            .collect::<Vec<_>>(),
        ["step 3"]
    );
    assert_eq!(second.next, None);
    let all: Vec<String> = client
        .events(ListEvents::new().session("lee-session").page_size(3))
        .map_ok(|e| e.description)
        .try_collect()
        .await
        .expect("every page");
    assert_eq!(all, ["step 1", "step 2", "step 0", "step 3"]);

    let newest = ListEvents::new().user("lee").newest_first().page_size(1);
    let top = client.list_events(newest).await.expect("newest");
    assert_eq!(top.items[0].description, "step 3");

    let bad = herald::pb::ListEventsRequest {
        order_by: "user_id".into(),
        page_token: "not-a-token".into(),
        page_size: -5,
        ..Default::default()
    };
    let mut raw = herald::pb::event_logger_client::EventLoggerClient::new(logger.channel().await);
    let err = herald_client::Error::from(raw.list_events(bad).await.expect_err("bad request"));
    let fields: Vec<String> = violations(&err).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["page_size", "order_by", "page_token"]);
    logger.stop_within(Duration::from_secs(10)).await;
}
