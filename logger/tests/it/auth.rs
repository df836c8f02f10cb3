//! API keys, scopes and user tokens over gRPC: every RPC against no key, a
//! wrong key, a key without the scope, the right key, an expired user token,
//! another user's token and the user's own; the caller becomes the source.

use std::time::Duration;

use common::{Lines, Logger, eventually};
use herald::{
    EventStatus,
    auth::hash_key,
    domain::EventInput,
    pb::{self, event_logger_client::EventLoggerClient},
};
use herald_client::{ApiKey, Client};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::common;

const CLIENTS: [(&str, &str); 5] = [
    ("shop", "events:write"),
    ("analyst", "events:read"),
    ("worker", "events:process"),
    ("dashboard", "notifications:subscribe"),
    ("ops", "admin"),
];

fn key_of(client: &str) -> String {
    format!("test-key-of-{client}")
}

fn keys_file(dir: &tempfile::TempDir) -> String {
    let entries: Vec<_> = CLIENTS
        .iter()
        .map(|(client, scope)| {
            serde_json::json!({"client_id": client, "key_sha256": hash_key(&key_of(client)), "scopes": [scope]})
        })
        .collect();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, serde_json::json!({ "keys": entries }).to_string()).expect("write keys");
    path.to_str().expect("utf-8").to_owned()
}

/// A logger with the test clients' keys file (kept alive by the returned
/// directory) and `extra` flags.
async fn logger_with_keys(
    extra: &[&str],
    sink: std::sync::Arc<dyn herald_processor::Channel>,
) -> (tempfile::TempDir, Logger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys_file(&dir);
    let mut args = vec!["--keys-file", keys.as_str()];
    args.extend_from_slice(extra);
    let logger = Logger::start(&args, sink).await;
    (dir, logger)
}

/// Calls one RPC with `key`, answering only the status code.
async fn call(logger: &Logger, rpc: &str, key: &str, event_id: &str) -> Code {
    let mut raw = EventLoggerClient::with_interceptor(
        logger.channel().await,
        ApiKey::bearer(key).expect("key"),
    );
    let create = || pb::CreateEventRequest {
        user_id: "u".into(),
        description: "d".into(),
        ..Default::default()
    };
    let change = || pb::UpdateStatusRequest {
        event_id: event_id.into(),
        status: EventStatus::Processed.to_pb() as i32,
        ..Default::default()
    };
    let result = match rpc {
        "CreateEvent" => raw.create_event(create()).await.map(drop),
        "CreateEvents" => raw
            .create_events(pb::CreateEventsRequest {
                requests: vec![create()],
            })
            .await
            .map(drop),
        "GetEvent" => raw
            .get_event(pb::GetEventRequest {
                event_id: event_id.into(),
            })
            .await
            .map(drop),
        "ListEvents" => raw
            .list_events(pb::ListEventsRequest::default())
            .await
            .map(drop),
        "GetStats" => raw.get_stats(pb::GetStatsRequest {}).await.map(drop),
        "ListDeadLetters" => raw
            .list_dead_letters(pb::ListDeadLettersRequest::default())
            .await
            .map(drop),
        "RedriveEvents" => raw
            .redrive_events(pb::RedriveEventsRequest {
                event_ids: vec![event_id.into()],
                all: false,
            })
            .await
            .map(drop),
        "UpdateStatus" => raw.update_status(change()).await.map(drop),
        "BatchUpdateStatus" => raw
            .batch_update_status(pb::BatchUpdateStatusRequest {
                requests: vec![change()],
                ..Default::default()
            })
            .await
            .map(drop),
        "Subscribe" => {
            let client = Client::connect(logger.url())
                .await
                .expect("connect")
                .with_api_key(key)
                .expect("key");
            return match client.subscribe("u").await {
                Ok(_) => Code::Ok,
                Err(err) => err.code(),
            };
        }
        other => panic!("no such RPC {other}"),
    };
    result.map_or_else(|status| status.code(), |()| Code::Ok)
}

#[tokio::test]
async fn every_rpc_checks_the_key_and_its_scope() {
    let (_keys, logger) = logger_with_keys(
        &["--user-token-secret", USER_SECRET],
        Lines::default().sink(),
    )
    .await;
    let shop = logger.client_with_key(&key_of("shop")).await;
    let event = shop
        .create_event("u", "seed")
        .await
        .expect("create with the write scope");
    let id = event.id.to_string();

    // End users' tokens for the event's user "u": expired, another user's, own.
    let expired = user_token("u", USER_SECRET, -3_600);
    let other_user = user_token("x", USER_SECRET, 600);
    let own_user = user_token("u", USER_SECRET, 600);
    // RPC, a client allowed, a client denied, and whether u's own token may
    // call it (Subscribe to u; the status change here is PROCESSED, which a
    // user may not set).
    let table = [
        ("CreateEvent", "shop", "analyst", false),
        ("CreateEvents", "shop", "worker", false),
        ("GetEvent", "analyst", "shop", false),
        ("ListEvents", "analyst", "dashboard", false),
        ("GetStats", "analyst", "worker", false),
        ("ListDeadLetters", "worker", "analyst", false),
        ("RedriveEvents", "worker", "dashboard", false),
        ("UpdateStatus", "worker", "analyst", false),
        ("BatchUpdateStatus", "worker", "shop", false),
        ("Subscribe", "dashboard", "worker", true),
    ];
    for (rpc, allowed, denied, user_allowed) in table {
        assert_eq!(
            call(&logger, rpc, "", &id).await,
            Code::Unauthenticated,
            "{rpc} without a key"
        );
        assert_eq!(
            call(&logger, rpc, "wrong-key", &id).await,
            Code::Unauthenticated,
            "{rpc} with a wrong key"
        );
        assert_eq!(
            call(&logger, rpc, &key_of(denied), &id).await,
            Code::PermissionDenied,
            "{rpc} as {denied}"
        );
        assert_eq!(
            call(&logger, rpc, &key_of(allowed), &id).await,
            Code::Ok,
            "{rpc} as {allowed}"
        );
        assert_eq!(
            call(&logger, rpc, &key_of("ops"), &id).await,
            Code::Ok,
            "{rpc} as admin"
        );
        assert_eq!(
            call(&logger, rpc, &expired, &id).await,
            Code::Unauthenticated,
            "{rpc} with an expired user token"
        );
        assert_eq!(
            call(&logger, rpc, &other_user, &id).await,
            Code::PermissionDenied,
            "{rpc} with another user's token"
        );
        let own = if user_allowed {
            Code::Ok
        } else {
            Code::PermissionDenied
        };
        assert_eq!(
            call(&logger, rpc, &own_user, &id).await,
            own,
            "{rpc} with the user's own token"
        );
    }

    // The denial names the missing scope; health needs no key.
    let analyst = logger.client_with_key(&key_of("analyst")).await;
    let err = analyst
        .create_event("u", "d")
        .await
        .expect_err("read-only key");
    assert!(err.to_string().contains("events:write"), "{err}");
    let mut health = HealthClient::new(logger.channel().await);
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("health is open");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_caller_becomes_the_source_and_the_embedded_worker_has_its_own_key() {
    let lines = Lines::default();
    let (_keys, logger) = logger_with_keys(&[], lines.sink()).await;
    let shop = logger.client_with_key(&key_of("shop")).await;
    let input = EventInput {
        user_id: "u".into(),
        description: "bought".into(),
        ..EventInput::default()
    };
    let event = shop.create(input).await.expect("create");
    assert_eq!(event.source, "shop", "set from the key, not the request");
    let batch = shop.create_many(vec![EventInput {
        user_id: "v".into(),
        description: "d".into(),
        ..EventInput::default()
    }]);
    assert_eq!(
        batch.await.expect("batch")[0]
            .as_ref()
            .expect("created")
            .source,
        "shop"
    );

    let analyst = logger.client_with_key(&key_of("analyst")).await;
    eventually(
        Duration::from_secs(10),
        "PROCESSED by the embedded worker",
        || async {
            (analyst.get_event(event.id).await.ok()?.status == EventStatus::Processed).then_some(())
        },
    )
    .await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn open_mode_is_refused_off_loopback() {
    let config = herald_logger::Config::from_args(&[]);
    let public = "0.0.0.0:50051".parse().expect("addr");
    let err = config.key_ring(public).err().expect("refused");
    assert!(format!("{err}").contains("--allow-anonymous"), "{err}");
    assert!(
        config
            .key_ring("127.0.0.1:50051".parse().expect("addr"))
            .expect("loopback")
            .is_open()
    );
    let anonymous = herald_logger::Config::from_args(&["--allow-anonymous"]);
    assert!(anonymous.key_ring(public).expect("allowed").is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_need_the_process_scope() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    let redis = herald_storage::testing::RedisServer::start();
    let (_keys, logger) =
        logger_with_keys(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    let shop = logger.client_with_key(&key_of("shop")).await;
    let analyst = logger.client_with_key(&key_of("analyst")).await;

    // A processor with a key lacking events:process delivers but cannot settle.
    let wrong = common::Processor::start_with_key(
        &redis.url(),
        &logger.url(),
        &key_of("analyst"),
        &["--consumer-name", "w"],
        Lines::default().sink(),
    );
    let event = shop
        .create_event("u", "needs a processor")
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        analyst.get_event(event.id).await.expect("get").status,
        EventStatus::Pending
    );
    wrong.kill();

    let right = common::Processor::start_with_key(
        &redis.url(),
        &logger.url(),
        &key_of("worker"),
        &["--consumer-name", "r", "--claim-idle", "300ms"],
        Lines::default().sink(),
    );
    eventually(Duration::from_secs(20), "PROCESSED", || async {
        (analyst.get_event(event.id).await.ok()?.status == EventStatus::Processed).then_some(())
    })
    .await;
    right.shutdown.cancel();
    right.handle.await.expect("join").expect("processor");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn clients_over_their_rate_are_told_when_to_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.json");
    let keys = serde_json::json!({"keys": [
        {"client_id": "slow", "key_sha256": hash_key("slow-key"), "scopes": ["admin"], "rate_per_sec": 1, "burst": 2},
        {"client_id": "fast", "key_sha256": hash_key("fast-key"), "scopes": ["admin"]},
    ]});
    std::fs::write(&path, keys.to_string()).expect("write");
    let logger = Logger::start(
        &[
            "--keys-file",
            path.to_str().expect("utf-8"),
            "--rate-limit",
            "1000",
        ],
        Lines::default().sink(),
    )
    .await;
    let client = |key: &str| {
        let url = logger.url();
        let key = key.to_owned();
        async move {
            Client::connect(url)
                .await
                .expect("connect")
                .with_api_key(&key)
                .expect("key")
                .with_retry(herald_client::RetryPolicy {
                    retries: 0,
                    ..Default::default()
                })
        }
    };
    let slow = client("slow-key").await;
    slow.create_event("u", "one")
        .await
        .expect("within the burst");
    slow.create_event("u", "two")
        .await
        .expect("within the burst");
    let err = slow
        .create_event("u", "three")
        .await
        .expect_err("over the rate");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let mut raw = EventLoggerClient::with_interceptor(
        logger.channel().await,
        ApiKey::bearer("slow-key").expect("key"),
    );
    let status = raw
        .get_event(pb::GetEventRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("still over the rate");
    use tonic_types::StatusExt;
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );

    // Other clients have buckets of their own (here the default of 1,000/s).
    let fast = client("fast-key").await;
    for i in 0..20 {
        fast.create_event("u", &format!("fast {i}"))
            .await
            .expect("unaffected");
    }
    // Health checks are never limited.
    let mut health = HealthClient::new(logger.channel().await);
    for _ in 0..5 {
        health
            .check(HealthCheckRequest::default())
            .await
            .expect("health");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let logger = Logger::start(&["--max-message-bytes", "262144"], Lines::default().sink()).await;
    let client = logger.client().await;
    let big: Vec<EventInput> = (0..80)
        .map(|i| EventInput {
            user_id: format!("u{i}"),
            description: "d".repeat(4000),
            ..EventInput::default()
        })
        .collect();
    let err = client.create_many(big).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("--max-message-bytes"), "{err}");
    assert_eq!(
        client.stats().await.expect("stats").total_events,
        0,
        "nothing of a refused call is stored"
    );
    client
        .create_event("u", "small")
        .await
        .expect("small messages pass");
    logger.stop_within(Duration::from_secs(10)).await;
}

const USER_SECRET: &str = "a-test-secret-of-enough-length";

/// A user token for `user`, signed with `secret`, expiring `ttl_secs` from now
/// (negative: already expired).
fn user_token(user: &str, secret: &str, ttl_secs: i64) -> String {
    token_with(
        secret,
        serde_json::json!({"sub": user, "exp": now_secs() + ttl_secs}),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A token with exactly these claims, signed with `secret`.
fn token_with(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

#[tokio::test]
async fn user_tokens_reach_only_their_own_notifications_and_events() {
    let (_keys, logger) = logger_with_keys(
        &["--user-token-secret", USER_SECRET],
        Lines::default().sink(),
    )
    .await;
    let as_key = |key: String| {
        let url = logger.url();
        async move {
            Client::connect(url)
                .await
                .expect("connect")
                .with_api_key(&key)
                .expect("key")
        }
    };
    let shop = as_key(key_of("shop")).await;
    let analyst = as_key(key_of("analyst")).await;
    // Signed by herald-client (as `herald tokens new` does), checked by the
    // logger's own JWT library: the two agree.
    let signed = herald_client::tokens::user_token(USER_SECRET, "ada", Duration::from_secs(600))
        .expect("token");
    let ada = as_key(signed.token).await;

    let mut own = ada.subscribe("ada").await.expect("own notifications");
    let other = ada.subscribe("bob").await.err().expect("someone else's");
    assert_eq!(other.code(), Code::PermissionDenied);
    let adas = shop.create_event("ada", "for ada").await.expect("create");
    let bobs = shop.create_event("bob", "for bob").await.expect("create");
    let first = common::expect_event(&mut own).await;
    assert_eq!(first.event.id, adas.id);
    eventually(Duration::from_secs(10), "bob's event processed", || async {
        (analyst.get_event(bobs.id).await.ok()?.status == EventStatus::Processed).then_some(())
    })
    .await;

    let opened = ada
        .update_status(adas.id, EventStatus::Opened)
        .await
        .expect("opens her own");
    assert_eq!(opened.status, EventStatus::Opened);
    let err = ada
        .update_status(bobs.id, EventStatus::Opened)
        .await
        .expect_err("not hers");
    assert_eq!(err.code(), Code::PermissionDenied);
    // An id that exists nowhere answers the same: no probing for ids.
    let unknown = ada
        .update_status(uuid::Uuid::now_v7(), EventStatus::Opened)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert_eq!(unknown.to_string(), err.to_string());
    let err = ada
        .update_status(adas.id, EventStatus::Failed)
        .await
        .expect_err("only OPENED");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        ada.create_event("ada", "x")
            .await
            .expect_err("no writes")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        ada.get_event(adas.id).await.expect_err("no reads").code(),
        Code::PermissionDenied
    );
    let batch = ada
        .batch_update_status(&[herald_client::StatusChange::new(
            adas.id,
            EventStatus::Opened,
        )])
        .await;
    assert_eq!(
        batch.expect_err("no batches").code(),
        Code::PermissionDenied
    );

    let expired = as_key(user_token("ada", USER_SECRET, -600)).await;
    let err = expired.subscribe("ada").await.err().expect("expired");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.to_string().contains("expired"), "{err}");
    let forged = as_key(user_token("ada", "some-other-secret-entirely", 600)).await;
    let err = forged.subscribe("ada").await.err().expect("forged");
    assert_eq!(err.code(), Code::Unauthenticated);
    // What failed is named (the signature), never the secret.
    assert!(
        err.to_string().contains("signature does not match"),
        "{err}"
    );
    assert!(!err.to_string().contains(USER_SECRET), "{err}");
    // Expired 30 s ago: past the default leeway of 5 s.
    let just_expired = as_key(user_token("ada", USER_SECRET, -30)).await;
    let err = just_expired.subscribe("ada").await.err().expect("expired");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    // Valid only in 50 minutes.
    let early = token_with(
        USER_SECRET,
        serde_json::json!({"sub": "ada", "exp": now_secs() + 6000, "nbf": now_secs() + 3000}),
    );
    let err = as_key(early)
        .await
        .subscribe("ada")
        .await
        .err()
        .expect("not yet");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("not valid yet"), "{err}");
    // No exp at all.
    let endless = token_with(USER_SECRET, serde_json::json!({"sub": "ada"}));
    let err = as_key(endless)
        .await
        .subscribe("ada")
        .await
        .err()
        .expect("no exp");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("no exp claim"), "{err}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_token_leeway_is_what_the_flag_says() {
    let (_keys, logger) = logger_with_keys(
        &[
            "--user-token-secret",
            USER_SECRET,
            "--user-token-leeway",
            "60s",
        ],
        Lines::default().sink(),
    )
    .await;
    let late = logger
        .client_with_key(&user_token("ada", USER_SECRET, -30))
        .await;
    let _late = late.subscribe("ada").await.expect("within 60 s of exp");
    let early = token_with(
        USER_SECRET,
        serde_json::json!({"sub": "ada", "exp": now_secs() + 600, "nbf": now_secs() + 30}),
    );
    let _early = logger
        .client_with_key(&early)
        .await
        .subscribe("ada")
        .await
        .expect("within 60 s of nbf");
    let stale = logger
        .client_with_key(&user_token("ada", USER_SECRET, -120))
        .await;
    let err = stale.subscribe("ada").await.err().expect("past the leeway");
    assert_eq!(err.code(), Code::Unauthenticated);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn each_client_holds_a_bounded_number_of_streams() {
    let (_keys, logger) =
        logger_with_keys(&["--max-streams-per-client", "2"], Lines::default().sink()).await;
    let dashboard = logger.client_with_key(&key_of("dashboard")).await;
    let first = dashboard.subscribe("a").await.expect("first");
    let _second = dashboard.subscribe("b").await.expect("second");
    let third = dashboard
        .subscribe("c")
        .await
        .err()
        .expect("over the limit");
    assert_eq!(third.code(), Code::ResourceExhausted);
    let ops = logger.client_with_key(&key_of("ops")).await;
    let _other = ops.subscribe("a").await.expect("other clients count apart");
    drop(first);
    let _fourth = eventually(Duration::from_secs(5), "a freed place", || async {
        dashboard.subscribe("d").await.ok()
    })
    .await;
    logger.stop_within(Duration::from_secs(10)).await;
}
