//! The `herald` binary's own behaviour: its help and the commands that run
//! offline, and the errors it explains (against nothing listening, a server
//! that is not Herald's, and a real logger run in this process). What it
//! prints on success against a logger is checked by the README's examples
//! (scripts/check_readme.py).

use std::{
    process::{Command, Output},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

const SECRET: &str = "a-test-secret-of-enough-length";

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_USER_TOKEN_SECRET")
        .output()
        .expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_opens_with_what_the_tool_does_and_puts_global_options_apart() {
    let out = herald(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.starts_with("Talk to a Herald logger: create events"),
        "{help}"
    );
    let commands = [
        "create",
        "list",
        "get",
        "update-status",
        "attempts",
        "health",
        "stats",
        "subscribe",
        "simulate",
        "dead-letters list",
        "dead-letters redrive",
        "inbox list",
        "inbox count",
        "inbox read",
        "keys new",
        "tokens new",
        "bench ingest",
    ];
    for command in commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = herald(&args);
        assert!(out.status.success(), "{command}");
        let help = text(&out.stdout);
        assert!(
            !help.contains("[default: \"\"]"),
            "{command} shows an empty default: {help}"
        );
        // The command's own options first, then the global ones apart.
        let global = help
            .find("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{command}: no global options heading: {help}"));
        let server = help.find("--server <SERVER>").expect("--server");
        assert!(server > global, "{command}: --server among its own: {help}");
        let own = help.find("\nOptions:\n").expect("own options");
        assert!(own < global, "{command}: {help}");
    }
}

#[test]
fn tokens_new_signs_a_token_with_the_loggers_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["tokens", "new", "--user-id", "alice", "--ttl", "2h"])
        .env("HERALD_USER_TOKEN_SECRET", SECRET)
        .output()
        .expect("run herald");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let token = token.trim_end();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
            .expect("claims");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["exp"].as_u64().expect("a number") - claims["iat"].as_u64().expect("a number"),
        7200
    );
    let note = text(&out.stderr);
    assert!(
        note.starts_with("a token for alice until ") && note.contains("authorization: Bearer"),
        "{note}"
    );

    // The flag works as well as the variable, and --json says when it expires.
    let out = herald(&[
        "--json",
        "tokens",
        "new",
        "--user-id",
        "bob",
        "--user-token-secret",
        SECRET,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(value["user_id"], "bob");
    assert!(
        value["token"]
            .as_str()
            .expect("a string")
            .starts_with("eyJ")
    );
    assert!(
        value["expires_at"]
            .as_str()
            .expect("a string")
            .ends_with('Z')
    );
}

#[test]
fn tokens_new_refuses_what_the_logger_would_refuse() {
    for (args, error) in [
        (
            vec!["tokens", "new", "--user-id", "alice"],
            "--user-token-secret <USER_TOKEN_SECRET>",
        ),
        (
            vec![
                "tokens",
                "new",
                "--user-id",
                "alice",
                "--user-token-secret",
                "short",
            ],
            "error: user token secret must be at least 16 bytes, got 5",
        ),
        (
            vec![
                "tokens",
                "new",
                "--user-id",
                " ",
                "--user-token-secret",
                SECRET,
            ],
            "error: user_id: is required and must not be blank",
        ),
        (
            vec![
                "tokens",
                "new",
                "--user-id",
                "alice",
                "--ttl",
                "500d",
                "--user-token-secret",
                SECRET,
            ],
            "invalid value '500d' for '--ttl <TTL>': must be at most 1year",
        ),
    ] {
        let out = herald(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no token printed");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(error), "{args:?}: {stderr}");
    }
}

/// `herald` with `args`, against `server`: its exit code and stderr.
fn against(server: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--server", server])
        .args(args)
        .env_remove("HERALD_API_KEY")
        .output()
        .expect("run herald");
    (out.status.code(), text(&out.stderr))
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn a_server_flag_that_cannot_be_herald_is_refused_naming_the_flag() {
    for (server, words) in [
        (
            "htp://127.0.0.1:50051",
            "scheme must be http:// or https://",
        ),
        ("ftp://127.0.0.1:21", "not ftp://"),
        (
            "127.0.0.1",
            "has no port: Herald listens on 50051 by default",
        ),
    ] {
        let (code, stderr) = against(server, &["stats"]);
        assert_eq!(code, Some(2), "{server}: {stderr}");
        assert!(
            stderr.contains("--server") && stderr.contains(words),
            "{server}: {stderr}"
        );
    }
}

#[test]
fn nothing_listening_asks_whether_the_logger_runs_there() {
    let server = format!("http://127.0.0.1:{}", closed_port());
    let (code, stderr) = against(&server, &["stats"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is herald-logger running at {server}? (--server / HERALD_SERVER)"
        )),
        "{stderr}"
    );
}

#[test]
fn a_server_that_is_not_herald_is_named_so() {
    // An HTTP/1.1 server (a console, a metrics port, a web app) that
    // answers whatever it is sent with a 400.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let (code, stderr) = against(&server, &["stats"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("did not answer as a Herald gRPC server: give --server (HERALD_SERVER)"),
        "{stderr}"
    );
}

#[test]
fn an_event_id_that_is_no_uuid_is_named_so() {
    let server = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        &["get", "nope"][..],
        &["attempts", "nope"],
        &["update-status", "nope", "opened"],
    ] {
        let (code, stderr) = against(&server, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("\"nope\" is not an event id: those are UUIDs"),
            "{args:?}: {stderr}"
        );
    }
}

/// A logger running in this process (open mode unless `args` say), and
/// its URL; stopped when the token is cancelled.
async fn logger(args: &[&str]) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut all = vec!["herald-logger"];
    all.extend(args);
    let config = <herald_logger::Config as clap::Parser>::parse_from(all);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let line = std::sync::Arc::new(herald_processor::LineChannel::new(std::io::sink()));
    tokio::spawn(herald_logger::run_with(
        herald_logger::Listeners::grpc(listener),
        config,
        line,
        shutdown.clone(),
    ));
    (url, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_prefixed_keys_and_an_empty_redrive_are_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.json");
    let entry = serde_json::json!({"keys": [{"client_id": "ops", "key_sha256": herald::auth::hash_key("ops-key"), "scopes": ["admin"]}]});
    std::fs::write(&keys, entry.to_string()).expect("write keys");
    let (server, shutdown) = logger(&["--keys-file", keys.to_str().expect("utf-8")]).await;
    let (code, stderr) = tokio::task::spawn_blocking({
        let server = server.clone();
        move || against(&server, &["stats"])
    })
    .await
    .expect("herald");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("hint: give an API key with --api-key or HERALD_API_KEY"),
        "{stderr}"
    );
    // A key pasted with its header's prefix works as the key.
    let (code, stderr) = tokio::task::spawn_blocking({
        let server = server.clone();
        move || against(&server, &["--api-key", "Bearer ops-key", "stats"])
    })
    .await
    .expect("herald");
    assert_eq!(code, Some(0), "{stderr}");
    // Nothing to redrive is said, not left silent.
    let out = tokio::task::spawn_blocking({
        let server = server.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args([
                    "--server",
                    &server,
                    "--api-key",
                    "ops-key",
                    "dead-letters",
                    "redrive",
                    "--all",
                ])
                .output()
                .expect("run herald")
        }
    })
    .await
    .expect("herald");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "nothing to redrive: there are no dead letters\n"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_the_registry_lacks_is_warned_of() {
    let (server, shutdown) = logger(&[]).await;
    let create = |event_type: &'static str| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["--server", &server, "create", "--user-id", "ivy"])
                .args(["--description", "Clicked buy", "--type", event_type])
                .args([
                    "--payload",
                    r#"{"host": "shop.example", "path": "/", "element": "buy"}"#,
                ])
                .output()
                .expect("run herald")
        })
    };
    let typo = create("cta clik").await.expect("herald");
    assert!(typo.status.success(), "{}", text(&typo.stderr));
    let warned = text(&typo.stderr);
    assert!(
        warned.contains("warning: the logger has no type \"cta clik\" in its registry")
            && warned.contains("--reject-unknown-types"),
        "{warned}"
    );
    // A registered type (in the shipped registry) is not.
    let known = create("cta click").await.expect("herald");
    assert!(known.status.success(), "{}", text(&known.stderr));
    assert_eq!(text(&known.stderr), "");
    shutdown.cancel();
}

/// `herald create` sends a request id of its own, so it retries while the
/// logger's storage is unavailable (a failover, a restart) and the event is
/// made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_retries_with_a_request_id_of_its_own() {
    if herald_storage::testing::skip_redis_tests() {
        return;
    }
    // With its append-only file, Redis keeps the first event over the restart.
    let mut redis = herald_storage::testing::RedisServer::start_with_aof();
    let (server, shutdown) = logger(&["--redis-url", &redis.url()]).await;
    let run = |args: Vec<&'static str>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["--server", &server])
                .args(args)
                .output()
                .expect("run herald")
        })
    };
    let first = run(vec!["create", "--user-id", "kim", "--description", "first"]);
    assert!(first.await.expect("herald").status.success());
    redis.stop();
    let create = run(vec![
        "create",
        "--user-id",
        "kim",
        "--description",
        "Made once",
        "--json",
    ]);
    // Redis comes back while herald is retrying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis.restart());
    let out = create.await.expect("herald");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let request_id = made["request_id"].as_str().expect("request_id");
    assert!(request_id.starts_with("herald-cli-"), "{made}");
    let listed = run(vec!["list", "--user-id", "kim", "--json"])
        .await
        .expect("herald");
    let descriptions: Vec<String> = text(&listed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["description"].to_string()
        })
        .collect();
    assert_eq!(descriptions, ["\"first\"", "\"Made once\""], "made once");
    shutdown.cancel();
}
