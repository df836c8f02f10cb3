//! The `--config` file (TOML) under the `HERALD_*` variables and the flags.

/// Parses the command line into `T`, with the values of the `--config`
/// file (TOML; env `HERALD_CONFIG`) under the `HERALD_*` variables and the
/// flags: a flag beats its variable, which beats the file, which beats the
/// default. Exits with a message naming the option on any error, as clap does.
pub fn parse_args<T: clap::Parser>() -> T {
    match try_parse_args(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ConfigError::Clap(err)) => err.exit(),
        Err(ConfigError::File(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

/// Why [`try_parse_args`] failed.
#[derive(Debug)]
pub enum ConfigError {
    /// The command line itself (clap's own message; it may be `--help`).
    Clap(clap::Error),
    /// The config file, or a value in it; the message names the file and the option.
    File(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clap(err) => write!(f, "{err}"),
            Self::File(message) => f.write_str(message),
        }
    }
}

/// [`parse_args`] on `args` (program name first), answering errors.
pub fn try_parse_args<T: clap::Parser>(args: Vec<std::ffi::OsString>) -> Result<T, ConfigError> {
    use clap::parser::ValueSource;

    let command = T::command();
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(ConfigError::Clap)?;
    let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
        return T::from_arg_matches(&matches).map_err(ConfigError::Clap);
    };
    let shown = path.display();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::File(format!("--config: cannot read {shown}: {e}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        ConfigError::File(format!(
            "--config {shown}: not valid TOML: {}",
            toml_syntax_error(&text, &e)
        ))
    })?;
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some() && id != "config")
            .ok_or_else(|| {
                ConfigError::File(format!(
                    "--config {shown}: unknown option `{key}` (keys are the long flags of --help, without the dashes)"
                ))
            })?;
        // A flag or its variable wins over the file.
        if matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let takes_value = arg.get_action().takes_values();
        let scalar = |value: &toml::Value| match value {
            _ if !takes_value => None,
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            toml::Value::Float(x) => Some(x.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        match &value {
            toml::Value::Boolean(true) if !takes_value => extra.push(format!("--{long}").into()),
            toml::Value::Boolean(false) if !takes_value => {}
            toml::Value::Array(items) if takes_value => {
                for item in items {
                    let item = scalar(item).ok_or_else(|| {
                        ConfigError::File(format!(
                            "--config {shown}: `{key}` holds a list item that is no plain value"
                        ))
                    })?;
                    extra.push(format!("--{long}={item}").into());
                }
            }
            other => {
                let text = scalar(other).ok_or_else(|| {
                    ConfigError::File(format!(
                        "--config {shown}: `{key}` must be {}",
                        if takes_value {
                            "a string or a number"
                        } else {
                            "true or false"
                        }
                    ))
                })?;
                extra.push(format!("--{long}={text}").into());
            }
        }
    }
    let all: Vec<std::ffi::OsString> = args.into_iter().chain(extra).collect();
    T::try_parse_from(all).map_err(|e| {
        ConfigError::File(format!(
            "--config {shown}: {}",
            e.to_string().trim_start_matches("error: ").trim_end()
        ))
    })
}

/// A TOML syntax error of `text` as it may be shown: the line, the key the
/// line sets (when it sets one) and what is wrong, never the line itself,
/// whose value may be a password or a signing secret (toml's own message
/// quotes the line).
pub fn toml_syntax_error(text: &str, err: &toml::de::Error) -> String {
    let what = err.message().trim_end_matches('\n');
    let Some(start) = err.span().map(|span| span.start.min(text.len())) else {
        return what.to_owned();
    };
    let before = text.get(..start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        });
    match key {
        Some(key) => format!("line {line}, key {key}: {what}"),
        None => format!("line {line}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::toml_syntax_error;

    #[test]
    fn toml_errors_name_the_line_and_key_never_the_value() {
        for (text, expected) in [
            (
                "redis-url = \"redis://u:hunter2@h\nlisten = \"x\"\n",
                "line 1, key redis-url:",
            ),
            (
                "[channels.hooks]\nkind = \"webhook\"\nsecret = whsec_hunter2\n",
                "line 3, key secret:",
            ),
            ("a = 1\n[[[hunter2\n", "line 2:"),
        ] {
            let err = toml::from_str::<toml::Table>(text).expect_err("not TOML");
            let shown = toml_syntax_error(text, &err);
            assert!(shown.starts_with(expected), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
