//! `herald tokens new`: an end user's token, signed as the logger checks it.

use std::time::Duration;

use herald_client::{rfc3339, tokens::user_token};
use herald_runtime::flags::duration_within;

/// `herald tokens` subcommands.
#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Print a token for one end user, to send as `authorization: Bearer
    /// <token>` (or `--api-key`): it may follow that user's notifications
    /// and mark that user's events OPENED, nothing else.
    New(NewArgs),
}

/// Flags of `herald tokens new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The user the token speaks for (its `sub`).
    #[arg(long)]
    user_id: String,
    /// How long the token is accepted, e.g. 15m, 1h, 7d (at most 1y).
    #[arg(long, default_value = "1h", value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(31_557_600)))]
    ttl: Duration,
    /// The secret the logger checks tokens with: its --user-token-secret
    /// (read from the same variable, HERALD_USER_TOKEN_SECRET).
    #[arg(long, env = "HERALD_USER_TOKEN_SECRET", hide_env_values = true)]
    user_token_secret: String,
}

/// Runs one `tokens` subcommand (no server needed): the token alone on
/// stdout (or, with `json`, `{"token", "user_id", "expires_at"}`), what it is
/// for on stderr.
pub fn run(command: &TokensCommand, json: bool) -> anyhow::Result<()> {
    let TokensCommand::New(args) = command;
    let token = user_token(&args.user_token_secret, &args.user_id, args.ttl)?;
    let expires_at = rfc3339(token.expires_at);
    if json {
        let value = serde_json::json!({
            "token": token.token,
            "user_id": args.user_id,
            "expires_at": expires_at,
        });
        println!("{value}");
    } else {
        println!("{}", token.token);
    }
    eprintln!(
        "a token for {} until {expires_at}: send it as authorization: Bearer <token> (herald \
         --api-key); it may follow {}'s notifications and mark them OPENED, nothing else",
        args.user_id, args.user_id
    );
    Ok(())
}
