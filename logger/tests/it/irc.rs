//! The IRC channel against a real IRC server: Debian's `ngircd`, started
//! here on a free port. A second client (the reader) joins the channel and
//! collects what Herald writes; the server is restarted mid-run and nothing
//! is lost.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Lines, Logger, eventually};
use herald::{Event, EventStatus};
use herald_client::Client;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::common;

const NGIRCD: &str = "/usr/sbin/ngircd";

/// An ngircd of this test, on `port` (and with TLS on `tls_port`),
/// killed on drop.
struct Ngircd {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl Ngircd {
    fn start() -> Self {
        Self::start_with(false)
    }

    /// With `tls`, it also serves TLS, with a certificate for `localhost`
    /// (`cert.pem` in its directory, self-signed).
    fn start_with(tls: bool) -> Self {
        assert!(
            std::path::Path::new(NGIRCD).exists(),
            "IRC tests need ngircd: apt-get install ngircd"
        );
        let mut server = Self {
            dir: tempfile::tempdir().expect("dir"),
            port: herald_storage::testing::free_port(),
            tls_port: tls.then(herald_storage::testing::free_port),
            child: None,
        };
        if tls {
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
            std::fs::write(server.cert(), certified.cert.pem()).expect("cert");
            std::fs::write(
                server.dir.path().join("key.pem"),
                certified.signing_key.serialize_pem(),
            )
            .expect("key");
        }
        server.run();
        server
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("ngircd.conf");
        let mut config = format!(
            "[Global]\nName = irc.herald.test\nInfo = Herald test\nListen = 127.0.0.1\n\
             Ports = {}\nMotdPhrase = test\n[Options]\nPAM = no\nIdent = no\nDNS = no\n",
            self.port
        );
        if let Some(port) = self.tls_port {
            let dir = self.dir.path().display();
            config.push_str(&format!(
                "[SSL]\nCertFile = {dir}/cert.pem\nKeyFile = {dir}/key.pem\nPorts = {port}\n"
            ));
        }
        std::fs::write(&path, config).expect("config");
        path
    }

    /// Starts the server and waits until it takes connections.
    fn run(&mut self) {
        let child = Command::new(NGIRCD)
            .args(["--nodaemon", "--config"])
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ngircd");
        self.child = Some(child);
        // With TLS it makes Diffie-Hellman parameters first, which takes a while.
        let port = self.tls_port.unwrap_or(self.port);
        for _ in 0..1_500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ngircd did not listen on port {port}");
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server: stopped, it holds
    /// its connections open and answers nothing.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A relay in front of the server whose gate the test holds: while it is
/// closed, new connections wait before reaching the server (so the reader
/// is back in the channel before Herald is). A connection ends when the
/// server's side does.
async fn relay(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (gate, open) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let mut open = open.clone();
            tokio::spawn(async move {
                if open.wait_for(|open| *open).await.is_err() {
                    return;
                }
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (addr, gate)
}

/// A second IRC client in `#ops`: every message it reads there, and the
/// nick of every client it sees join.
#[derive(Clone, Default)]
struct Reader {
    messages: Arc<Mutex<Vec<String>>>,
    joins: Arc<Mutex<Vec<String>>>,
}

impl Reader {
    /// Connects as `reader`, joins `#ops`, and collects messages until the
    /// connection ends; returns once it is in the channel.
    async fn join(&self, server: SocketAddr) {
        let stream = TcpStream::connect(server).await.expect("reader connects");
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"NICK reader\r\nUSER reader 0 * :reader\r\nJOIN #ops\r\n")
            .await
            .expect("register");
        let mut lines = BufReader::new(read).lines();
        loop {
            let line = lines.next_line().await.expect("read").expect("a line");
            if line.contains(" 366 ") {
                break;
            }
        }
        let (messages, joins) = (self.messages.clone(), self.joins.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = write
                        .write_all(format!("PONG {token}\r\n").as_bytes())
                        .await;
                } else if let Some((_, text)) = line.split_once(" PRIVMSG #ops :") {
                    messages.lock().expect("lock").push(text.to_owned());
                } else if let Some((prefix, _)) = line.split_once(" JOIN ") {
                    let nick = prefix
                        .trim_start_matches(':')
                        .split('!')
                        .next()
                        .unwrap_or_default();
                    joins.lock().expect("lock").push(nick.to_owned());
                }
            }
        });
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("lock").clone()
    }

    fn joins(&self) -> usize {
        self.joins.lock().expect("lock").len()
    }

    /// Waits until a message names each of `events`.
    async fn heard(&self, events: &[Event]) {
        for e in events {
            let id = e.id.to_string();
            eventually(
                Duration::from_secs(30),
                &format!("a message of {id}"),
                || async {
                    self.messages()
                        .iter()
                        .any(|m| m.contains(&id))
                        .then_some(())
                },
            )
            .await;
        }
    }
}

/// A logger whose embedded worker sends every event to IRC channel `#ops`
/// as nick `herald`, with the channel settings `settings` besides, and the
/// logger `flags`.
async fn logger_with(settings: &str, flags: &[&str]) -> (Logger, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("channels.toml");
    std::fs::write(
        &path,
        format!(
            "[channels.ops]\nkind = \"irc\"\nnick = \"herald\"\nchannels = [\"#ops\"]\n{settings}\n\
             [[routes]]\nchannels = [\"ops\"]\n"
        ),
    )
    .expect("write");
    let logger = Logger::start(
        &[&["--channels", path.to_str().expect("utf-8")], flags].concat(),
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    (logger, client, dir)
}

async fn processed(client: &Client, events: &[Event]) {
    for e in events {
        eventually(Duration::from_secs(30), "PROCESSED", || async {
            let got = client.get_event(e.id).await.ok()?;
            (got.status == EventStatus::Processed).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_messages_reach_the_channel_and_survive_a_server_restart() {
    let mut server = Ngircd::start();
    let (through_relay, gate) = relay(server.addr()).await;
    let reader = Reader::default();
    reader.join(server.addr()).await;

    let (logger, client, _dir) = logger_with(
        &format!(
            "server = \"{through_relay}\"\n\
         template = \"[{{category}}] {{event_id}} {{user_id}}:\\n{{description}}\"\n\
         rate = 10.0\nburst = 5\n"
        ),
        &[],
    )
    .await;

    let mut before = Vec::new();
    for i in 0..5 {
        before.push(
            client
                .create_event(&format!("u{i}"), &format!("before {i}"))
                .await
                .expect("create"),
        );
    }
    // A long message arrives cut, as one line (the template's line break
    // became a space).
    let long = client
        .create_event(
            "long",
            &format!("first PRIVMSG #ops :injected {}", "x".repeat(600)),
        )
        .await
        .expect("create");
    before.push(long.clone());
    reader.heard(&before).await;
    processed(&client, &before).await;
    let messages = reader.messages();
    assert!(
        messages.contains(&format!("[] {} u0: before 0", before[0].id)),
        "{messages:?}"
    );
    let cut = messages
        .iter()
        .find(|m| m.contains(&long.id.to_string()))
        .expect("the long one");
    assert!(
        cut.contains("long: first PRIVMSG #ops :injected xxx") && cut.ends_with('…'),
        "{cut}"
    );
    assert!(cut.len() < 512 - 100, "{} bytes", cut.len());
    assert!(
        !messages.iter().any(|m| m.starts_with("injected")),
        "no line was injected"
    );

    // The server restarts; events created meanwhile wait, then go.
    gate.send(false).expect("gate");
    server.kill();
    let mut during = Vec::new();
    for i in 0..5 {
        during.push(
            client
                .create_event(&format!("v{i}"), &format!("during {i}"))
                .await
                .expect("create"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.run();
    let reader = Reader::default();
    reader.join(server.addr()).await;
    gate.send(true).expect("gate");
    reader.heard(&during).await;
    processed(&client, &during).await;
    let attempts = client
        .delivery_attempts(during[0].id)
        .await
        .expect("attempts");
    let last = attempts.last().expect("an attempt");
    assert!(
        last.succeeded && last.kind.as_str() == "irc",
        "{attempts:?}"
    );
    assert_eq!(last.target, format!("irc://{through_relay}/#ops"));
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_over_tls_trusts_the_given_ca_and_keeps_to_the_rate() {
    let server = Ngircd::start_with(true);
    let reader = Reader::default();
    reader.join(server.addr()).await;
    let tls_port = server.tls_port.expect("a TLS port");
    let (logger, client, _dir) = logger_with(
        &format!(
            "server = \"localhost:{tls_port}\"\ntls = true\ntls_ca = \"{}\"\n\
         template = \"{{event_id}}\"\nrate = 10.0\nburst = 3\n",
            server.cert().display()
        ),
        &[],
    )
    .await;
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(
            client
                .create_event(&format!("u{i}"), "burst")
                .await
                .expect("create"),
        );
    }
    reader.heard(&events).await;
    processed(&client, &events).await;
    // Each message once (the connection was never dropped for flooding),
    // no faster than the rate: 30 messages and their PINGs past a burst of
    // 3 take over two seconds.
    let messages = reader.messages();
    assert_eq!(messages.len(), events.len(), "{messages:?}");
    let attempts = client
        .delivery_attempts(events[29].id)
        .await
        .expect("attempts");
    assert_eq!(
        attempts[0].target,
        format!("ircs://localhost:{tls_port}/#ops")
    );
    let first = client
        .delivery_attempts(events[0].id)
        .await
        .expect("attempts")[0]
        .attempted_at;
    let last = attempts[0].attempted_at + attempts[0].latency;
    assert!(
        last.duration_since(first).expect("later") >= Duration::from_secs(2),
        "{:?}",
        last.duration_since(first)
    );
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_left_for_a_new_connection() {
    let server = Ngircd::start();
    let reader = Reader::default();
    reader.join(server.addr()).await;
    let (logger, client, _dir) = logger_with(
        &format!("server = \"{}\"\ntimeout = \"1s\"\n", server.addr()),
        // A message that could not go comes back soon.
        &["--claim-idle", "3s"],
    )
    .await;
    let first = client.create_event("ann", "first").await.expect("create");
    reader.heard(std::slice::from_ref(&first)).await;
    processed(&client, std::slice::from_ref(&first)).await;
    let joined = reader.joins();
    assert!(joined >= 1, "herald joined");

    // The server stops answering with the connection open: no PONG comes,
    // so Herald drops it and connects again. The server stays stopped until
    // the message has gone unconfirmed (a failed attempt) and the PING's
    // timeout has passed for the connection too, however late the processor
    // takes the event; a server woken earlier would confirm it on the old
    // connection.
    server.signal("-STOP");
    let stalled = client.create_event("bob", "stalled").await.expect("create");
    eventually(Duration::from_secs(30), "a failed attempt", || async {
        let attempts = client.delivery_attempts(stalled.id).await.ok()?;
        attempts.iter().any(|a| !a.succeeded).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.signal("-CONT");
    reader.heard(std::slice::from_ref(&stalled)).await;
    processed(&client, std::slice::from_ref(&stalled)).await;
    eventually(Duration::from_secs(30), "herald joined again", || async {
        (reader.joins() > joined).then_some(())
    })
    .await;
    logger.stop_within(Duration::from_secs(10)).await;
}
