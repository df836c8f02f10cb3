//! The inbox end to end, over real sockets: its JSON calls on the end
//! users' listener (each user's own only, API keys by scope, malformed and
//! oversized requests), the unread count pushed on a user's event stream,
//! and the Inbox service over gRPC with a user token. The element in a
//! browser is `inbox_page`.

use std::{net::SocketAddr, time::Duration};

use common::{eventually, http_call};
use herald::EventStatus;
use serde_json::{Value, json};

use crate::{
    common,
    web::{EventStream, json_call, setup, token, web_logger},
};

/// `POST /v1/inbox/read` with `body` as `authorization`.
async fn mark_read(web: SocketAddr, authorization: &str, body: Value) -> (u16, Value) {
    json_call(web, "POST", "/v1/inbox/read", authorization, Some(body)).await
}

/// The status of the event `id` names.
async fn status_of(admin: &herald_client::Client, id: &str) -> EventStatus {
    let id = id.parse().expect("an event id");
    admin.get_event(id).await.expect("get").status
}

/// Creates one event per description for `user` and waits until every one
/// is PROCESSED.
async fn notify(admin: &herald_client::Client, user: &str, descriptions: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for description in descriptions {
        ids.push(
            admin
                .create_event(user, description)
                .await
                .expect("create")
                .id,
        );
    }
    for id in &ids {
        eventually(Duration::from_secs(10), "processed", || async {
            (admin.get_event(*id).await.ok()?.status == EventStatus::Processed).then_some(())
        })
        .await;
    }
    ids.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn an_inbox_lists_counts_and_marks_read_for_its_own_user_only() {
    let (_keys, logger, web, admin) = setup(&[]).await;
    let ann = format!("Bearer {}", token("ann"));
    let ids = notify(&admin, "ann", &["one", "two", "three"]).await;
    let bobs = notify(&admin, "bob", &["bob's"]).await;

    let (status, page) = json_call(web, "GET", "/v1/inbox?page_size=2", &ann, None).await;
    assert_eq!(status, 200, "{page}");
    let described: Vec<&str> = page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["description"].as_str().expect("text"))
        .collect();
    assert_eq!(described, ["three", "two"], "newest first");
    assert_eq!(page["unread_count"], 3);
    let next = page["next_page_token"].as_str().expect("a next page");
    let (_, rest) = json_call(
        web,
        "GET",
        &format!("/v1/inbox?page_size=2&page_token={next}"),
        &ann,
        None,
    )
    .await;
    assert_eq!(rest["notifications"][0]["description"], "one");
    assert_eq!(rest["next_page_token"], "");

    let (status, done) = mark_read(web, &ann, json!({"event_ids": [ids[0]]})).await;
    assert_eq!(
        (status, &done["marked"], &done["unread_count"]),
        (200, &json!(1), &json!(2)),
        "{done}"
    );
    assert_eq!(status_of(&admin, &ids[0]).await, EventStatus::Opened);
    let (_, again) = mark_read(web, &ann, json!({"event_ids": [ids[0]]})).await;
    assert_eq!(again["marked"], 0, "read once");
    let (_, count) = json_call(web, "GET", "/v1/inbox/unread_count", &ann, None).await;
    assert_eq!(count["unread_count"], 2);
    let (_, unread) = json_call(web, "GET", "/v1/inbox?unread_only=true", &ann, None).await;
    assert_eq!(unread["notifications"].as_array().expect("list").len(), 2);

    // Someone else's notifications, inbox or ids: refused, nothing marked.
    let (status, err) = mark_read(web, &ann, json!({"event_ids": [bobs[0]]})).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (400, Some("event_ids[0]")),
        "{err}"
    );
    let (status, _) = mark_read(web, &ann, json!({"user_id": "bob", "all": true})).await;
    assert_eq!(status, 403);
    let (status, _) = json_call(web, "GET", "/v1/inbox?user_id=bob", &ann, None).await;
    assert_eq!(status, 403);
    assert_eq!(status_of(&admin, &bobs[0]).await, EventStatus::Processed);
    // API keys by scope: reading needs events:read, marking events:process.
    let (status, _) = json_call(
        web,
        "GET",
        "/v1/inbox?user_id=bob",
        "Bearer reader-key",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, err) = mark_read(
        web,
        "Bearer reader-key",
        json!({"user_id": "bob", "all": true}),
    )
    .await;
    assert_eq!(status, 403, "{err}");
    // Malformed requests.
    for (body, field) in [
        (json!({"event_ids": [ids[1]], "all": true}), "all"),
        (json!({}), "event_ids"),
        (json!({"event_ids": ["nope"]}), "event_ids[0]"),
    ] {
        let (status, err) = mark_read(web, &ann, body.clone()).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    let (status, _, _) = http_call(
        web,
        "POST",
        "/v1/inbox/read",
        &[("Authorization", &ann)],
        r#"{"all": true}"#,
    )
    .await;
    assert_eq!(status, 415, "JSON only");
    let big = format!(r#"{{"event_ids": ["{}"]}}"#, "a".repeat(100_000));
    for (body, expected) in [("{not json", 400), (big.as_str(), 413)] {
        let headers = [
            ("Authorization", ann.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, _) = http_call(web, "POST", "/v1/inbox/read", &headers, body).await;
        assert_eq!(status, expected, "{}", &body[..body.len().min(20)]);
    }
    let (status, page) = json_call(web, "GET", "/v1/inbox?page_token=forged", &ann, None).await;
    assert_eq!((status, page["field"].as_str()), (400, Some("page_token")));

    let (status, done) = mark_read(web, &ann, json!({"all": true})).await;
    assert_eq!(
        (status, &done["marked"], &done["unread_count"]),
        (200, &json!(2), &json!(0)),
        "{done}"
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_unread_count_is_pushed_on_the_users_stream() {
    let (_keys, logger, web, admin) = setup(&[]).await;
    let ann = format!("Bearer {}", token("ann"));
    let mut stream = EventStream::open(
        web,
        "/v1/notifications?statuses=PROCESSED&statuses=OPENED",
        &[("Authorization", &ann)],
    )
    .await;
    assert_eq!(stream.head.status, 200);
    let id = admin
        .create_event("ann", "a badge")
        .await
        .expect("create")
        .id
        .to_string();
    let sent = stream.notification().await;
    assert_eq!(
        (
            sent.json()["event_id"].as_str(),
            sent.json()["status"].as_str()
        ),
        (Some(id.as_str()), Some("PROCESSED"))
    );
    let count = stream.next().await.expect("the count");
    assert_eq!(
        (count.name.as_deref(), count.json()["unread_count"].as_u64()),
        (Some("unread"), Some(1))
    );
    assert_eq!(count.id, sent.id, "at the change's position");
    mark_read(web, &ann, json!({"event_ids": [id]})).await;
    let read = stream.notification().await;
    assert_eq!(read.json()["status"], "OPENED");
    let count = stream.next().await.expect("the count");
    assert_eq!(count.json()["unread_count"], 0);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_inbox_over_grpc_answers_a_token_for_its_own_user_only() {
    use herald::pb::inbox_client::InboxClient;
    let (_keys, logger) = web_logger(&[]).await;
    let admin = logger.client_with_key("admin-key").await;
    notify(&admin, "ann", &["over gRPC"]).await;
    let mut inbox = InboxClient::with_interceptor(
        logger.channel().await,
        herald_client::ApiKey::bearer(&token("ann")).expect("token"),
    );
    let page = inbox
        .list_inbox(herald::pb::ListInboxRequest {
            user_id: "ann".into(),
            ..Default::default()
        })
        .await
        .expect("own inbox")
        .into_inner();
    assert_eq!(page.notifications.len(), 1);
    assert_eq!(page.unread_count, 1);
    let err = inbox
        .get_unread_count(herald::pb::GetUnreadCountRequest {
            user_id: "bob".into(),
        })
        .await
        .expect_err("bob's");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let done = inbox
        .mark_read(herald::pb::MarkReadRequest {
            user_id: "ann".into(),
            all: true,
            ..Default::default()
        })
        .await
        .expect("marked")
        .into_inner();
    assert_eq!((done.marked, done.unread_count), (1, 0));
    logger.stop_within(Duration::from_secs(10)).await;
}

/// A logger on a real Redis with no processor (the tests set statuses by
/// hand), its end users' listener, an admin client and ann's
/// `authorization`; `None` when Redis tests are skipped. Bind every field:
/// one left out of a pattern is dropped at once (the Redis server with it).
struct OnRedis {
    _redis: herald_storage::testing::RedisServer,
    _keys: tempfile::TempDir,
    logger: common::Logger,
    web: SocketAddr,
    admin: herald_client::Client,
    ann: String,
}

impl OnRedis {
    async fn start() -> Option<Self> {
        if herald_storage::testing::skip_redis_tests() {
            return None;
        }
        let redis = herald_storage::testing::RedisServer::start();
        let (keys, logger) = web_logger(&["--redis-url", &redis.url()]).await;
        Some(Self {
            web: logger.web_addr.expect("web listener"),
            admin: logger.client_with_key("admin-key").await,
            ann: format!("Bearer {}", token("ann")),
            _redis: redis,
            _keys: keys,
            logger,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_inbox_passes_over_events_that_are_not_notifications() {
    let Some(on) = OnRedis::start().await else {
        return;
    };
    let (web, admin, ann) = (on.web, &on.admin, on.ann.clone());
    // No processor runs: the statuses are set by hand, oldest first a read
    // one, an unread one, one still PENDING, one FAILED, an unread one.
    let mut ids = Vec::new();
    for description in ["read", "first", "pending", "failed", "second"] {
        ids.push(
            admin
                .create_event("ann", description)
                .await
                .expect("create")
                .id,
        );
    }
    for (i, statuses) in [
        (0, &[EventStatus::Processed, EventStatus::Opened][..]),
        (1, &[EventStatus::Processed]),
        (3, &[EventStatus::Failed]),
        (4, &[EventStatus::Processed]),
    ] {
        for status in statuses {
            admin.update_status(ids[i], *status).await.expect("status");
        }
    }
    let descriptions = |page: &Value| -> Vec<String> {
        page["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .map(|n| n["description"].as_str().expect("description").to_owned())
            .collect()
    };
    let (_, all) = json_call(web, "GET", "/v1/inbox?page_size=1", &ann, None).await;
    assert_eq!(descriptions(&all), ["second"], "{all}");
    let mut walked = descriptions(&all);
    let mut token = all["next_page_token"].as_str().unwrap_or("").to_owned();
    while !token.is_empty() {
        let path = format!("/v1/inbox?page_size=1&page_token={token}");
        let (_, page) = json_call(web, "GET", &path, &ann, None).await;
        walked.extend(descriptions(&page));
        token = page["next_page_token"].as_str().unwrap_or("").to_owned();
    }
    assert_eq!(
        walked,
        ["second", "first", "read"],
        "PENDING and FAILED passed over"
    );
    let (_, unread) = json_call(web, "GET", "/v1/inbox?unread_only=true", &ann, None).await;
    assert_eq!(descriptions(&unread), ["second", "first"]);
    assert_eq!(unread["unread_count"], 2);

    let (status, done) = mark_read(web, &ann, json!({"all": true})).await;
    assert_eq!(
        (status, &done["marked"], &done["unread_count"]),
        (200, &json!(2), &json!(0)),
        "{done}"
    );
    let statuses = [
        EventStatus::Opened,
        EventStatus::Opened,
        EventStatus::Pending,
        EventStatus::Failed,
        EventStatus::Opened,
    ];
    for (id, expected) in ids.iter().zip(statuses) {
        assert_eq!(admin.get_event(*id).await.expect("get").status, expected);
    }
    let (_, count) = json_call(web, "GET", "/v1/inbox/unread_count", &ann, None).await;
    assert_eq!(count["unread_count"], 0);
    on.logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_inbox_page_looks_at_so_many_events_and_none_when_nothing_is_unread() {
    let Some(on) = OnRedis::start().await else {
        return;
    };
    let (web, admin, ann) = (on.web, &on.admin, on.ann.clone());
    // More read notifications than one call looks at (LIST_SCAN_LIMIT),
    // then one unread one, the oldest of all.
    let oldest = admin
        .create_event("ann", "unread")
        .await
        .expect("create")
        .id;
    let mut changes = vec![herald_client::StatusChange::new(
        oldest,
        EventStatus::Processed,
    )];
    for _ in 0..11 {
        let inputs = vec![
            herald_client::EventInput {
                user_id: "ann".into(),
                description: "read".into(),
                ..herald_client::EventInput::default()
            };
            1_000
        ];
        for created in admin.create_many(inputs).await.expect("create_many") {
            let id = created.expect("created").id;
            changes.push(herald_client::StatusChange::new(id, EventStatus::Processed));
            changes.push(herald_client::StatusChange::new(id, EventStatus::Opened));
        }
    }
    for chunk in changes.chunks(1_000) {
        for outcome in admin.batch_update_status(chunk).await.expect("batch") {
            outcome.expect("changed");
        }
    }
    let unread_page = || json_call(web, "GET", "/v1/inbox?unread_only=true", &ann, None);
    // The first call stops short of the unread one, with a token to go on.
    let (status, first) = unread_page().await;
    assert_eq!(status, 200, "{first}");
    assert!(first["notifications"].as_array().expect("list").is_empty());
    let token = first["next_page_token"].as_str().expect("token").to_owned();
    assert!(!token.is_empty(), "a short page says where to go on");
    let path = format!("/v1/inbox?unread_only=true&page_token={token}");
    let (_, second) = json_call(web, "GET", &path, &ann, None).await;
    let found: Vec<&str> = second["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|n| n["description"].as_str().expect("description"))
        .collect();
    assert_eq!(found, ["unread"], "{second}");
    // With nothing unread, nothing is walked: an empty last page at once.
    let (status, done) = mark_read(web, &ann, json!({"all": true})).await;
    assert_eq!((status, &done["marked"]), (200, &json!(1)), "{done}");
    let (_, empty) = unread_page().await;
    assert_eq!(
        (
            &empty["notifications"],
            &empty["next_page_token"],
            &empty["unread_count"]
        ),
        (&json!([]), &json!(""), &json!(0)),
        "{empty}"
    );
    on.logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_clients_inbox_calls_work_with_a_users_token() {
    use futures_util::TryStreamExt;
    use herald_client::{ListInbox, MarkRead};
    let (_keys, logger) = web_logger(&[]).await;
    let admin = logger.client_with_key("admin-key").await;
    let ids = notify(&admin, "ann", &["one", "two", "three"]).await;
    let bobs = notify(&admin, "bob", &["bob's"]).await;
    let ann = logger.client_with_key(&token("ann")).await;

    // Every page, one notification at a time, newest first.
    let all: Vec<String> = ann
        .inbox(ListInbox::new("ann").page_size(1))
        .map_ok(|e| e.description)
        .try_collect()
        .await
        .expect("every page");
    assert_eq!(all, ["three", "two", "one"]);
    assert_eq!(ann.unread_count("ann").await.expect("count"), 3);

    let first: uuid::Uuid = ids[0].parse().expect("id");
    let done = ann
        .mark_read("ann", MarkRead::Ids(vec![first]))
        .await
        .expect("marked");
    assert_eq!((done.marked, done.unread_count), (1, 2));
    let unread = ann
        .list_inbox(ListInbox::new("ann").unread_only())
        .await
        .expect("unread");
    let descriptions: Vec<&str> = unread
        .page
        .items
        .iter()
        .map(|e| e.description.as_str())
        .collect();
    assert_eq!(
        (descriptions, unread.unread_count),
        (vec!["three", "two"], 2)
    );

    // Another user's notification among the ids: refused naming it, and
    // nothing marked.
    let bob: uuid::Uuid = bobs[0].parse().expect("id");
    let second: uuid::Uuid = ids[1].parse().expect("id");
    let err = ann
        .mark_read("ann", MarkRead::Ids(vec![second, bob]))
        .await
        .expect_err("bob's notification");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["event_ids[1]"], "{err}");
    assert_eq!(status_of(&admin, &ids[1]).await, EventStatus::Processed);
    let err = ann.unread_count("bob").await.expect_err("bob's inbox");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let done = ann.mark_read("ann", MarkRead::All).await.expect("all");
    assert_eq!((done.marked, done.unread_count), (2, 0));
    logger.stop_within(Duration::from_secs(10)).await;
}
