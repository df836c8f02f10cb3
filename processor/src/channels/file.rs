//! The channels file (`--channels`): named channels with their settings,
//! and routes that choose channels for events. Read whole and checked
//! before anything uses it, so a bad file changes nothing; every error
//! names the file, the table (`channels.hooks`, `routes[1]`) and the field.
//!
//! ```toml
//! [channels.hooks]
//! kind = "webhook"
//! url = "http://127.0.0.1:9000/hook"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//!
//! [[routes]]
//! types = ["user.*"]
//! channels = ["hooks"]
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

use super::settings::{ChannelSettings, RouteSettings, TEMPLATE_FIELDS, template_fields};

/// A channels file, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelsFile {
    /// The channels with their names, sorted by name.
    pub channels: Vec<(String, ChannelSettings)>,
    /// The routes, in the file's order.
    pub routes: Vec<RouteSettings>,
}

/// Why a channels file was refused: the file, where in it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelsError {
    /// The file.
    pub file: PathBuf,
    /// The table and field (`channels.hooks.url`, `routes[1].channels`);
    /// empty for the file as a whole.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ChannelsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at.as_str() {
            "" => write!(f, "channels file {}: {}", self.file.display(), self.message),
            at => write!(
                f,
                "channels file {}: {at}: {}",
                self.file.display(),
                self.message
            ),
        }
    }
}

impl std::error::Error for ChannelsError {}

/// Longest channel name.
const MAX_NAME: usize = 64;

impl ChannelsFile {
    /// Reads and checks the channels file at `path`.
    pub fn read(path: &Path) -> Result<Self, ChannelsError> {
        let fail = |at: &str, message: String| ChannelsError {
            file: path.to_owned(),
            at: at.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail("", e.to_string()))?;
        Self::parse(&text).map_err(|(at, message)| fail(&at, message))
    }

    /// Reads and checks a channels file's text; an error is where and what.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let shown = herald_runtime::process::toml_syntax_error(text, &e);
            (String::new(), format!("not valid TOML: {shown}"))
        })?;
        let channels_table = match table.remove("channels") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(("channels".into(), "must be a table of channels".into())),
            None => return Err(("channels".into(), "no channel is defined".into())),
        };
        let routes_list = match table.remove("routes") {
            Some(toml::Value::Array(routes)) => routes,
            Some(_) => {
                return Err((
                    "routes".into(),
                    "must be an array of tables, [[routes]]".into(),
                ));
            }
            None => {
                return Err((
                    "routes".into(),
                    "no route is defined: events would go nowhere".into(),
                ));
            }
        };
        if let Some(unknown) = table.keys().next() {
            return Err((
                unknown.clone(),
                "unknown key (a channels file has [channels.NAME] tables and [[routes]])".into(),
            ));
        }
        let mut channels = Vec::with_capacity(channels_table.len());
        for (name, value) in channels_table {
            let at = format!("channels.{name}");
            if name.is_empty()
                || name.len() > MAX_NAME
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    at,
                    format!("a channel's name is 1 to {MAX_NAME} letters, digits, - or _"),
                ));
            }
            let settings = ChannelSettings::of(value)
                .map_err(|(field, message)| (join(&at, &field), message))?;
            channels.push((name, settings));
        }
        let mut routes = Vec::with_capacity(routes_list.len());
        for (i, value) in routes_list.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            let route: RouteSettings =
                typed(value).map_err(|(field, message)| (join(&at, &field), message))?;
            if route.channels.is_empty() {
                return Err((join(&at, "channels"), "names no channel".into()));
            }
            for name in &route.channels {
                if !channels.iter().any(|(n, _)| n == name) {
                    let known: Vec<&str> = channels.iter().map(|(n, _)| n.as_str()).collect();
                    return Err((
                        join(&at, "channels"),
                        format!(
                            "no channel is named {name:?} (there are: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
            for (field, values) in [
                ("categories", &route.categories),
                ("types", &route.types),
                ("users", &route.users),
                ("sessions", &route.sessions),
            ] {
                if values.iter().any(String::is_empty) {
                    return Err((join(&at, field), "holds an empty value".into()));
                }
            }
            check_digest(&route).map_err(|(field, message)| (join(&at, field), message))?;
            routes.push(route);
        }
        Ok(Self { channels, routes })
    }
}

/// What is wrong with a route's digest settings: the field and why.
fn check_digest(route: &RouteSettings) -> Result<(), (&'static str, String)> {
    use super::settings::{DIGEST_WINDOWS, MAX_DIGEST_EVENTS};
    let Some(window) = route.digest else {
        return match route.max_events {
            Some(_) => Err(("max_events", "applies to a digest route only".into())),
            None => Ok(()),
        };
    };
    let (shortest, longest) = DIGEST_WINDOWS;
    if window < shortest || window > longest {
        return Err((
            "digest",
            format!(
                "must be from {} to {}",
                humantime::format_duration(shortest),
                humantime::format_duration(longest)
            ),
        ));
    }
    if route.ordered {
        return Err((
            "ordered",
            "a digest route cannot be ordered: a digest goes out as one notification".into(),
        ));
    }
    match route.max_events {
        Some(n) if !(2..=MAX_DIGEST_EVENTS).contains(&n) => Err((
            "max_events",
            format!("must be from 2 to {MAX_DIGEST_EVENTS}"),
        )),
        _ => Ok(()),
    }
}

/// Whether `server` is `host:port`.
fn is_host_port(server: &str) -> bool {
    server
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// `at.field`, or `at` alone for an empty field.
fn join(at: &str, field: &str) -> String {
    match field {
        "" => at.to_owned(),
        field => format!("{at}.{field}"),
    }
}

/// A TOML value as `T`; an error is the field (empty for the value as a
/// whole) and serde's message.
fn typed<T: DeserializeOwned>(value: toml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match e.path().to_string().as_str() {
            "." => String::new(),
            path => path.to_owned(),
        };
        (field, e.into_inner().message().to_owned())
    })
}

impl ChannelSettings {
    /// A channel's table, read by its `kind`; an error is the field and
    /// what is wrong.
    fn of(value: toml::Value) -> Result<Self, (String, String)> {
        let toml::Value::Table(mut table) = value else {
            return Err((String::new(), "must be a table".into()));
        };
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            _ => {
                return Err((
                    "kind".into(),
                    "is required: line, simulated, webhook, irc or email".into(),
                ));
            }
        };
        let rest = toml::Value::Table(table);
        let settings = match kind.as_str() {
            "line" => Self::Line(typed(rest)?),
            "simulated" => Self::Simulated(typed(rest)?),
            "webhook" => Self::Webhook(typed(rest)?),
            "irc" => Self::Irc(typed(rest)?),
            "email" => Self::Email(typed(rest)?),
            other => {
                return Err((
                    "kind".into(),
                    format!(
                        "{other:?} is no kind of channel: line, simulated, webhook, irc or email"
                    ),
                ));
            }
        };
        settings.check()?;
        Ok(settings)
    }

    /// The checks serde cannot make; an error is the field and what is wrong.
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        let retry = self.retry();
        if retry.attempts == Some(0) {
            return bad("retry.attempts", "must be at least 1");
        }
        match self {
            Self::Line(_) => {}
            Self::Simulated(s) => {
                if !(0.0..=1.0).contains(&s.loss_ratio) {
                    return bad("loss_ratio", "must be from 0 to 1");
                }
            }
            Self::Webhook(w) => {
                let uri: http::Uri = w.url.parse().map_err(|_| {
                    (
                        "url".to_owned(),
                        format!("{} is not a URL", herald::redact::url(&w.url)),
                    )
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return bad("url", "must be an http:// or https:// URL with a host");
                }
                if w.tls_ca.is_some() && uri.scheme_str() != Some("https") {
                    return bad("tls_ca", "needs an https:// url");
                }
                let secrets: Vec<&String> = w.secret.iter().chain(&w.secrets).collect();
                if secrets.is_empty() {
                    return bad("secret", "is required (whsec_ and base64), or secrets");
                }
                if w.secret.is_some() && !w.secrets.is_empty() {
                    return bad("secrets", "give secret or secrets, not both");
                }
                for (i, secret) in secrets.iter().enumerate() {
                    if herald_client::webhooks::Secret::parse(secret).is_err() {
                        let field = match w.secret {
                            Some(_) => "secret".to_owned(),
                            None => format!("secrets[{i}]"),
                        };
                        return Err((
                            field,
                            "must be whsec_ followed by base64 of at least 16 bytes".into(),
                        ));
                    }
                }
                if w.timeout.is_zero() {
                    return bad("timeout", "must be longer than zero");
                }
                if w.concurrency == 0 {
                    return bad("concurrency", "must be at least 1");
                }
                if w.breaker_failures == 0 {
                    return bad("breaker_failures", "must be at least 1");
                }
            }
            Self::Email(e) => {
                if !is_host_port(&e.server) {
                    return bad("server", "must be host:port");
                }
                if e.tls_ca.is_some() && e.tls == super::settings::EmailTls::None {
                    return bad("tls_ca", "needs tls = \"starttls\" or \"tls\"");
                }
                if e.password.is_some() && e.username.is_none() {
                    return bad("password", "needs a username");
                }
                if e.timeout.is_zero() {
                    return bad("timeout", "must be longer than zero");
                }
                if e.pool == 0 {
                    return bad("pool", "must be at least 1");
                }
                if let Some(links) = &e.links {
                    let url: Option<http::Uri> = links.base_url.parse().ok();
                    if !url.is_some_and(|u| {
                        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                    }) || links.base_url.contains(['?', '#'])
                    {
                        return bad("links.base_url", "must be an http:// or https:// URL");
                    }
                    if let Err(why) = herald::auth::check_user_token_secret(&links.secret) {
                        return Err(("links.secret".into(), why));
                    }
                }
                if e.breaker_failures == 0 {
                    return bad("breaker_failures", "must be at least 1");
                }
            }
            Self::Irc(irc) => {
                if !is_host_port(&irc.server) {
                    return bad("server", "must be host:port");
                }
                if irc.tls_ca.is_some() && !irc.tls {
                    return bad("tls_ca", "needs tls = true");
                }
                if !crate::channels::irc::valid_nick(&irc.nick) {
                    return bad(
                        "nick",
                        "must be 1 to 9 letters, digits or []\\`_^{|}- not starting with a digit or -",
                    );
                }
                if irc.channels.is_empty() {
                    return bad("channels", "names no IRC channel to write to");
                }
                if let Some(bad_channel) = irc
                    .channels
                    .iter()
                    .find(|c| !crate::channels::irc::valid_channel(c))
                {
                    return Err((
                        "channels".into(),
                        format!(
                            "{bad_channel:?} is not an IRC channel (#name, no spaces or commas)"
                        ),
                    ));
                }
                if let Some(unknown) =
                    template_fields(&irc.template).find(|f| !TEMPLATE_FIELDS.contains(f))
                {
                    return Err((
                        "template".into(),
                        format!(
                            "{{{unknown}}} is not a field: use {}",
                            TEMPLATE_FIELDS.map(|f| format!("{{{f}}}")).join(", ")
                        ),
                    ));
                }
                if !(irc.rate > 0.0 && irc.rate <= 100.0) {
                    return bad(
                        "rate",
                        "must be more than 0 and at most 100 messages a second",
                    );
                }
                if irc.burst == 0 {
                    return bad("burst", "must be at least 1");
                }
                if irc.timeout.is_zero() {
                    return bad("timeout", "must be longer than zero");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channels::settings::RetrySettings;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn error_of(text: &str) -> (String, String) {
        ChannelsFile::parse(text).expect_err("refused")
    }

    #[test]
    fn the_example_reads_with_its_defaults() {
        let file = ChannelsFile::parse(&format!(
            r#"
            [channels.hooks]
            kind = "webhook"
            url = "http://127.0.0.1:9000/hook"
            secret = "{SECRET}"

            [[routes]]
            types = ["user.*"]
            channels = ["hooks"]
            "#
        ))
        .expect("valid");
        let ChannelSettings::Webhook(hooks) = &file.channels[0].1 else {
            panic!("a webhook: {file:?}");
        };
        assert_eq!(file.channels[0].0, "hooks");
        assert_eq!(hooks.timeout, Duration::from_secs(10));
        assert_eq!(hooks.concurrency, 16);
        assert_eq!(hooks.retry, RetrySettings::default());
        assert_eq!(file.routes[0].types, ["user.*"]);
    }

    #[test]
    fn every_error_names_the_table_and_the_field() {
        let hook = format!(
            "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"{SECRET}\"\n"
        );
        let route = "[[routes]]\nchannels = [\"hooks\"]\n";
        for (text, at, words) in [
            (format!("{hook}[[routes]]\ntypes = [\"a\"]\nchannels = [\"hookz\"]\n"), "routes[0].channels", "no channel is named \"hookz\""),
            (format!("{hook}{route}[[routes]]\ntyps = [\"a\"]\nchannels = [\"hooks\"]\n"), "routes[1].typs", "unknown field `typs`"),
            (format!("{hook}timeout = \"soon\"\n{route}"), "channels.hooks.timeout", "expected a duration"),
            (format!("{hook}concurrency = \"x\"\n{route}"), "channels.hooks.concurrency", "expected u32"),
            (format!("{hook}retry = {{ backoff = 5 }}\n{route}"), "channels.hooks.retry.backoff", "expected a string"),
            (hook.replace("http://h/", "ftp://h/") + route, "channels.hooks.url", "http:// or https://"),
            (format!("{hook}tls_ca = \"/ca.pem\"\n{route}"), "channels.hooks.tls_ca", "needs an https:// url"),
            (hook.replace(SECRET, "hunter2") + route, "channels.hooks.secret", "whsec_"),
            (format!("{hook}retry = {{ attempts = 0 }}\n{route}"), "channels.hooks.retry.attempts", "at least 1"),
            ("[channels.x]\nkind = \"pigeon\"\n[[routes]]\nchannels = [\"x\"]\n".into(), "channels.x.kind", "no kind of channel"),
            ("[channels.x]\nkind = \"line\"\n".into(), "routes", "no route"),
            ("[channels.x]\nkind = \"irc\"\nserver = \"irc:6667\"\nnick = \"herald\"\nchannels = [\"#ops\"]\ntemplate = \"{who}\"\n[[routes]]\nchannels = [\"x\"]\n".into(), "channels.x.template", "{who} is not a field"),
            ("[channels.x]\nkind = \"irc\"\nserver = \"irc\"\nnick = \"herald\"\nchannels = [\"#ops\"]\n[[routes]]\nchannels = [\"x\"]\n".into(), "channels.x.server", "host:port"),
            ("[channels.\"a b\"]\nkind = \"line\"\n[[routes]]\nchannels = [\"a b\"]\n".into(), "channels.a b", "letters, digits"),
            (format!("{hook}{route}digest = \"500ms\"\n"), "routes[0].digest", "from 1s to 7days"),
            (format!("{hook}{route}digest = \"8d\"\n"), "routes[0].digest", "from 1s to 7days"),
            (format!("{hook}{route}digest = \"10m\"\nordered = true\n"), "routes[0].ordered", "cannot be ordered"),
            (format!("{hook}{route}digest = \"10m\"\nmax_events = 1\n"), "routes[0].max_events", "from 2 to 1000"),
            (format!("{hook}{route}digest = \"10m\"\nmax_events = 1001\n"), "routes[0].max_events", "from 2 to 1000"),
            (format!("{hook}{route}max_events = 10\n"), "routes[0].max_events", "a digest route only"),
            ("channels = [".into(), "", "not valid TOML: line 1, key channels"),
            // A syntax error never shows the line: its value may be a secret.
            ("[channels.x]\nkind = \"webhook\"\nsecret = whsec_hunter2\n".into(), "", "line 3, key secret"),
        ] {
            let (got_at, message) = error_of(&text);
            assert_eq!(got_at, at, "{text}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains(words), "{text}: {message:?} lacks {words:?}");
        }
    }

    #[test]
    fn the_documented_example_file_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/channels.example.toml");
        let file = ChannelsFile::read(&path).expect("the example file is valid");
        let names: Vec<&str> = file.channels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["hooks", "ops", "stdout"]);
        assert_eq!(file.routes.len(), 3);
    }

    #[test]
    fn a_file_error_names_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("channels.toml");
        std::fs::write(
            &path,
            "[channels.x]\nkind = \"line\"\n[[routes]]\nchannels = [\"y\"]\n",
        )
        .expect("write");
        let err = ChannelsFile::read(&path).expect_err("refused").to_string();
        assert!(
            err.starts_with(&format!(
                "channels file {}: routes[0].channels: ",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn email_settings_are_checked_naming_the_field() {
        let mail = "[channels.mail]\nkind = \"email\"\nfrom = \"a@b.c\"\ntemplates = \"t\"\n";
        let route = "[[routes]]\nchannels = [\"mail\"]\nrequired = true\n";
        let ok = ChannelsFile::parse(&format!("{mail}server = \"smtp.example.com:587\"\n{route}"))
            .expect("valid");
        let ChannelSettings::Email(email) = &ok.channels[0].1 else {
            panic!("an email channel: {ok:?}");
        };
        assert_eq!(email.tls, super::super::settings::EmailTls::Starttls);
        assert_eq!((email.pool, email.timeout), (4, Duration::from_secs(10)));
        assert!(ok.routes[0].required);
        for (extra, at, words) in [
            (
                "server = \"smtp.example.com\"",
                "channels.mail.server",
                "host:port",
            ),
            (
                "server = \"h:25\"\ntls = \"none\"\ntls_ca = \"ca.pem\"",
                "channels.mail.tls_ca",
                "needs tls",
            ),
            (
                "server = \"h:25\"\npassword = \"p\"",
                "channels.mail.password",
                "needs a username",
            ),
            (
                "server = \"h:25\"\ntls = \"ssl\"",
                "channels.mail.tls",
                "unknown variant",
            ),
            (
                "server = \"h:25\"\npool = 0",
                "channels.mail.pool",
                "at least 1",
            ),
        ] {
            let (field, message) = error_of(&format!("{mail}{extra}\n{route}"));
            assert_eq!(field, at, "{extra}: {message}");
            assert!(message.contains(words), "{extra}: {message}");
        }
    }
}
