//! The user service against a real Herald logger, over real sockets: each
//! successful operation yields exactly one event of its type, a failed one
//! none; with Herald stopped the API still answers and the events arrive
//! once it is back; `/metrics` holds the counts.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::TryStreamExt;
use herald_client::{Client, Event, ListEvents};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// A server of this test process, stopped through its token.
struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("stops in time")
            .expect("join")
            .expect("ran without error");
    }
}

/// A Herald logger (memory backend, embedded worker) on `listener`.
fn logger_on(listener: TcpListener) -> Running {
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let config = herald_logger::Config::from_args(&["--metrics-listen", "off"]);
    let sink = Arc::new(herald_processor::LineChannel::new(std::io::sink()));
    let handle = tokio::spawn(herald_logger::run_with(
        herald_logger::Listeners::grpc(listener),
        config,
        sink,
        shutdown.clone(),
    ));
    Running {
        addr,
        shutdown,
        handle,
    }
}

/// The user service with its database in `dir`, publishing to `herald`.
async fn service(dir: &tempfile::TempDir, herald: SocketAddr) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let database = dir.path().join("users.db");
    let config = user_service::Config::from_args(&[
        "--database",
        database.to_str().expect("utf-8"),
        "--herald-url",
        &format!("http://{herald}"),
    ]);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(user_service::run(listener, config, shutdown.clone()));
    Running {
        addr,
        shutdown,
        handle,
    }
}

/// One HTTP/1.1 request; the status and the body (JSON, text or nothing).
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Creates a user through the API, which must answer 201; the user as answered.
async fn create_user(addr: SocketAddr, email: &str, name: &str) -> Value {
    let body = json!({"email": email, "name": name});
    let (status, answer) = call(addr, "POST", "/users", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    json_of(&answer)
}

/// The user events Herald holds, oldest first.
async fn user_events(herald: SocketAddr) -> Vec<Event> {
    let client = Client::connect(format!("http://{herald}"))
        .await
        .expect("connect");
    client
        .events(ListEvents::new().category("user"))
        .try_collect()
        .await
        .expect("list")
}

/// Waits until Herald holds `n` user events, then a little longer to see
/// that no more come; returns them.
async fn exactly(herald: SocketAddr, n: usize) -> Vec<Event> {
    for _ in 0..200 {
        if user_events(herald).await.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The publisher's linger is 5 ms; a stray event would be there by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = user_events(herald).await;
    assert_eq!(events.len(), n, "{events:#?}");
    events
}

/// Checks that `events` are one user's created, updated and deleted, in order.
fn assert_one_lifecycle(events: &[Event], user_id: &str) {
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.user_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("user.created", user_id),
            ("user.updated", user_id),
            ("user.deleted", user_id)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_successful_operation_publishes_one_event_and_a_failed_one_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let herald = logger_on(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    let api = service(&dir, herald.addr).await;
    let a = api.addr;

    let ada = create_user(a, "Ada@Example.com", "Ada").await;
    let id = ada["id"].as_str().expect("id").to_owned();
    assert_eq!(ada["email"], "ada@example.com");

    // Failures: each answers its code, naming the field, and publishes nothing.
    let failures = [
        (
            "POST",
            "/users".to_owned(),
            Some(json!({"email": "not-an-email", "name": "X"})),
            422,
            Some("email"),
        ),
        (
            "POST",
            "/users".to_owned(),
            Some(json!({"email": "b@example.com"})),
            422,
            Some("name"),
        ),
        (
            "POST",
            "/users".to_owned(),
            Some(json!({"email": "ADA@example.com", "name": "Twin"})),
            409,
            Some("email"),
        ),
        (
            "POST",
            "/users".to_owned(),
            Some(json!({"email": "c@example.com", "name": 7})),
            422,
            Some("name"),
        ),
        ("GET", "/users/nobody".to_owned(), None, 404, None),
        (
            "PATCH",
            "/users/nobody".to_owned(),
            Some(json!({"name": "N"})),
            404,
            None,
        ),
        ("PATCH", format!("/users/{id}"), Some(json!({})), 422, None),
        (
            "PATCH",
            format!("/users/{id}"),
            Some(json!({"name": ""})),
            422,
            Some("name"),
        ),
        ("DELETE", "/users/nobody".to_owned(), None, 404, None),
    ];
    for (method, path, body, code, field) in failures {
        let (status, answer) = call(a, method, &path, body).await;
        assert_eq!(status, code, "{method} {path}: {answer}");
        assert_eq!(
            json_of(&answer)["field"].as_str(),
            field,
            "{method} {path}: {answer}"
        );
    }

    let (status, body) = call(a, "GET", &format!("/users/{id}"), None).await;
    assert_eq!(
        (status, json_of(&body)["name"].clone()),
        (200, json!("Ada"))
    );
    let (status, body) = call(
        a,
        "PATCH",
        &format!("/users/{id}"),
        Some(json!({"name": "Ada L."})),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["name"].clone()),
        (200, json!("Ada L.")),
        "{body}"
    );
    let (status, _) = call(a, "DELETE", &format!("/users/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = call(a, "DELETE", &format!("/users/{id}"), None).await;
    assert_eq!(status, 404, "deleted users are gone");

    let events = exactly(herald.addr, 3).await;
    assert_one_lifecycle(&events, &id);
    let changes = &events[1].payload.as_ref().expect("payload")["changes"];
    assert_eq!(changes, &json!({"name": {"from": "Ada", "to": "Ada L."}}));

    let (status, metrics) = call(a, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "user_service_users_total 1",
        "user_service_users_active 0",
        "user_service_users_deleted 1",
        "user_service_events_total{type=\"user.created\",outcome=\"published\"} 1",
        "user_service_events_total{type=\"user.updated\",outcome=\"published\"} 1",
        "user_service_events_total{type=\"user.deleted\",outcome=\"published\"} 1",
        "user_service_events_total{type=\"user.created\",outcome=\"dropped\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("user_service_uptime_seconds "),
        "{metrics}"
    );
    api.stop().await;
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_herald_stopped_the_api_answers_and_the_events_arrive_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Herald's address, with nothing listening yet.
    let herald_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let api = service(&dir, herald_addr).await;
    let a = api.addr;
    let grace = create_user(a, "grace@example.com", "Grace").await;
    let id = grace["id"].as_str().expect("id").to_owned();
    let (status, _) = call(
        a,
        "PATCH",
        &format!("/users/{id}"),
        Some(json!({"email": "g@example.com"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(a, "DELETE", &format!("/users/{id}"), None).await;
    assert_eq!(status, 204);
    let (_, metrics) = call(a, "GET", "/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "user_service_events_buffered 3"),
        "{metrics}"
    );

    let herald = logger_on(
        TcpListener::bind(herald_addr)
            .await
            .expect("the same address"),
    );
    let events = exactly(herald.addr, 3).await;
    assert_one_lifecycle(&events, &id);
    api.stop().await;
    herald.stop().await;
}
