//! The console's JSON API as a hostile but fair script uses it: refusals
//! that name the field and change nothing, the rules for changes (JSON,
//! same origin, the right scope, bodies bounded in size and time), and the
//! open console's guard against rebound names. The page itself, in a real
//! browser, is in `console.rs`.

use std::{net::SocketAddr, time::Duration};

use common::{Lines, Logger, http_call, http_get};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common;

/// How long a logger may take to stop, and a call to answer.
const PAGE: Duration = Duration::from_secs(10);

/// Calls the console's API as a script would.
async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, _, body) = http_call(addr, method, path, headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_console_api_refuses_bad_input_with_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = common::console_keys_file(&dir);
    let logger = Logger::start_with_console(&["--keys-file", &keys], Lines::default().sink()).await;
    let addr = logger.console_addr.expect("console");
    let reader = [("authorization", "Bearer reader-key")];

    // The page and its assets are served with a strict policy.
    let (status, head, page) = http_call(addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<script type=\"module\" src=\"/console.js\">"),
        "{page}"
    );
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    for asset in ["/console.js", "/console.css"] {
        assert_eq!(http_get(addr, asset).await.0, 200, "{asset}");
    }
    let (status, body) = api(addr, "GET", "/nowhere", &[], "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{body}"
    );

    // Without a key, or with a wrong one: 401, the reason in JSON.
    let (status, body) = api(addr, "GET", "/api/events", &[], "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{body}"
    );
    let (status, body) = api(
        addr,
        "GET",
        "/api/session",
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api(addr, "GET", "/api/session", &reader, "").await;
    assert_eq!(
        (status, &body["read"], &body["process"]),
        (200, &json!(true), &json!(false)),
        "{body}"
    );

    // Bad values name their field.
    for (path, field) in [
        ("/api/events?status=DONE", "status"),
        ("/api/events?since=yesterday", "since"),
        ("/api/events?order=random", "order"),
        ("/api/events?page_size=-1", "page_size"),
        ("/api/events?page_token=%00%ff", "page_token"),
        ("/api/events/not-a-uuid", "event_id"),
        ("/api/feed?statuses=PENDING,LOST", "statuses"),
        ("/api/feed?after=garbage", "after_cursor"),
    ] {
        let (status, body) = api(addr, "GET", path, &reader, "").await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(field),
            "{path}: {body}"
        );
    }
    let (status, body) = api(addr, "GET", "/api/events?colour=red", &reader, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{body}"
    );
    let unknown = format!("/api/events/{}", Uuid::now_v7());
    assert_eq!(api(addr, "GET", &unknown, &reader, "").await.0, 404);

    // Changes: JSON only, same origin only, the right scope only.
    let operator = ("authorization", "Bearer operator-key");
    let json_type = ("content-type", "application/json");
    let redrive = |headers: Vec<(&'static str, &'static str)>, body: &'static str| async move {
        api(addr, "POST", "/api/redrive", &headers, body).await
    };
    // The console's own refusals carry gRPC code names like the rest.
    let (status, body) = redrive(vec![operator], r#"{"all": true}"#).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("INVALID_ARGUMENT")),
        "text/plain is refused: {body}"
    );
    let (status, body) = redrive(
        vec![operator, json_type, ("origin", "http://evil.example")],
        r#"{"all": true}"#,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let (status, body) = redrive(vec![reader[0], json_type], r#"{"all": true}"#).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("events:process"),
        "{body}"
    );
    let (status, body) = redrive(vec![operator, json_type], r#"{"event_ids": ["nope"]}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("event_ids[0]"),
        "{body}"
    );
    let (status, body) = redrive(vec![operator, json_type], r#"{}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = redrive(vec![operator, json_type], "{not json").await;
    assert_eq!(status, 400);
    let huge = format!(r#"{{"event_ids": ["{}"]}}"#, "x".repeat(100_000));
    let (status, body) = api(addr, "POST", "/api/redrive", &[operator, json_type], &huge).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("RESOURCE_EXHAUSTED")),
        "bodies are bounded: {body}"
    );
    let (status, body) = redrive(vec![operator, json_type], r#"{"all": true}"#).await;
    assert_eq!((status, &body["results"]), (200, &json!([])), "{body}");

    // Cancelling needs events:write, a UUID, and a SCHEDULED event.
    let admin = ("authorization", "Bearer admin-key");
    let cancel = |id: String, key| async move {
        api(
            addr,
            "POST",
            &format!("/api/events/{id}/cancel"),
            &[key, json_type],
            "{}",
        )
        .await
    };
    let (status, body) = cancel("nope".into(), admin).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("event_id")),
        "{body}"
    );
    let delivered = logger
        .client_with_key("admin-key")
        .await
        .create_event("ann", "now")
        .await
        .expect("create");
    let (status, body) = cancel(delivered.id.to_string(), operator).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("events:write"),
        "{body}"
    );
    let (status, body) = cancel(delivered.id.to_string(), admin).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("FAILED_PRECONDITION")),
        "{body}"
    );
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn an_open_console_answers_only_at_local_names() {
    let logger = Logger::start_with_console(&[], Lines::default().sink()).await;
    let addr = logger.console_addr.expect("console");
    let (status, body) = api(
        addr,
        "GET",
        "/api/session",
        &[("host", "evil.example:8088")],
        "",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (421, Some("PERMISSION_DENIED")),
        "a rebound name is refused: {body}"
    );
    let (status, body) = api(
        addr,
        "GET",
        "/api/session",
        &[("host", "localhost:8088")],
        "",
    )
    .await;
    assert_eq!((status, &body["open"]), (200, &json!(true)), "{body}");
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn a_change_whose_body_never_arrives_whole_is_cut_off() {
    let logger =
        Logger::start_with_console(&["--body-timeout", "1s"], Lines::default().sink()).await;
    let addr = logger.console_addr.expect("console");
    // 100 bytes promised, 7 sent, and then nothing: the server answers and
    // closes; past 20 s the text below says what came.
    let text = common::unfinished_body(
        addr,
        "POST /api/redrive HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"all\":",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("--body-timeout") && text.contains("DEADLINE_EXCEEDED"),
        "{text}"
    );
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn the_console_recipients_api_names_bad_fields_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = common::console_keys_file(&dir);
    let logger = Logger::start_with_console(&["--keys-file", &keys], Lines::default().sink()).await;
    let addr = logger.console_addr.expect("console");
    let admin = ("authorization", "Bearer admin-key");
    let json_type = ("content-type", "application/json");
    let put = |body: &'static str| async move {
        api(
            addr,
            "PUT",
            "/api/recipients/ann",
            &[admin, json_type],
            body,
        )
        .await
    };

    let (status, body) = api(addr, "GET", "/api/recipients/ann", &[admin], "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{body}"
    );
    let (status, stored) = put(
        r#"{"email": "ann@example.com", "locale": "fr", "opt_outs": [{"channel": "email", "category": "marketing"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["opt_outs"],
        json!([{"channel": "email", "category": "marketing", "type": ""}])
    );

    // Every refusal names its field, and the record stays as it was.
    // (422: JSON of the wrong shape, 400: values the server refuses.)
    for (body, field, wanted) in [
        (r#"{"email": "ann at example"}"#, "email", 400),
        (r#"{"locale": "fr_FR"}"#, "locale", 400),
        (r#"{"time_zone": "Mars/Olympus"}"#, "time_zone", 400),
        (r#"{"attributes": "plan"}"#, "attributes", 422),
        (r#"{"attributes": {"x": 1e400}}"#, "attributes.x", 400),
        (r#"{"opt_outs": [{}]}"#, "preferences.opt_outs[0]", 400),
        (r#"{"opt_outs": [{"colour": "red"}]}"#, "colour", 422),
        (r#"{"mail": "ann@example.com"}"#, "mail", 422),
    ] {
        let (status, answer) = put(body).await;
        assert_eq!(status, wanted, "{body}: {answer}");
        assert_eq!(answer["code"], "INVALID_ARGUMENT", "{body}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{body}: {answer}"
        );
    }
    let long = format!("/api/recipients/{}", "u".repeat(300));
    let (status, answer) = api(addr, "PUT", &long, &[admin, json_type], "{}").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("user_id"),
        "{answer}"
    );
    let (status, now) = api(addr, "GET", "/api/recipients/ann", &[admin], "").await;
    assert_eq!(status, 200);
    assert_eq!(now, stored, "nothing changed");

    // Reading needs recipients:read, changing recipients:write.
    let reader = ("authorization", "Bearer reader-key");
    let support = ("authorization", "Bearer support-key");
    let (status, answer) = api(addr, "GET", "/api/recipients/ann", &[reader], "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("recipients:read"),
        "{answer}"
    );
    let (status, session) = api(addr, "GET", "/api/session", &[support], "").await;
    assert_eq!(
        (
            status,
            &session["recipients_read"],
            &session["recipients_write"]
        ),
        (200, &json!(true), &json!(false)),
        "{session}"
    );
    assert_eq!(
        api(addr, "GET", "/api/recipients/ann", &[support], "").await,
        (200, stored.clone())
    );
    let (status, answer) = api(
        addr,
        "DELETE",
        "/api/recipients/ann",
        &[support, json_type],
        "{}",
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("recipients:write"),
        "{answer}"
    );

    // Erasing answers whether there was a record, and it is gone.
    for deleted in [true, false] {
        let (status, answer) = api(
            addr,
            "DELETE",
            "/api/recipients/ann",
            &[admin, json_type],
            "{}",
        )
        .await;
        assert_eq!((status, &answer["deleted"]), (200, &json!(deleted)));
    }
    assert_eq!(
        api(addr, "GET", "/api/recipients/ann", &[admin], "")
            .await
            .0,
        404
    );
    logger.stop_within(PAGE).await;
}
