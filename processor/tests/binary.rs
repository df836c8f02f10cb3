//! The real `herald-processor` binary, as an operator starts it: what it
//! says while it waits, and how it ends.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use herald_storage::testing::{RedisServer, free_port, skip_redis_tests};

#[test]
fn a_processor_waiting_for_its_logger_says_so_and_stops_without_starting() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let logger_url = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-processor"))
        .args(["--redis-url", &redis.url(), "--logger-url", &logger_url])
        .args(["--metrics-listen", "off", "--consumer-name", "p1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald-processor");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|l: &String| l.contains("cannot reach the logger (--logger-url)"))
    {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no word of the logger; said:\n{}", said.join("\n")));
        said.push(line);
    }
    let _ = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    // Everything it wrote before it exited: the reader ends at its end.
    said.extend(lines.iter());
    let text = said.join("\n");
    assert!(text.contains(&logger_url), "{text}");
    assert!(text.contains("shutdown requested"), "{text}");
    // It never started taking events, and does not say it did.
    assert!(!text.contains("processor started"), "{text}");
}
