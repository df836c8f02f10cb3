//! `herald recipients set`, `get`, `delete`, `import`, `opt-out` and
//! `opt-in`: who users are to the channels, and what they opt out of.

use std::path::{Path, PathBuf};

use herald::domain::{OptOut, Payload, Recipient, rfc3339_micros};
use herald_client::{Client, Error, NewRecipient};
use serde::Deserialize;

use super::parse_payload;

/// Most recipients one PutRecipients call of an import carries.
const IMPORT_BATCH: usize = 500;

/// `herald recipients` subcommands.
#[derive(clap::Subcommand)]
pub enum RecipientsCommand {
    /// Store a user's contact data, replacing what was there (their
    /// preferences stay).
    Set {
        /// The user.
        user_id: String,
        /// Where email goes.
        #[arg(long, default_value = "", hide_default_value = true)]
        email: String,
        /// How to address the user.
        #[arg(long, default_value = "", hide_default_value = true)]
        name: String,
        /// The user's language, a BCP 47 tag (`fr`, `pt-BR`).
        #[arg(long, default_value = "", hide_default_value = true)]
        locale: String,
        /// The user's IANA time zone (`Europe/Paris`).
        #[arg(long, default_value = "", hide_default_value = true)]
        time_zone: String,
        /// Free attributes for templates, a JSON object.
        #[arg(long, value_parser = parse_payload)]
        attributes: Option<Payload>,
    },
    /// Print a user's record: contact data and opt-outs.
    Get {
        /// The user.
        user_id: String,
    },
    /// Erase a user's record: contact data and preferences.
    Delete {
        /// The user.
        user_id: String,
    },
    /// Store the recipients of a file of JSON lines, one object per line
    /// (`user_id`, `email`, `name`, `locale`, `time_zone`, `attributes`,
    /// and `opt_outs` to replace the preferences), in batches; refused
    /// lines are printed with their errors.
    Import {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
    /// Add an opt-out to a user's preferences: no events of --category
    /// and/or --type through --channel (any one or more of the three).
    OptOut {
        /// The user.
        user_id: String,
        #[command(flatten)]
        opt_out: OptOutArgs,
    },
    /// Remove an opt-out (the same flags as it was added with).
    OptIn {
        /// The user.
        user_id: String,
        #[command(flatten)]
        opt_out: OptOutArgs,
    },
}

/// What an opt-out covers.
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
pub struct OptOutArgs {
    /// A channel's name in the processors' channels file.
    #[arg(long)]
    channel: Option<String>,
    /// An event category.
    #[arg(long)]
    category: Option<String>,
    /// An event type.
    #[arg(long = "type")]
    event_type: Option<String>,
}

impl OptOutArgs {
    fn opt_out(&self) -> OptOut {
        OptOut {
            channel: self.channel.clone().unwrap_or_default(),
            category: self.category.clone().unwrap_or_default(),
            event_type: self.event_type.clone().unwrap_or_default(),
        }
    }
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    user_id: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    attributes: Option<Payload>,
    #[serde(default)]
    opt_outs: Option<Vec<OptOut>>,
    /// What `recipients get --json` prints beside the record; ignored.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<String>,
}

impl ImportLine {
    fn into_recipient(self) -> NewRecipient {
        let mut r = NewRecipient::new(self.user_id)
            .email(self.email)
            .name(self.name)
            .locale(self.locale)
            .time_zone(self.time_zone);
        if let Some(attributes) = &self.attributes {
            r = r.attributes(attributes);
        }
        if let Some(opt_outs) = self.opt_outs {
            r = r.preferences(herald::domain::Preferences { opt_outs });
        }
        r
    }
}

/// Runs one `recipients` subcommand; an import with refused lines fails
/// (INVALID_ARGUMENT, after printing each), as does `get` of a user
/// without a record (NOT_FOUND).
pub async fn run(client: &Client, command: &RecipientsCommand, json: bool) -> Result<(), Error> {
    match command {
        RecipientsCommand::Set {
            user_id,
            email,
            name,
            locale,
            time_zone,
            attributes,
        } => {
            let mut r = NewRecipient::new(user_id)
                .email(email)
                .name(name)
                .locale(locale)
                .time_zone(time_zone);
            if let Some(attributes) = attributes {
                r = r.attributes(attributes);
            }
            print_recipient(&client.put_recipient(r).await?, json);
        }
        RecipientsCommand::Get { user_id } => match client.recipient(user_id).await? {
            Some(r) => print_recipient(&r, json),
            None => {
                return Err(tonic::Status::not_found(format!("no recipient {user_id:?}")).into());
            }
        },
        RecipientsCommand::Delete { user_id } => {
            let deleted = client.delete_recipient(user_id).await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": deleted }));
            } else if deleted {
                println!("recipient {user_id} erased");
            } else {
                println!("no recipient {user_id}");
            }
        }
        RecipientsCommand::Import { file } => import(client, file).await?,
        RecipientsCommand::OptOut { user_id, opt_out } => {
            let mut opt_outs = client.preferences(user_id).await?.opt_outs;
            opt_outs.push(opt_out.opt_out());
            print_opt_outs(
                &client.set_preferences(user_id, opt_outs).await?.opt_outs,
                json,
            );
        }
        RecipientsCommand::OptIn { user_id, opt_out } => {
            let wanted = opt_out.opt_out();
            let mut opt_outs = client.preferences(user_id).await?.opt_outs;
            let before = opt_outs.len();
            opt_outs.retain(|o| *o != wanted);
            if opt_outs.len() == before {
                let message = format!("{user_id} has no opt-out of {wanted}");
                return Err(tonic::Status::failed_precondition(message).into());
            }
            print_opt_outs(
                &client.set_preferences(user_id, opt_outs).await?.opt_outs,
                json,
            );
        }
    }
    Ok(())
}

/// Imports the JSON lines of `file`, in batches.
async fn import(client: &Client, file: &Path) -> Result<(), Error> {
    let read = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = read.map_err(|e| Error::Setup(format!("{}: {e}", file.display())))?;
    let (mut stored, mut refused) = (0usize, 0usize);
    let mut batch: Vec<(usize, NewRecipient)> = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    for (i, line) in lines {
        match serde_json::from_str::<ImportLine>(line) {
            Ok(parsed) => batch.push((i + 1, parsed.into_recipient())),
            Err(e) => {
                refused += 1;
                eprintln!("line {}: not a recipient: {e}", i + 1);
            }
        }
        if batch.len() == IMPORT_BATCH {
            let (s, r) = put_batch(client, std::mem::take(&mut batch)).await?;
            (stored, refused) = (stored + s, refused + r);
        }
    }
    if !batch.is_empty() {
        let (s, r) = put_batch(client, batch).await?;
        (stored, refused) = (stored + s, refused + r);
    }
    println!("{stored} stored, {refused} refused");
    if refused > 0 {
        return Err(tonic::Status::invalid_argument(format!("{refused} lines refused")).into());
    }
    Ok(())
}

/// Puts one batch of numbered lines: how many were stored and refused
/// (each refusal printed with its line).
async fn put_batch(
    client: &Client,
    batch: Vec<(usize, NewRecipient)>,
) -> Result<(usize, usize), Error> {
    let (numbers, recipients): (Vec<usize>, Vec<NewRecipient>) = batch.into_iter().unzip();
    let results = client.put_recipients(recipients).await?;
    let mut refused = 0;
    for (line, result) in numbers.into_iter().zip(&results) {
        if let Err(err) = result {
            refused += 1;
            eprintln!("line {line}: {err}");
        }
    }
    Ok((results.len() - refused, refused))
}

/// Prints a record as labelled lines, or with `json` as one object.
fn print_recipient(r: &Recipient, json: bool) {
    if json {
        println!("{}", r.to_json());
        return;
    }
    println!("user_id:    {}", r.user_id);
    for (label, value) in [
        ("email:     ", &r.contact.email),
        ("name:      ", &r.contact.name),
        ("locale:    ", &r.contact.locale),
        ("time_zone: ", &r.contact.time_zone),
    ] {
        if !value.is_empty() {
            println!("{label} {value}");
        }
    }
    if let Some(attributes) = &r.contact.attributes {
        println!(
            "attributes: {}",
            serde_json::Value::Object(attributes.clone())
        );
    }
    for o in &r.preferences.opt_outs {
        println!("opt-out:    {o}");
    }
    println!("updated_at: {}", rfc3339_micros(r.updated_at));
}

/// Prints opt-outs, one a line, or with `json` as one object.
fn print_opt_outs(opt_outs: &[OptOut], json: bool) {
    if json {
        let all: Vec<_> = opt_outs.iter().map(OptOut::to_json).collect();
        println!("{}", serde_json::json!({ "opt_outs": all }));
    } else if opt_outs.is_empty() {
        println!("no opt-outs: every channel on");
    } else {
        for o in opt_outs {
            println!("opt-out: {o}");
        }
    }
}
