//! The email channel end to end: a logger with its embedded worker sends
//! through a real SMTP server (aiosmtpd, `scripts/smtp_sink.py`) started
//! here on a free port, which writes what it accepts to a file and answers
//! some addresses with 4xx or 5xx. Recipients and templates come from the
//! API and a folder, as in production.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Lines, Logger, eventually};
use herald::{Event, EventStatus, domain::EventInput};
use herald_client::{Client, NewRecipient, OptOut};
use serde_json::{Value, json};

use crate::common;

/// The SMTP server of a test: killed when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// A server on a free port, with `flags` (STARTTLS, AUTH), ready.
    fn start(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("mail.jsonl");
        let port = herald_storage::testing::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs scripts/smtp_sink.py (pip install aiosmtpd)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("read");
        assert_eq!(
            ready.trim(),
            "ready",
            "the SMTP sink did not start (is aiosmtpd installed?)"
        );
        Self {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    /// Every message accepted so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }

    /// The one message to `address`, once it arrived.
    async fn message_to(&self, address: &str) -> Value {
        eventually(Duration::from_secs(20), address, || async {
            let mut to: Vec<Value> = self
                .received()
                .into_iter()
                .filter(|m| m["rcpt_tos"] == json!([address]))
                .collect();
            assert!(to.len() <= 1, "{address} got {}", to.len());
            to.pop()
        })
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of templates for `account.welcome`, with a French variant.
fn templates(dir: &Path) -> PathBuf {
    let folder = dir.join("templates");
    std::fs::create_dir(&folder).expect("dir");
    for (name, text) in [
        ("account.welcome.subject", "Welcome, {{ recipient.name }}"),
        (
            "account.welcome.txt",
            "Hello {{ recipient.name }}, your plan is {{ payload.plan }}.",
        ),
        ("account.welcome.html", "<p>Plan: {{ payload.plan }}</p>"),
        (
            "account.welcome.fr.subject",
            "Bienvenue, {{ recipient.name }}",
        ),
        ("account.welcome.fr.txt", "Votre offre : {{ payload.plan }}"),
    ] {
        std::fs::write(folder.join(name), text).expect("template");
    }
    folder
}

/// A logger whose embedded worker sends every event through the email
/// channel of `settings` (to which the templates are added).
async fn logger_with_email(settings: &str) -> (Logger, Client, tempfile::TempDir) {
    logger_serving(settings, None, &[]).await
}

/// [`logger_with_email`], serving end users' endpoints on `web` if given,
/// with `flags`.
async fn logger_serving(
    settings: &str,
    web: Option<tokio::net::TcpListener>,
    flags: &[&str],
) -> (Logger, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let folder = templates(dir.path());
    let file = format!(
        "[channels.email]\nkind = \"email\"\nfrom = \"Herald <noreply@example.com>\"\n\
         templates = \"{}\"\nretry = {{ attempts = 3, backoff = \"100ms\" }}\n{settings}\n\
         [[routes]]\nchannels = [\"email\"]\n",
        folder.display()
    );
    let path = dir.path().join("channels.toml");
    std::fs::write(&path, file).expect("write");
    let path = path.to_str().expect("utf-8").to_owned();
    let mut args = vec!["--channels", path.as_str()];
    args.extend_from_slice(flags);
    let logger = match web {
        Some(web) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            Logger::start_with_web_on(listener, web, &args, Lines::default().sink()).await
        }
        None => Logger::start(&args, Lines::default().sink()).await,
    };
    let client = logger.client().await;
    (logger, client, dir)
}

async fn welcome(client: &Client, user: &str) -> Event {
    client
        .create(EventInput {
            user_id: user.into(),
            description: format!("{user} signed up"),
            event_type: "account.welcome".into(),
            payload: json!({"plan": "<pro>"}).as_object().cloned(),
            ..EventInput::default()
        })
        .await
        .expect("create")
}

async fn settled(client: &Client, event: &Event, status: EventStatus) {
    eventually(Duration::from_secs(30), "settled", || async {
        (client.get_event(event.id).await.ok()?.status == status).then_some(())
    })
    .await;
}

/// The raw text of a received message.
fn data(message: &Value) -> &str {
    message["data"].as_str().expect("data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_emails_are_rendered_per_locale_and_failures_follow_the_channel_rules() {
    let sink = SmtpSink::start(&[]);
    let (logger, client, _dir) = logger_with_email(&format!(
        "server = \"127.0.0.1:{}\"\ntls = \"none\"",
        sink.port
    ))
    .await;
    for (user, email, locale) in [
        ("ann", "ann@example.com", "en-GB"),
        ("marie", "marie@example.com", "fr"),
        ("tess", "tempfail@example.com", ""),
        ("rob", "reject@example.com", ""),
        ("nomail", "", ""),
        ("otto", "otto@example.com", ""),
    ] {
        let name = format!("{}{} Lee", &user[..1].to_uppercase(), &user[1..]);
        client
            .put_recipient(
                NewRecipient::new(user)
                    .email(email)
                    .name(name)
                    .locale(locale),
            )
            .await
            .expect("recipient");
    }
    client
        .set_preferences(
            "otto",
            vec![OptOut {
                channel: "email".into(),
                ..OptOut::default()
            }],
        )
        .await
        .expect("opt out");
    let users = ["ann", "marie", "tess", "rob", "nomail", "otto"];
    let mut events = Vec::new();
    for user in users {
        events.push(welcome(&client, user).await);
    }
    for (event, user) in events.iter().zip(users) {
        let status = if user == "rob" {
            EventStatus::Failed
        } else {
            EventStatus::Processed
        };
        settled(&client, event, status).await;
    }

    // Rendered from the type's templates, in the recipient's language;
    // the HTML part escapes the payload's value, the text part does not.
    let ann = sink.message_to("ann@example.com").await;
    let text = data(&ann);
    assert!(text.contains("Subject: Welcome, Ann Lee"), "{text}");
    assert!(text.contains("To: \"Ann Lee\" <ann@example.com>"), "{text}");
    assert!(
        text.contains("Hello Ann Lee, your plan is <pro>."),
        "{text}"
    );
    assert!(text.contains("<p>Plan: &lt;pro&gt;</p>"), "{text}");
    let message_id = format!("Message-ID: <{}.email@example.com>", events[0].id.simple());
    assert!(text.contains(&message_id), "{text}");
    let marie = sink.message_to("marie@example.com").await;
    assert!(
        data(&marie).contains("Subject: Bienvenue, Marie Lee"),
        "{marie}"
    );
    assert!(data(&marie).contains("Votre offre : <pro>"), "{marie}");

    // 451 once, then accepted: retried; 550: failed at once with the answer.
    sink.message_to("tempfail@example.com").await;
    let tess = client
        .delivery_attempts(events[2].id)
        .await
        .expect("attempts");
    assert_eq!(tess.len(), 2, "{tess:?}");
    assert!(
        !tess[0].succeeded && tess[0].error.contains("451"),
        "{tess:?}"
    );
    assert!(
        tess[1].succeeded && tess[1].kind.as_str() == "email",
        "{tess:?}"
    );
    let rob = client
        .delivery_attempts(events[3].id)
        .await
        .expect("attempts");
    assert_eq!(rob.len(), 1, "a 5xx is not retried: {rob:?}");
    assert!(rob[0].error.contains("550"), "{rob:?}");
    // No address, or opted out: skipped with the reason, and PROCESSED.
    for (event, why) in [
        (&events[4], "no email address for user nomail"),
        (&events[5], "opted out: channel email"),
    ] {
        let attempts = client.delivery_attempts(event.id).await.expect("attempts");
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert!(
            attempts[0].skipped && attempts[0].error == why,
            "{attempts:?}"
        );
    }
    let to: Vec<Value> = sink
        .received()
        .iter()
        .map(|m| m["rcpt_tos"].clone())
        .collect();
    assert_eq!(to.len(), 3, "ann, marie and tess only: {to:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_authentication_are_used_when_set() {
    let dir = tempfile::tempdir().expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let sink = SmtpSink::start(&[
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--require-starttls",
        "--user",
        "herald",
        "--password",
        "s3cret",
    ]);
    let settings = format!(
        "server = \"127.0.0.1:{}\"\ntls = \"starttls\"\ntls_ca = \"{cert}\"\n\
         username = \"herald\"\npassword = \"s3cret\"",
        sink.port
    );
    let (logger, client, _dir) = logger_with_email(&settings).await;
    client
        .put_recipient(
            NewRecipient::new("ann")
                .email("ann@example.com")
                .name("Ann"),
        )
        .await
        .expect("recipient");
    let event = welcome(&client, "ann").await;
    settled(&client, &event, EventStatus::Processed).await;
    let message = sink.message_to("ann@example.com").await;
    assert_eq!(message["tls"], true, "{message}");
    assert_eq!(message["auth"], "herald", "{message}");
    let attempts = client.delivery_attempts(event.id).await.expect("attempts");
    assert_eq!(
        attempts[0].target,
        format!("smtp://127.0.0.1:{}", sink.port)
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

/// The secret of the links, given to the logger and the channel.
const LINK_SECRET: &str = "links-secret-of-this-test";

/// `text` with quoted-printable escapes (RFC 2045) decoded: soft line
/// breaks removed, `=XX` as the byte it stands for.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole answer, bytes and all, to `GET path` (an image).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    answer
}

/// The value of `name`'s header in a raw message.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} header in {message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsubscribe_link_opts_out_and_the_pixel_marks_the_event_opened() {
    let sink = SmtpSink::start(&[]);
    let web = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let web_addr = web.local_addr().expect("addr");
    let base = format!("http://{web_addr}");
    let settings = format!(
        "server = \"127.0.0.1:{}\"\ntls = \"none\"\n\
         links = {{ base_url = \"{base}\", secret = \"{LINK_SECRET}\", open_tracking = true }}",
        sink.port
    );
    let (logger, client, _dir) =
        logger_serving(&settings, Some(web), &["--link-secret", LINK_SECRET]).await;
    client
        .put_recipient(
            NewRecipient::new("ann")
                .email("ann@example.com")
                .name("Ann"),
        )
        .await
        .expect("recipient");
    let news = |n: u32| EventInput {
        user_id: "ann".into(),
        description: format!("news {n}"),
        category: "news".into(),
        event_type: "account.welcome".into(),
        ..EventInput::default()
    };
    let first = client.create(news(1)).await.expect("create");
    settled(&client, &first, EventStatus::Processed).await;
    let message = sink.message_to("ann@example.com").await;
    let text = data(&message);
    assert_eq!(
        header(text, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = header(text, "List-Unsubscribe")
        .strip_prefix(&format!("<{base}"))
        .and_then(|rest| rest.strip_suffix('>'))
        .expect("a link to the end users' listener")
        .to_owned();
    let html = quoted_printable(text);
    let pixel = html
        .split("<img src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|url| url.strip_prefix(&base))
        .unwrap_or_else(|| panic!("the open pixel in {html}"))
        .to_owned();

    // The pixel: a GIF, and the event OPENED.
    let gif = raw_get(web_addr, &pixel).await;
    let head = String::from_utf8_lossy(&gif[..gif.len().min(200)]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: image/gif"), "{head}");
    assert!(gif.windows(6).any(|w| w == b"GIF89a"), "{head}");
    settled(&client, &first, EventStatus::Opened).await;

    // A GET asks (scanners fetch links); the POST opts out, once.
    let (status, _, page) = common::http_call(web_addr, "GET", &unsubscribe, &[], "").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Stop receiving email messages about news?"),
        "{page}"
    );
    assert!(
        client
            .preferences("ann")
            .await
            .expect("read")
            .opt_outs
            .is_empty()
    );
    let one_click = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = "List-Unsubscribe=One-Click";
    for _ in 0..2 {
        let (status, _, page) =
            common::http_call(web_addr, "POST", &unsubscribe, &one_click, body).await;
        assert_eq!(status, 200, "{page}");
    }
    let opted = client.preferences("ann").await.expect("read").opt_outs;
    assert_eq!(
        opted,
        [OptOut {
            channel: "email".into(),
            category: "news".into(),
            ..OptOut::default()
        }]
    );
    let second = client.create(news(2)).await.expect("create");
    settled(&client, &second, EventStatus::Processed).await;
    let attempts = client.delivery_attempts(second.id).await.expect("attempts");
    assert!(attempts[0].skipped, "{attempts:?}");
    assert_eq!(sink.received().len(), 1, "no second message");

    // An altered token does nothing.
    let mut forged = unsubscribe.clone();
    let last = forged.pop().expect("a digit");
    forged.push(if last == '0' { '1' } else { '0' });
    let (status, _, _) = common::http_call(web_addr, "POST", &forged, &one_click, body).await;
    assert_eq!(status, 400);
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_field_can_name_the_address() {
    let sink = SmtpSink::start(&[]);
    let settings = format!(
        "server = \"127.0.0.1:{}\"\ntls = \"none\"\naddress_field = \"email\"",
        sink.port
    );
    let (logger, client, _dir) = logger_with_email(&settings).await;
    // No recipient record: the payload's address, and no name.
    let event = client
        .create(EventInput {
            user_id: "u-1".into(),
            description: "u-1 signed up".into(),
            event_type: "account.welcome".into(),
            payload: json!({"email": "new@example.com", "plan": "free"})
                .as_object()
                .cloned(),
            ..EventInput::default()
        })
        .await
        .expect("create");
    settled(&client, &event, EventStatus::Processed).await;
    let message = sink.message_to("new@example.com").await;
    assert!(data(&message).contains("your plan is free."), "{message}");
    logger.stop_within(Duration::from_secs(10)).await;
}
