//! `herald keys new`: a fresh API key and its keys-file entry.

use herald::auth::{Scope, generate_key, hash_key};

/// `herald keys` subcommands.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Print a fresh API key (once) and the entry to add to the logger's keys file.
    New {
        /// The client the key is for; it becomes the source of its events.
        #[arg(long)]
        client_id: String,
        /// Comma-separated scopes: events:write, events:read, events:process,
        /// notifications:subscribe, admin.
        #[arg(long, value_delimiter = ',', value_parser = parse_scope, required = true)]
        scopes: Vec<Scope>,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim()).ok_or_else(|| {
        format!(
            "unknown scope {s:?}: use {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        )
    })
}

/// Prints a fresh key and its keys-file entry: two labelled lines, or with
/// `json` one object `{"key": ..., "entry": {...}}`.
pub fn new_key(client_id: &str, scopes: &[Scope], json: bool) -> anyhow::Result<()> {
    let key = generate_key().map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let entry = serde_json::json!({
        "client_id": client_id,
        "key_sha256": hash_key(&key),
        "scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    });
    if json {
        println!("{}", serde_json::json!({ "key": key, "entry": entry }));
    } else {
        println!("key:   {key}");
        println!("entry: {entry}");
    }
    eprintln!(
        "the key is shown once: give it to the client; add the entry to the keys file's \"keys\" list"
    );
    Ok(())
}

/// Runs one `keys` subcommand (no server needed).
pub fn run(command: &KeysCommand, json: bool) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { client_id, scopes } => new_key(client_id, scopes, json),
    }
}
