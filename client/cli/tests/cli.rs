//! The `herald` binary's own behaviour, where no server is needed: its help
//! and the commands that run offline. What it prints against a logger is
//! checked by the README's examples (scripts/check_readme.py).

use std::process::{Command, Output};

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
