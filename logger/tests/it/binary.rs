//! The real `herald-logger` binary, as a newcomer starts it: no flags but a
//! port, the memory backend and the embedded worker.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::assert_ends_unavailable;
use herald::EventStatus;
use herald_client::Client;
use herald_storage::testing::free_port;

use crate::common;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port, its metrics on another; returns it,
/// its URL, and its stdout lines.
async fn start_logger() -> (Running, String, mpsc::Receiver<String>) {
    start_logger_with(&[]).await
}

/// [`start_logger`] with more flags.
async fn start_logger_with(args: &[&str]) -> (Running, String, mpsc::Receiver<String>) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(if args.contains(&"--metrics-listen") {
            &[][..]
        } else {
            &["--metrics-listen", "off"][..]
        })
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run herald-logger");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let running = Running(child);
    for _ in 0..100 {
        if Client::connect(url.clone()).await.is_ok() {
            return (running, url, rx);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("herald-logger did not start listening on port {port}");
}

#[tokio::test]
async fn one_command_runs_the_whole_system() {
    let (_logger, url, stdout) = start_logger().await;
    let client = Client::connect(url).await.expect("connect");
    let event = client
        .create_event("alice", "Welcome to Herald")
        .await
        .expect("create");

    let expected = format!(
        "Event {} has been sent to alice: Welcome to Herald",
        event.id
    );
    let line = stdout
        .recv_timeout(Duration::from_secs(10))
        .expect("a notification line on stdout");
    assert_eq!(line, expected);
    common::eventually(Duration::from_secs(5), "PROCESSED", || async {
        let event = client.get_event(event.id).await.expect("get");
        (event.status == EventStatus::Processed).then_some(())
    })
    .await;
}

/// The threads of process `pid` that run its async tasks.
fn worker_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == "tokio-rt-worker")
        })
        .count()
}

#[tokio::test]
async fn worker_threads_are_half_the_cores_or_as_many_as_asked() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One thread is the main thread (the current-thread scheduler): no
    // worker threads at all.
    let workers = |threads: usize| if threads == 1 { 0 } else { threads };
    for (args, threads) in [
        (&[][..], (cores / 2).max(1)),
        (&["--worker-threads", "1"][..], 1),
        (&["--worker-threads", "3"][..], 3),
    ] {
        let (logger, url, _) = start_logger_with(args).await;
        assert_eq!(
            worker_threads_of(logger.0.id()),
            workers(threads),
            "{args:?}"
        );
        let client = Client::connect(url).await.expect("connect");
        client
            .create_event("alice", "on as many threads as asked")
            .await
            .expect("create");
    }

    for bad in ["0", "1025", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
            .env("HERALD_CONSOLE_LISTEN", "off")
            .args(["--worker-threads", bad])
            .output()
            .expect("run herald-logger");
        assert!(!out.status.success(), "--worker-threads {bad}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("--worker-threads"), "{text}");
    }
}

#[tokio::test]
async fn the_binary_serves_metrics_where_asked() {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_logger, url, _stdout) =
        start_logger_with(&["--metrics-listen", &metrics.to_string()]).await;
    let client = Client::connect(url).await.expect("connect");
    client.create_event("al", "counted").await.expect("create");
    let scrape = common::Scrape::of(metrics).await;
    assert_eq!(
        scrape.get(
            "herald_events_created_total",
            &[("category", ""), ("type", "")]
        ),
        1.0
    );

    // A taken port stops start-up, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &metrics.to_string()])
        .output()
        .expect("run herald-logger");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--metrics-listen"), "{text}");
}

#[tokio::test]
async fn the_binary_serves_its_console_where_asked() {
    let console = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_logger, _url, _stdout) =
        start_logger_with(&["--console-listen", &console.to_string()]).await;
    let (status, page) = common::http_get(console, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Herald console</title>"), "{page}");

    // A taken port stops start-up, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--metrics-listen",
            "off",
            "--console-listen",
            &console.to_string(),
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run herald-logger");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--console-listen"), "{text}");
    // The user's own mistake: one line, no backtrace, RUST_BACKTRACE or not.
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" WARN ")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("error: cannot listen on"), "{text}");
}

#[tokio::test]
async fn sigterm_stops_it_promptly_with_subscribers_connected() {
    let (mut logger, url, _stdout) = start_logger().await;
    let client = Client::connect(url)
        .await
        .expect("connect")
        .with_resubscribe(common::NO_RETRIES);
    let mut streams = Vec::new();
    for i in 0..20 {
        streams.push(
            client
                .subscribe(&format!("user-{i}"))
                .await
                .expect("subscribe"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = Command::new("kill")
        .args(["-TERM", &logger.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    for stream in &mut streams {
        assert_ends_unavailable(stream).await;
    }
    for _ in 0..100 {
        if let Some(exit) = logger.0.try_wait().expect("wait") {
            assert!(exit.success(), "clean exit, got {exit}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("herald-logger still running 5 s after SIGTERM");
}

#[test]
fn json_logs_are_one_object_per_line() {
    // The start-up lines (open-mode and memory-backend warnings, listening)
    // are enough to look at.
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--metrics-listen",
            "off",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald-logger");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut lines = stderr.lines().map_while(Result::ok);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string() && value["fields"]["message"].is_string());
        let listening = value["fields"]["message"] == "listening";
        seen.push(value);
        if listening {
            break;
        }
    }
    assert!(
        seen.iter().any(|v| v["level"] == "WARN"),
        "the open-mode warning, as JSON: {seen:?}"
    );
    let _ = child.kill();
    let _ = child.wait();

    // A bad value names the flag and the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--log-format", "xml"])
        .output()
        .expect("run herald-logger");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--log-format") && text.contains("json"),
        "{text}"
    );
}

#[tokio::test]
async fn flags_beat_env_beats_the_config_file() {
    let (file_port, env_port, metrics_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\nmetrics-listen = \"127.0.0.1:{metrics_port}\"\n"
        ),
    )
    .expect("write");
    let child = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--config", path.to_str().expect("utf-8")])
        .env("HERALD_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run herald-logger");
    let _running = Running(child);
    let url = format!("http://127.0.0.1:{env_port}");
    let client = common::eventually(Duration::from_secs(10), "the env's port", || async {
        Client::connect(url.clone()).await.ok()
    })
    .await;
    client.health("").await.expect("serving on the env's port");
    // The file's metrics address applies, as no flag or variable sets one.
    let scrape = common::Scrape::of(([127, 0, 0, 1], metrics_port).into()).await;
    assert!(scrape.get("herald_uptime_seconds", &[]) >= 0.0);
    assert!(
        Client::connect(format!("http://127.0.0.1:{file_port}"))
            .await
            .is_err(),
        "the file's listen address lost to the variable"
    );

    // A bad value in the file stops start-up, naming the option and the file.
    std::fs::write(&path, "heartbeat = \"0s\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run herald-logger");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--heartbeat") && text.contains("herald.toml"),
        "{text}"
    );
}

/// Creates events of `category` until one's notification line comes (the
/// routes may not choose the category yet); false if none came in time.
async fn a_line_comes_for(
    client: &Client,
    category: &str,
    stdout: &mpsc::Receiver<String>,
) -> bool {
    for _ in 0..20 {
        let event = client
            .create(herald::domain::EventInput {
                user_id: "ann".into(),
                description: format!("about {category}"),
                category: category.into(),
                ..Default::default()
            })
            .await
            .expect("create");
        let wanted = format!("Event {} has been sent to ann: about {category}", event.id);
        while let Ok(line) = stdout.recv_timeout(Duration::from_millis(300)) {
            if line == wanted {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn a_channels_file_is_reloaded_on_sighup_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("channels.toml");
    let routes_to = |categories: &str| {
        format!(
            "[channels.out]\nkind = \"line\"\n\n[[routes]]\ncategories = [{categories}]\nchannels = [\"out\"]\n"
        )
    };
    std::fs::write(&path, routes_to("\"a\"")).expect("write");
    let (logger, url, stdout) =
        start_logger_with(&["--channels", path.to_str().expect("utf-8")]).await;
    let client = Client::connect(url).await.expect("connect");
    assert!(a_line_comes_for(&client, "a", &stdout).await);
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &logger.0.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(sent.success());
    };

    std::fs::write(&path, routes_to("\"a\", \"b\"")).expect("write");
    hangup();
    assert!(
        a_line_comes_for(&client, "b", &stdout).await,
        "the new routes apply"
    );

    // A bad file is refused; the routes in use stay, and so does the process.
    std::fs::write(
        &path,
        "[channels.out]\nkind = \"line\"\n[[routes]]\nchannels = [\"nowhere\"]\n",
    )
    .expect("write");
    hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a_line_comes_for(&client, "b", &stdout).await,
        "the old routes stay"
    );
}

#[test]
fn a_bad_channels_file_stops_the_start_naming_the_route_and_field() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("channels.toml");
    std::fs::write(
        &path,
        "[channels.out]\nkind = \"line\"\n\n[[routes]]\ntypes = [\"user.*\"]\nchannels = [\"out\"]\n\n[[routes]]\ntypos = [\"x\"]\nchannels = [\"out\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", "off", "--channels"])
        .arg(&path)
        .output()
        .expect("run herald-logger");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "channels file {}: routes[1].typos: unknown field `typos`",
            path.display()
        )),
        "{stderr}"
    );
}

/// The option headings of a `--help` text, in order, each with the options
/// listed under it.
fn help_sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|l| !l.starts_with(' ')) {
            sections.push((heading.to_string(), Vec::new()));
        } else if line.trim_start().starts_with('-')
            && let Some(at) = line.find("--")
            && let Some(section) = sections.last_mut()
        {
            // `  -h, --help` or `      --listen <LISTEN>`: the long name.
            let name = line[at..].split([' ', ',']).next().unwrap_or_default();
            section.1.push(name.to_string());
        }
    }
    sections
}

#[test]
fn the_logger_help_groups_its_options_under_headings() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .arg("--help")
        .output()
        .expect("run herald-logger --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let sections = help_sections(&help);
    let headings: Vec<&str> = sections.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headings,
        [
            "Options",
            "Serving",
            "End users",
            "Storage",
            "Events",
            "Authentication",
            "Limits",
            "Subscriptions",
            "Retention",
            "Telemetry",
            "Embedded worker"
        ],
        "{help}"
    );
    let under = |heading: &str| {
        sections
            .iter()
            .find(|(h, _)| h == heading)
            .map(|(_, options)| options.clone())
            .unwrap_or_default()
    };
    // Only help and version stay under the plain heading.
    assert_eq!(under("Options"), ["--help", "--version"], "{help}");
    for (heading, option) in [
        ("Serving", "--listen"),
        ("Serving", "--console-listen"),
        ("Serving", "--worker-threads"),
        ("End users", "--web-listen"),
        ("End users", "--cors-allow-origin"),
        ("Storage", "--redis-url"),
        ("Storage", "--partitions"),
        ("Authentication", "--user-token-secret"),
        ("Limits", "--rate-limit"),
        ("Subscriptions", "--heartbeat"),
        ("Retention", "--retention"),
        ("Telemetry", "--log-format"),
        ("Embedded worker", "--channels"),
    ] {
        assert!(
            under(heading).iter().any(|o| o == option),
            "{option} under {heading}: {help}"
        );
    }
}

/// The binary on a free port with `args`, logging at info; its stderr
/// lines come on the receiver.
fn spawn_logging(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", "off", "--console-listen", "off"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald-logger");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// What `child` said on `lines` until a line holds `words`, and then
/// until it stopped (SIGTERM) `after` that.
fn said_until(
    mut child: std::process::Child,
    lines: &mpsc::Receiver<String>,
    words: &str,
    after: Duration,
) -> Vec<String> {
    let mut said: Vec<String> = Vec::new();
    while !said.iter().any(|l| l.contains(words)) {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("never said {words:?}; said:\n{}", said.join("\n")));
        said.push(line);
    }
    std::thread::sleep(after);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    // Everything it wrote before it exited: the reader ends at its end.
    said.extend(lines.iter());
    said
}

#[test]
fn a_logger_with_a_worker_says_once_that_it_made_the_consumer_group() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    let redis = herald_storage::testing::RedisServer::start();
    let (child, lines) = spawn_logging(&["--redis-url", &redis.url(), "--worker"]);
    // The worker reads a few times more; no other partition says it again.
    let said = said_until(child, &lines, "consumer group", Duration::from_millis(500));
    let groups: Vec<&String> = said
        .iter()
        .filter(|l| l.contains("consumer group"))
        .collect();
    assert_eq!(groups.len(), 1, "{}", said.join("\n"));
    assert!(groups[0].contains("partitions=16"), "{}", groups[0]);
}

/// The stderr lines of a logger on `redis` until it says it listens (and
/// has checked the storage layout), then stops it.
fn start_lines_on(redis: &herald_storage::testing::RedisServer) -> Vec<String> {
    let (child, lines) = spawn_logging(&["--redis-url", &redis.url()]);
    said_until(child, &lines, "listening", Duration::ZERO)
}

#[test]
fn a_redis_shared_with_another_application_is_warned_of() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    let redis = herald_storage::testing::RedisServer::start();
    let warning = "holds keys that are not Herald's";
    // Only Herald's keys (the first start writes its layout): no warning.
    let said = start_lines_on(&redis);
    assert!(
        !said.iter().any(|l| l.contains(warning)),
        "{}",
        said.join("\n")
    );
    let status = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "SET",
            "session:42",
            "someone else's",
        ])
        .output()
        .expect("redis-cli");
    assert!(status.status.success());
    let said = start_lines_on(&redis);
    let warned: Vec<&String> = said.iter().filter(|l| l.contains(warning)).collect();
    assert_eq!(warned.len(), 1, "{}", said.join("\n"));
    assert!(
        !warned[0].contains("session:42"),
        "no key is named: {}",
        warned[0]
    );
}

/// Redis data of the previous layout (the settled statuses' indexes one
/// sorted set each, no counts): a logger refuses to start on it, naming
/// `--upgrade-storage`; the binary with that flag upgrades it and exits;
/// then the logger serves it, the processed event found by its status and
/// counted.
#[tokio::test]
async fn the_previous_layout_is_refused_until_upgraded_in_place() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    use redis::AsyncCommands;
    let redis = herald_storage::testing::RedisServer::start();
    let url = redis.url();
    let event = {
        let (_logger, logger, _) = start_logger_with(&["--redis-url", &url, "--worker"]).await;
        let client = Client::connect(logger).await.expect("connect");
        let event = client.create_event("ann", "kept").await.expect("create");
        common::eventually(Duration::from_secs(10), "PROCESSED", || async {
            let got = client.get_event(event.id).await.expect("get");
            (got.status == EventStatus::Processed).then_some(())
        })
        .await;
        event
    };
    // Back to layout 4: the bucket's entries in the index's own sorted set.
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let dirs: Vec<String> = conn
        .keys("herald:*:idx:status:PROCESSED:dir")
        .await
        .expect("KEYS");
    assert_eq!(dirs.len(), 1, "one partition has a processed event");
    let index = dirs[0].trim_end_matches(":dir");
    let bucket = format!("{index}:-inf");
    let (): () = redis::pipe()
        .cmd("RENAME")
        .arg(&bucket)
        .arg(index)
        .ignore()
        .del(&dirs[0])
        .ignore()
        .cmd("EVAL")
        .arg(
            "for _, k in ipairs(redis.call('KEYS', 'herald:*:counts')) do redis.call('DEL', k) end",
        )
        .arg(0)
        .ignore()
        .hset("herald:meta", "layout", "4")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("layout 4");

    let refused = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", "off", "--console-listen", "off"])
        .args(["--redis-url", &url])
        .output()
        .expect("run herald-logger");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--upgrade-storage"), "{said}");

    let upgraded = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .args(["--redis-url", &url, "--upgrade-storage"])
        .output()
        .expect("run herald-logger --upgrade-storage");
    assert!(upgraded.status.success(), "{upgraded:?}");
    let said = String::from_utf8_lossy(&upgraded.stdout);
    assert!(
        said.contains("from layout 4 to 5: 1 index entries moved"),
        "{said}"
    );

    let (_logger, logger, _) = start_logger_with(&["--redis-url", &url]).await;
    let client = Client::connect(logger).await.expect("connect");
    let page = client
        .list_events(herald_client::ListEvents::new().status(EventStatus::Processed))
        .await
        .expect("list");
    assert_eq!(
        page.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [event.id]
    );
    assert_eq!(client.stats().await.expect("stats").processed_events, 1);
}
