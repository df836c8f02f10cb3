//! The `<herald-inbox>` element end to end: `examples/inbox` (a page and
//! its back end, on an origin of their own) embeds it, a real logger on
//! Redis serves it and the user's notifications, and headless Chromium
//! (Debian's, through chromedriver) runs the page.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use common::{Lines, Logger, console_keys_file, eventually, rebind};
use herald::EventStatus;
use herald_storage::testing::{RedisServer, free_port, restartable_port};
use serde_json::json;
use webdriver::Browser;

use crate::{common, webdriver};

const SECRET: &str = "a-test-secret-of-enough-length";
/// How long a notification may take to show: the issue's "within a second".
const LIVE: Duration = Duration::from_secs(1);
/// How long a page may take to load, act or reconnect.
const PAGE: Duration = Duration::from_secs(20);

/// The example's back end, serving the page for `user` on a free port
/// until dropped.
struct ExampleApp {
    child: std::process::Child,
    origin: String,
}

impl ExampleApp {
    fn start(herald: SocketAddr, user: &str) -> Self {
        let port = free_port();
        let serve =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/inbox/serve.py");
        let child = std::process::Command::new("python3")
            .arg(serve)
            .args(["--herald", &format!("http://{herald}"), "--user", user])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("HERALD_USER_TOKEN_SECRET", SECRET)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the example's back end");
        Self {
            child,
            origin: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ExampleApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A logger on `redis` with its worker, keys, user tokens and the end
/// users' listener on `web`, allowing `origin`.
async fn logger(
    redis: &RedisServer,
    keys: &str,
    grpc: SocketAddr,
    web: SocketAddr,
    origin: &str,
) -> Logger {
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--worker",
        "--keys-file",
        keys,
        "--user-token-secret",
        SECRET,
        "--cors-allow-origin",
        origin,
        "--heartbeat",
        "1s",
    ];
    // A restart binds the same addresses again, as a redeployed logger would.
    Logger::start_with_web_on(
        rebind(grpc).await,
        rebind(web).await,
        &args,
        Lines::default().sink(),
    )
    .await
}

/// The script that reads the element: a JSON of its badge, its items (id,
/// status, text) and whether its stream is open.
const READ_ELEMENT: &str = r#"
const inbox = document.querySelector("herald-inbox");
if (!inbox || !inbox.shadowRoot) return null;
const root = inbox.shadowRoot;
const badge = root.querySelector(".badge");
return {
  badge: badge.hidden ? "" : badge.textContent,
  open: !!inbox._source && inbox._source.readyState === 1,
  items: [...root.querySelectorAll("li[data-event-id]")].map((li) => ({
    id: li.dataset.eventId, status: li.dataset.status, text: li.firstChild.textContent,
  })),
};
"#;

/// Waits until the element's state satisfies `check` (a JS expression over
/// `state`), for at most `limit`.
async fn until(browser: &Browser, limit: Duration, what: &str, check: &str) -> serde_json::Value {
    let script = format!(
        "const state = (() => {{ {READ_ELEMENT} }})(); return state && ({check}) ? state : null;"
    );
    browser.wait_for(limit, what, &script, json!([])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_element_shows_notifications_live_marks_them_read_and_survives_a_restart() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let keys = console_keys_file(&dir);
    let (grpc, web) = (
        SocketAddr::from(([127, 0, 0, 1], restartable_port())),
        SocketAddr::from(([127, 0, 0, 1], restartable_port())),
    );
    let app = ExampleApp::start(web, "ann");
    let mut herald = logger(&redis, &keys, grpc, web, &app.origin).await;
    let admin = herald.client_with_key("admin-key").await;

    let browser = Browser::start("inbox").await;
    // The back end may take a moment to listen.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(app.origin.trim_start_matches("http://"))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.goto(&format!("{}/", app.origin)).await;
    until(
        &browser,
        PAGE,
        "the element's stream open",
        "state.open && state.badge === ''",
    )
    .await;

    let bobs = admin
        .create_event("bob", "for bob only")
        .await
        .expect("create");
    let first = admin
        .create_event("ann", "Your order shipped")
        .await
        .expect("create");
    let state = until(
        &browser,
        LIVE,
        "the notification and the badge within a second",
        &format!(
            "state.items.some((i) => i.id === '{}') && state.badge === '1'",
            first.id
        ),
    )
    .await;
    assert_eq!(state["items"][0]["text"], "Your order shipped");
    assert_eq!(state["items"][0]["status"], "PROCESSED");

    // A click marks it read: OPENED in Herald, the badge gone.
    browser
        .execute(
            "document.querySelector('herald-inbox').shadowRoot.querySelector(`li[data-event-id='${arguments[0]}']`).click();",
            json!([first.id.to_string()]),
        )
        .await;
    until(
        &browser,
        PAGE,
        "read",
        "state.badge === '' && state.items[0].status === 'OPENED'",
    )
    .await;
    assert_eq!(
        admin.get_event(first.id).await.expect("get").status,
        EventStatus::Opened
    );

    // The logger restarts (Redis keeps everything); a notification sent
    // before the page reconnects is caught up, once.
    herald.stop_within(Duration::from_secs(10)).await;
    herald = logger(&redis, &keys, grpc, web, &app.origin).await;
    let admin = herald.client_with_key("admin-key").await;
    let second = admin
        .create_event("ann", "Your parcel arrived")
        .await
        .expect("create");
    let state = until(
        &browser,
        PAGE,
        "the notification sent across the restart",
        &format!(
            "state.items.some((i) => i.id === '{}') && state.badge === '1'",
            second.id
        ),
    )
    .await;
    let ids: Vec<&str> = state["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [second.id.to_string(), first.id.to_string()],
        "each once, newest first"
    );
    assert!(
        !ids.contains(&bobs.id.to_string().as_str()),
        "never another user's"
    );

    // What an event says is text, never markup.
    let hostile = admin
        .create_event("ann", "<img src=x onerror=\"window.pwned = 1\">")
        .await
        .expect("create");
    let state = until(
        &browser,
        PAGE,
        "the hostile notification",
        &format!("state.items.some((i) => i.id === '{}')", hostile.id),
    )
    .await;
    assert_eq!(
        state["items"][0]["text"],
        "<img src=x onerror=\"window.pwned = 1\">"
    );
    let injected = browser
        .execute(
            "return window.pwned === 1 || document.querySelector('herald-inbox').shadowRoot.querySelector('img') !== null;",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!(false), "rendered as text");

    // "Mark all read" empties the badge.
    browser
        .execute(
            "document.querySelector('herald-inbox').shadowRoot.querySelector('.mark-all').click();",
            json!([]),
        )
        .await;
    until(
        &browser,
        PAGE,
        "all read",
        "state.badge === '' && state.items.every((i) => i.status === 'OPENED')",
    )
    .await;
    eventually(Duration::from_secs(10), "OPENED in Herald", || async {
        (admin.get_event(second.id).await.ok()?.status == EventStatus::Opened).then_some(())
    })
    .await;
    browser
        .execute(
            "document.querySelector('herald-inbox').shadowRoot.querySelector('button.bell').click();",
            json!([]),
        )
        .await;
    browser.screenshot("read").await;
    browser.quit().await;
    herald.stop_within(Duration::from_secs(10)).await;
    drop(app);
}
