//! The console end to end: a real logger serves it, real headless Chromium
//! (Debian's, through chromedriver) opens it, and events are made over gRPC.
//! Its JSON API called directly, as a hostile client would, is in
//! `console_api.rs`.
//! Screenshots of every run are under `target/console-screenshots/`;
//! with `HERALD_UPDATE_SCREENSHOTS=1` the live view also goes to
//! `docs/console.png`, the picture the README shows.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Lines, Logger};
use herald::{Event, EventStatus, domain::EventInput};
use herald_client::{Client, NewRecipient, OptOut, Preferences};
use herald_storage::testing::RedisServer;
use serde_json::json;
use uuid::Uuid;
use webdriver::Browser;

use crate::{common, webdriver};

/// How long a change may take to show: the issue's "within a second".
const LIVE: Duration = Duration::from_secs(1);
/// How long a page may take to load or act.
const PAGE: Duration = Duration::from_secs(10);

fn console_url(logger: &Logger) -> String {
    format!("http://{}/", logger.console_addr.expect("a console"))
}

async fn create(client: &Client, user: &str, description: &str, event_type: &str) -> Event {
    client
        .create(EventInput {
            user_id: user.into(),
            description: description.into(),
            category: "shop".into(),
            event_type: event_type.into(),
            payload: Some(
                serde_json::from_value(json!({"order": 42, "items": ["book"]})).expect("payload"),
            ),
            ..EventInput::default()
        })
        .await
        .expect("create")
}

/// Waits until the feed shows a row of `event` (any status).
async fn row_appears(browser: &Browser, event: &Event, limit: Duration) {
    browser
        .wait_for(
            limit,
            &format!("a feed row of {}", event.description),
            "return document.querySelector(`#feed-rows tr[data-event-id='${arguments[0]}']`) !== null;",
            json!([event.id.to_string()]),
        )
        .await;
}

async fn row_shown(browser: &Browser, event: &Event) -> bool {
    browser
        .execute(
            "return document.querySelector(`#feed-rows tr[data-event-id='${arguments[0]}']`) !== null;",
            json!([event.id.to_string()]),
        )
        .await
        == true
}

async fn feed_is(browser: &Browser, state: &str) {
    browser
        .wait_for(
            PAGE,
            &format!("the feed to be {state}"),
            "return document.getElementById('feed-state').textContent === arguments[0];",
            json!([state]),
        )
        .await;
}

async fn status_is(client: &Client, id: Uuid, status: EventStatus) -> Event {
    common::status_is(client, id, status, PAGE).await
}

#[tokio::test]
async fn the_console_shows_events_live_as_text_filtered_paused_and_searched() {
    let logger = Logger::start_with_console(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let browser = Browser::start("live").await;
    browser.goto(&console_url(&logger)).await;
    feed_is(&browser, "live").await;
    assert!(
        !browser.visible("#login").await,
        "open mode asks for no key"
    );
    let who = browser.text("#who").await.unwrap_or_default();
    assert!(who.contains("open mode"), "{who}");

    // New events appear within a second, every field as text.
    let shipped = create(&client, "alice", "Your order shipped", "order.shipped").await;
    row_appears(&browser, &shipped, LIVE).await;
    let hostile = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>";
    let xss = create(&client, "alice", hostile, "order.note").await;
    row_appears(&browser, &xss, LIVE).await;
    let shown = browser
        .execute(
            "return document.querySelector(`#feed-rows tr[data-event-id='${arguments[0]}'] td.desc`).textContent;",
            json!([xss.id.to_string()]),
        )
        .await;
    assert_eq!(shown, hostile, "the description shows as the text it is");
    let markup = browser
        .execute(
            "return document.querySelectorAll('main img, main b').length;",
            json!([]),
        )
        .await;
    assert_eq!(markup, 0, "no element was made from an event's text");
    assert_eq!(browser.alert_text().await, None);
    let title = browser.execute("return document.title;", json!([])).await;
    assert_eq!(title, "Herald console");

    // A few seconds of traffic: the counts and the rate chart follow it
    // (and the README's picture shows it).
    let traffic = [
        ("erin", "Your parcel is out for delivery", "order.shipped"),
        ("frank", "Invoice #1042 was paid", "invoice.paid"),
        ("grace", "Welcome to the team workspace", "user.signup"),
        ("heidi", "Refund of 12.50 EUR issued", "order.refunded"),
    ];
    for _ in 0..4 {
        for (user, description, event_type) in traffic {
            create(&client, user, description, event_type).await;
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    browser
        .wait_for(
            PAGE,
            "the counts and the chart",
            "return Number(document.getElementById('count-total').textContent) >= 18 \
               && document.getElementById('rate-line').getAttribute('points').split(' ').length >= 2;",
            json!([]),
        )
        .await;
    let shot = browser.screenshot("live").await;
    if std::env::var_os("HERALD_UPDATE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console.png");
        std::fs::copy(&shot, docs).expect("copy the screenshot to docs/");
    }

    // Filters apply on the server: bob's order events only.
    browser.type_into("#f-user", "bob").await;
    browser.type_into("#f-types", "order.*").await;
    browser.click("#feed-apply").await;
    feed_is(&browser, "live").await;
    let not_bob = create(&client, "alice", "alice's order", "order.shipped").await;
    let not_order = create(&client, "bob", "bob's invoice", "invoice.paid").await;
    let wanted = create(&client, "bob", "bob's refund", "order.refunded").await;
    row_appears(&browser, &wanted, LIVE).await;
    assert!(!row_shown(&browser, &not_bob).await, "another user's event");
    assert!(
        !row_shown(&browser, &not_order).await,
        "another type's event"
    );
    assert!(
        !row_shown(&browser, &shipped).await,
        "the table starts afresh"
    );

    // Paused, nothing arrives; resumed, what came meanwhile does.
    browser.click("#feed-toggle").await;
    feed_is(&browser, "paused").await;
    let meanwhile = create(&client, "bob", "while paused", "order.paused").await;
    status_is(&client, meanwhile.id, EventStatus::Processed).await;
    assert!(!row_shown(&browser, &meanwhile).await, "paused");
    browser.click("#feed-toggle").await;
    row_appears(&browser, &meanwhile, PAGE).await;
    let statuses = browser
        .execute(
            "return [...document.querySelectorAll(`#feed-rows tr[data-event-id='${arguments[0]}']`)].map(r => r.dataset.status);",
            json!([meanwhile.id.to_string()]),
        )
        .await;
    assert_eq!(
        statuses,
        json!(["PROCESSED", "PENDING"]),
        "each change once, newest on top"
    );

    // An event's page: its fields, payload and history.
    status_is(&client, shipped.id, EventStatus::Processed).await;
    browser
        .goto(&format!("{}#/event/{}", console_url(&logger), shipped.id))
        .await;
    browser
        .wait_for(
            PAGE,
            "the event's history",
            "return document.querySelectorAll('#event-history tr').length === 2;",
            json!([]),
        )
        .await;
    let field = |name: &str| format!("#event-fields dd[data-field='{name}']");
    assert_eq!(
        browser.text(&field("description")).await.as_deref(),
        Some("Your order shipped")
    );
    assert_eq!(
        browser.text(&field("status")).await.as_deref(),
        Some("PROCESSED")
    );
    let payload = browser.text("#event-payload").await.unwrap_or_default();
    assert!(
        payload.contains("\n  \"order\": 42"),
        "pretty-printed: {payload}"
    );
    let history = browser.text("#event-history").await.unwrap_or_default();
    assert!(
        history.find("PENDING") < history.find("PROCESSED"),
        "{history}"
    );
    browser.screenshot("event").await;

    // Search: carol's 60 events over two pages of 50.
    let many = (0..60)
        .map(|i| EventInput {
            user_id: "carol".into(),
            description: format!("carol {i}"),
            ..EventInput::default()
        })
        .collect();
    for result in client.create_many(many).await.expect("create many") {
        result.expect("created");
    }
    browser
        .goto(&format!("{}#/search", console_url(&logger)))
        .await;
    browser.type_into("#s-user", "carol").await;
    browser.click("#search-form button[type=submit]").await;
    let rows = "return document.querySelectorAll('#search-rows tr').length === arguments[0];";
    browser
        .wait_for(PAGE, "a first page", rows, json!([50]))
        .await;
    assert!(browser.visible("#search-more").await, "a next page");
    browser.click("#search-more").await;
    browser
        .wait_for(PAGE, "the second page", rows, json!([60]))
        .await;
    assert!(!browser.visible("#search-more").await, "no third page");
    let users = browser
        .execute(
            "return [...new Set([...document.querySelectorAll('#search-rows td.user')].map(c => c.textContent))];",
            json!([]),
        )
        .await;
    assert_eq!(users, json!(["carol"]));
    browser.screenshot("search").await;

    browser.quit().await;
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn a_burst_keeps_the_feed_bounded_and_the_page_responsive() {
    let logger = Logger::start_with_console(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let browser = Browser::start("burst").await;
    browser.goto(&console_url(&logger)).await;
    feed_is(&browser, "live").await;
    let rows = "return document.querySelectorAll('#feed-rows tr').length;";

    // 4,000 events (8,000 changes) as fast as the logger takes them; the
    // page keeps answering, and never holds more than its 500 rows.
    let started = std::time::Instant::now();
    let mut last = None;
    for batch in 0..20 {
        let events = (0..200)
            .map(|i| EventInput {
                user_id: format!("u{}", i % 50),
                description: format!("burst {batch}.{i}"),
                ..EventInput::default()
            })
            .collect();
        let created = client.create_many(events).await.expect("create many");
        last = created.into_iter().next_back().map(|r| r.expect("created"));
        let shown = browser.execute(rows, json!([])).await;
        assert!(shown.as_u64().is_some_and(|n| n <= 500), "{shown} rows");
    }
    let last = last.expect("a last event");
    status_is(&client, last.id, EventStatus::Processed).await;
    eprintln!(
        "burst: 4000 events created and processed in {:?}",
        started.elapsed()
    );
    browser
        .wait_for(
            PAGE,
            "the burst's last change",
            "return document.querySelector(`#feed-rows tr[data-event-id='${arguments[0]}'][data-status='PROCESSED']`) !== null;",
            json!([last.id.to_string()]),
        )
        .await;
    assert_eq!(browser.execute(rows, json!([])).await, 500);
    browser.click("#feed-toggle").await;
    feed_is(&browser, "paused").await;
    browser.screenshot("burst").await;
    browser.quit().await;
    logger.stop_within(PAGE).await;
}

/// A webhook receiver that fails until told to succeed.
async fn receiver() -> (SocketAddr, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let state = healthy.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let healthy = state.clone();
            async move {
                if healthy.load(Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, healthy)
}

async fn sign_in(browser: &Browser, url: &str, key: &str) {
    browser.goto(url).await;
    browser
        .wait_for(
            PAGE,
            "the sign-in form",
            "return !document.getElementById('login').hidden;",
            json!([]),
        )
        .await;
    browser.type_into("#key", key).await;
    browser.click("#login-form button").await;
}

/// Keys decide what the console shows, and an operator redrives a dead letter.
async fn keys_and_redrive(test: &str, storage: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let (hook, healthy) = receiver().await;
    let channels = dir.path().join("channels.toml");
    std::fs::write(
        &channels,
        format!(
            "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ attempts = 1 }}\n\
             [[routes]]\ncategories = [\"shop\"]\nchannels = [\"hooks\"]\n"
        ),
    )
    .expect("write channels");
    let keys = common::console_keys_file(&dir);
    let mut args = vec![
        "--keys-file",
        &keys,
        "--channels",
        channels.to_str().expect("utf-8"),
    ];
    args.extend(storage);
    let logger = Logger::start_with_console(&args, Lines::default().sink()).await;
    let client = logger.client_with_key("admin-key").await;
    let failed = create(
        &client,
        "dana",
        "Payment failed <script>x</script>",
        "order.paid",
    )
    .await;
    status_is(&client, failed.id, EventStatus::Failed).await;
    let url = console_url(&logger);

    // A wrong key is refused with the server's reason.
    let browser = Browser::start(test).await;
    sign_in(&browser, &url, "not-a-key").await;
    browser
        .wait_for(
            PAGE,
            "the refusal",
            "return document.getElementById('login-error').textContent;",
            json!([]),
        )
        .await;
    let refusal = browser.text("#login-error").await.unwrap_or_default();
    assert!(refusal.contains("unknown API key"), "{refusal}");

    // A reader sees events but cannot redrive.
    sign_in(&browser, &url, "reader-key").await;
    feed_is(&browser, "live").await;
    let who = browser.text("#who").await.unwrap_or_default();
    assert!(who.starts_with("reader"), "{who}");
    let stored = browser
        .execute(
            "return [location.href, localStorage.length, sessionStorage.getItem('herald.key')];",
            json!([]),
        )
        .await;
    assert!(
        !stored[0]
            .as_str()
            .unwrap_or_default()
            .contains("reader-key"),
        "no key in the URL"
    );
    assert_eq!(stored[1], 0, "nothing in localStorage");
    assert_eq!(stored[2], "reader-key", "the key is kept for this tab only");
    browser.goto(&format!("{url}#/dead-letters")).await;
    browser
        .wait_for(
            PAGE,
            "the dead letters' note",
            "return document.getElementById('dead-note').textContent;",
            json!([]),
        )
        .await;
    let note = browser.text("#dead-note").await.unwrap_or_default();
    assert!(note.contains("events:process"), "{note}");
    assert_eq!(
        browser
            .execute(
                "return document.querySelectorAll('button.redrive').length;",
                json!([])
            )
            .await,
        0
    );
    assert!(!browser.visible("#redrive-all").await);
    browser.goto(&format!("{url}#/event/{}", failed.id)).await;
    browser
        .wait_for(
            PAGE,
            "the failed attempt",
            "return document.getElementById('event-attempts').textContent.includes('HTTP 500');",
            json!([]),
        )
        .await;
    assert!(
        !browser.visible("#event-redrive").await,
        "no Redrive for a reader"
    );
    assert_eq!(
        browser
            .text("#event-fields dd[data-field='description']")
            .await
            .as_deref(),
        Some("Payment failed <script>x</script>")
    );
    browser.screenshot("reader").await;

    // An operator sees the dead letter with its reason, and redrives it.
    browser.click("#signout").await;
    sign_in(&browser, &url, "operator-key").await;
    feed_is(&browser, "live").await;
    browser.goto(&format!("{url}#/dead-letters")).await;
    let row = format!("#dead-rows tr[data-event-id='{}']", failed.id);
    browser
        .wait_for(
            PAGE,
            "the dead letter",
            &format!("return document.querySelector(\"{row}\") !== null;"),
            json!([]),
        )
        .await;
    let reason = browser
        .text(&format!("{row} td.reason"))
        .await
        .unwrap_or_default();
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert!(browser.visible("#redrive-all").await);
    browser.screenshot("dead-letters").await;
    healthy.store(true, Ordering::SeqCst);
    browser.click(&format!("{row} button.redrive")).await;
    status_is(&client, failed.id, EventStatus::Processed).await;
    browser.goto(&format!("{url}#/event/{}", failed.id)).await;
    browser
        .wait_for(
            PAGE,
            "the redriven history",
            "return document.getElementById('event-history').textContent.includes('PROCESSED');",
            json!([]),
        )
        .await;
    let history = browser.text("#event-history").await.unwrap_or_default();
    let order: Vec<usize> = ["PENDING", "FAILED", "PENDING", "PROCESSED"]
        .iter()
        .scan(0, |from, status| {
            let at = history[*from..].find(status).map(|i| i + *from)?;
            *from = at + 1;
            Some(at)
        })
        .collect();
    assert_eq!(
        order.len(),
        4,
        "created, failed, redriven, delivered: {history}"
    );
    browser.screenshot("redriven").await;
    browser.quit().await;
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn keys_decide_what_the_console_shows_in_memory() {
    keys_and_redrive("keys-memory", &[]).await;
}

#[tokio::test]
async fn keys_decide_what_the_console_shows_on_redis() {
    let redis = RedisServer::start();
    keys_and_redrive("keys-redis", &["--redis-url", &redis.url(), "--worker"]).await;
}

/// The value of the input (or text area) `css`.
async fn value_of(browser: &Browser, css: &str) -> serde_json::Value {
    browser
        .execute(
            "return document.querySelector(arguments[0]).value;",
            json!([css]),
        )
        .await
}

async fn recipient_note(browser: &Browser, id: &str, wanted: &str) -> String {
    browser
        .wait_for(
            PAGE,
            &format!("#{id} to say {wanted}"),
            "const t = document.getElementById(arguments[0]).textContent; \
             return t.includes(arguments[1]) ? t : '';",
            json!([id, wanted]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_console_shows_and_edits_recipients_and_their_opt_outs() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = common::console_keys_file(&dir);
    let logger = Logger::start_with_console(&["--keys-file", &keys], Lines::default().sink()).await;
    let client = logger.client_with_key("admin-key").await;
    let hostile = "<b>Ann</b> \"Bold\"";
    client
        .put_recipient(
            NewRecipient::new("ann")
                .email("ann@example.com")
                .name(hostile)
                .locale("fr")
                .preferences(Preferences {
                    opt_outs: vec![OptOut {
                        channel: "email".into(),
                        category: "marketing".into(),
                        ..OptOut::default()
                    }],
                }),
        )
        .await
        .expect("put ann");
    let url = console_url(&logger);
    let browser = Browser::start("recipients").await;
    sign_in(&browser, &url, "admin-key").await;
    feed_is(&browser, "live").await;

    // Looked up: the record as stored, every value as text.
    browser.click("nav a[data-view='recipients']").await;
    browser.type_into("#r-user", "ann").await;
    browser.click("#r-find button").await;
    browser
        .wait_for(
            PAGE,
            "ann's record",
            "return !document.getElementById('r-form').hidden \
               && document.getElementById('r-title').textContent === 'ann';",
            json!([]),
        )
        .await;
    assert_eq!(value_of(&browser, "#r-email").await, "ann@example.com");
    assert_eq!(value_of(&browser, "#r-name").await, hostile);
    assert_eq!(value_of(&browser, "#r-locale").await, "fr");
    let opt_outs = browser.text("#r-opt-outs").await.unwrap_or_default();
    assert!(opt_outs.starts_with("emailmarketingany"), "{opt_outs}");
    let markup = browser
        .execute(
            "return document.querySelectorAll('main b').length;",
            json!([]),
        )
        .await;
    assert_eq!(markup, 0, "no element made from a name");

    // A bad address is refused by the server, named and marked, and
    // nothing changes.
    browser.type_into("#r-email", "ann at example").await;
    browser.click("#r-save").await;
    let error = recipient_note(&browser, "r-error", "email").await;
    assert!(error.contains("email address"), "{error}");
    let marked = browser
        .execute(
            "return document.getElementById('r-email').getAttribute('aria-invalid');",
            json!([]),
        )
        .await;
    assert_eq!(marked, "true");
    let kept = client.recipient("ann").await.expect("get").expect("ann");
    assert_eq!(kept.contact.email, "ann@example.com");

    // Edited: another address, attributes, one opt-out removed and
    // another added, saved in one go.
    browser.type_into("#r-email", "ann@example.org").await;
    browser
        .type_into("#r-attributes", r#"{"plan": "pro"}"#)
        .await;
    browser.click("#r-opt-outs button.remove").await;
    browser.type_into("#r-oo-category", "digest").await;
    browser.click("#r-oo-add").await;
    assert_eq!(
        browser.text("#r-dirty").await.as_deref(),
        Some("unsaved changes")
    );
    browser.screenshot("recipient-edit").await;
    browser.click("#r-save").await;
    recipient_note(&browser, "r-note", "Saved ann.").await;
    let saved = client.recipient("ann").await.expect("get").expect("ann");
    assert_eq!(saved.contact.email, "ann@example.org");
    assert_eq!(saved.contact.name, hostile, "the name as it was");
    assert_eq!(
        saved.contact.attributes,
        serde_json::from_value(json!({"plan": "pro"})).ok()
    );
    assert_eq!(
        saved.preferences.opt_outs,
        vec![OptOut {
            category: "digest".into(),
            ..OptOut::default()
        }]
    );

    // A user with no record yet: filled in and saved, then erased (the
    // button asks twice).
    browser.goto(&format!("{url}#/recipients/bob")).await;
    let note = recipient_note(&browser, "r-note", "No record for bob yet").await;
    assert!(note.contains("save to create"), "{note}");
    browser.type_into("#r-email", "bob@example.com").await;
    browser.type_into("#r-time_zone", "Europe/Paris").await;
    browser.click("#r-save").await;
    recipient_note(&browser, "r-note", "Saved bob.").await;
    let bob = client.recipient("bob").await.expect("get").expect("bob");
    assert_eq!(
        (bob.contact.email.as_str(), bob.contact.time_zone.as_str()),
        ("bob@example.com", "Europe/Paris")
    );
    browser.click("#r-delete").await;
    assert_eq!(
        browser.text("#r-delete").await.as_deref(),
        Some("Really erase bob?")
    );
    assert!(
        client.recipient("bob").await.expect("get").is_some(),
        "one click erases nothing"
    );
    browser.click("#r-delete").await;
    recipient_note(&browser, "r-note", "Erased bob").await;
    assert_eq!(client.recipient("bob").await.expect("get"), None);

    // A key that may only read sees the record and cannot change it; one
    // without recipients:read is told which scope it lacks.
    browser.click("#signout").await;
    sign_in(&browser, &url, "support-key").await;
    browser
        .wait_for(
            PAGE,
            "support to be signed in",
            "return document.getElementById('who').textContent.startsWith('support');",
            json!([]),
        )
        .await;
    browser.goto(&format!("{url}#/recipients/ann")).await;
    browser
        .wait_for(
            PAGE,
            "ann's record, read only",
            "return !document.getElementById('r-form').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(value_of(&browser, "#r-email").await, "ann@example.org");
    let read_only = browser
        .execute(
            "return [document.getElementById('r-email').disabled, \
                     document.querySelectorAll('#r-opt-outs button').length];",
            json!([]),
        )
        .await;
    assert_eq!(read_only, json!([true, 0]));
    assert!(!browser.visible("#r-save").await, "no Save for a reader");
    assert!(!browser.visible("#r-delete").await, "no Erase for a reader");
    browser.screenshot("recipient-read-only").await;
    browser.click("#signout").await;
    sign_in(&browser, &url, "reader-key").await;
    feed_is(&browser, "live").await;
    browser.goto(&format!("{url}#/recipients/ann")).await;
    recipient_note(&browser, "r-error", "recipients:read").await;
    assert!(!browser.visible("#r-form").await);
    browser.quit().await;
    logger.stop_within(PAGE).await;
}

#[tokio::test]
async fn the_console_shows_scheduled_events_and_cancels_them() {
    let logger = Logger::start_with_console(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let browser = Browser::start("scheduled").await;
    browser.goto(&console_url(&logger)).await;
    feed_is(&browser, "live").await;
    let reminder = client
        .create(EventInput {
            user_id: "ann".into(),
            description: "Your trial ends tomorrow".into(),
            deliver_after: Some(Duration::from_secs(3600)),
            ..EventInput::default()
        })
        .await
        .expect("create");
    browser
        .wait_for(
            LIVE,
            "the scheduled row",
            "return document.querySelector(`#feed-rows tr[data-event-id='${arguments[0]}'][data-status='SCHEDULED']`) !== null;",
            json!([reminder.id.to_string()]),
        )
        .await;
    browser
        .wait_for(
            PAGE,
            "the scheduled count",
            "return document.getElementById('count-scheduled').textContent === '1';",
            json!([]),
        )
        .await;

    // Its page says when it is due, and cancels it.
    browser
        .goto(&format!("{}#/event/{}", console_url(&logger), reminder.id))
        .await;
    browser
        .wait_for(
            PAGE,
            "the Cancel button",
            "return !document.getElementById('event-cancel').hidden;",
            json!([]),
        )
        .await;
    let due = browser
        .text("#event-fields dd[data-field='deliver_at']")
        .await
        .unwrap_or_default();
    assert_eq!(
        due,
        herald::domain::rfc3339(reminder.deliver_at.expect("due")),
        "deliver_at shown"
    );
    browser.screenshot("scheduled").await;
    browser.click("#event-cancel").await;
    browser
        .wait_for(
            PAGE,
            "the cancelled status",
            "return document.querySelector(\"#event-fields dd[data-field='status']\")?.textContent === 'CANCELLED';",
            json!([]),
        )
        .await;
    assert!(
        !browser.visible("#event-cancel").await,
        "nothing left to cancel"
    );
    status_is(&client, reminder.id, EventStatus::Cancelled).await;
    let history = browser.text("#event-history").await.unwrap_or_default();
    assert!(
        history.find("SCHEDULED") < history.find("CANCELLED"),
        "{history}"
    );

    // An event already delivered has no Cancel button.
    let now = create(&client, "ann", "Welcome", "user.welcome").await;
    status_is(&client, now.id, EventStatus::Processed).await;
    browser
        .goto(&format!("{}#/event/{}", console_url(&logger), now.id))
        .await;
    browser
        .wait_for(
            PAGE,
            "the delivered event",
            "return document.querySelector(\"#event-fields dd[data-field='status']\")?.textContent === 'PROCESSED';",
            json!([]),
        )
        .await;
    assert!(!browser.visible("#event-cancel").await);
    browser.quit().await;
    logger.stop_within(PAGE).await;
}
