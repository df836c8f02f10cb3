//! An email channel's templates: a folder of files named after the event
//! type they render (`user.created.subject`, `user.created.txt`,
//! `user.created.html`), with localised variants (`user.created.fr.subject`)
//! and `default.*` for types without their own, rendered with minijinja.
//! HTML templates escape every value. Every template is compiled and
//! rendered once with a sample event when the channels file is loaded, so
//! one that cannot render is refused there, naming the file and line.

use std::{collections::BTreeSet, path::Path};

use herald::{Event, domain::Recipient};
use minijinja::{AutoEscape, Environment, Value};
use serde_json::json;

use crate::channels::SettingError;

/// The parts of one message, by file suffix.
const SUBJECT: &str = "subject";
const TEXT: &str = "txt";
const HTML: &str = "html";

/// Largest template file, in bytes.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// A loaded folder of templates.
pub struct Templates {
    env: Environment<'static>,
    /// The names of the sets (`user.created`, `user.created.fr`, `default`)
    /// that have both a subject and a text body.
    sets: BTreeSet<String>,
}

/// One message, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body, if the set has one.
    pub html: Option<String>,
}

impl Templates {
    /// Loads and checks every template of `dir` (the setting `templates`):
    /// each set has a `.subject` and a `.txt` (an `.html` is optional),
    /// and each compiles and renders a sample event.
    pub fn load(dir: &Path) -> Result<Self, SettingError> {
        let bad = |message: String| SettingError::new("templates", message);
        let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        let mut parts: BTreeSet<(String, String)> = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("{}: {e}", dir.display())))?;
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()).map(str::to_owned) else {
                continue;
            };
            let Some((set, part)) = file.rsplit_once('.') else {
                continue;
            };
            if ![SUBJECT, TEXT, HTML].contains(&part) || file.starts_with('.') {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if size > MAX_TEMPLATE_BYTES {
                return Err(bad(format!(
                    "{file}: larger than {MAX_TEMPLATE_BYTES} bytes"
                )));
            }
            let source = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            env.add_template_owned(file.clone(), source)
                .map_err(|e| bad(describe(&file, &e)))?;
            parts.insert((set.to_owned(), part.to_owned()));
        }
        let mut sets = BTreeSet::new();
        for (set, part) in &parts {
            let has = |p: &str| parts.contains(&(set.clone(), p.to_owned()));
            if !has(SUBJECT) || !has(TEXT) {
                return Err(bad(format!(
                    "{set}.{part}: a template needs both {set}.subject and {set}.txt"
                )));
            }
            sets.insert(set.clone());
        }
        if sets.is_empty() {
            return Err(bad(format!(
                "{}: no templates (files such as default.subject and default.txt)",
                dir.display()
            )));
        }
        let templates = Self { env, sets };
        let sample = sample_context();
        for set in &templates.sets {
            templates.render_set(set, &sample).map_err(bad)?;
        }
        Ok(templates)
    }

    /// The message for `event` to `recipient`, from the set of its type
    /// (else `default`) in the recipient's locale (`pt-BR`, then `pt`,
    /// then none); `None` when no set applies.
    pub fn render(
        &self,
        event: &Event,
        recipient: Option<&Recipient>,
        links: Value,
    ) -> Option<Result<Rendered, String>> {
        let locale = recipient.map(|r| r.contact.locale.as_str()).unwrap_or("");
        let set = self.choose(&event.event_type, locale)?;
        let context = context(event, recipient, links);
        Some(self.render_set(&set, &context))
    }

    /// The set for `event_type` in `locale`: the most precise that exists.
    fn choose(&self, event_type: &str, locale: &str) -> Option<String> {
        let language = locale.split('-').next().unwrap_or_default();
        let mut candidates = Vec::with_capacity(6);
        for name in [event_type, "default"] {
            if name.is_empty() {
                continue;
            }
            for variant in [locale, language] {
                if !variant.is_empty() {
                    candidates.push(format!("{name}.{variant}"));
                }
            }
            candidates.push(name.to_owned());
        }
        candidates.into_iter().find(|c| self.sets.contains(c))
    }

    fn render_set(&self, set: &str, context: &Value) -> Result<Rendered, String> {
        let render = |part: &str| -> Result<String, String> {
            let name = format!("{set}.{part}");
            let template = self
                .env
                .get_template(&name)
                .map_err(|e| describe(&name, &e))?;
            template.render(context).map_err(|e| describe(&name, &e))
        };
        let subject = render(SUBJECT)?;
        Ok(Rendered {
            // A header is one line.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: render(TEXT)?,
            html: match self.env.get_template(&format!("{set}.{HTML}")) {
                Ok(_) => Some(render(HTML)?),
                Err(_) => None,
            },
        })
    }
}

/// A template error as `file, line N: what`.
fn describe(file: &str, err: &minijinja::Error) -> String {
    let at = err
        .line()
        .map(|line| format!("{file}, line {line}"))
        .unwrap_or_else(|| file.to_owned());
    let detail = err.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!("{at}: {}{detail}", err.kind())
}

/// What a template sees: `event` (its fields as a webhook posts them),
/// `payload` (the event's, or an empty object), `recipient` (contact
/// data, if any) and `links` (the unsubscribe link, when the channel has
/// one).
fn context(event: &Event, recipient: Option<&Recipient>, links: Value) -> Value {
    let recipient = recipient.map_or(serde_json::Value::Null, |r| {
        json!({
            "user_id": r.user_id,
            "email": r.contact.email,
            "name": r.contact.name,
            "locale": r.contact.locale,
            "time_zone": r.contact.time_zone,
            "attributes": r.contact.attributes,
        })
    });
    minijinja::context! {
        event => Value::from_serialize(event.to_json()),
        payload => Value::from_serialize(event.payload.clone().unwrap_or_default()),
        recipient => Value::from_serialize(recipient),
        links => links,
    }
}

/// A sample event and recipient, to render every template once at load.
fn sample_context() -> Value {
    let event = herald::NewEvent::new("sample-user", "A sample notification")
        .expect("a valid sample")
        .into_event(herald::partition::Partitions::default());
    let recipient = Recipient {
        user_id: "sample-user".into(),
        contact: herald::domain::Contact {
            email: "sample@example.com".into(),
            name: "Sample".into(),
            ..Default::default()
        },
        preferences: Default::default(),
        updated_at: herald::domain::now(),
    };
    context(
        &event,
        Some(&recipient),
        minijinja::context! { unsubscribe => "https://example.com/unsubscribe" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    fn event(event_type: &str, payload: serde_json::Value) -> Event {
        let mut e = herald::NewEvent::new("ann", "Welcome aboard")
            .expect("valid")
            .into_event(herald::partition::Partitions::default());
        e.event_type = event_type.into();
        e.payload = payload.as_object().cloned();
        e
    }

    fn ann(locale: &str) -> Recipient {
        Recipient {
            user_id: "ann".into(),
            contact: herald::domain::Contact {
                name: "Ann".into(),
                locale: locale.into(),
                ..Default::default()
            },
            preferences: Default::default(),
            updated_at: herald::domain::now(),
        }
    }

    #[test]
    fn the_type_and_locale_choose_the_set_and_html_escapes_values() {
        let dir = folder(&[
            ("user.created.subject", "Welcome, {{ recipient.name }}!\n"),
            ("user.created.txt", "Hello {{ payload.plan }}"),
            ("user.created.html", "<p>{{ payload.plan }}</p>"),
            (
                "user.created.fr.subject",
                "Bienvenue, {{ recipient.name }} !",
            ),
            ("user.created.fr.txt", "Bonjour"),
            ("default.subject", "{{ event.description }}"),
            ("default.txt", "{{ event.type }}"),
            ("notes.md", "not a template"),
        ]);
        let t = Templates::load(dir.path()).expect("valid");
        let links = Value::from(());
        let plan = json!({"plan": "<b>pro</b>"});
        let en = t
            .render(
                &event("user.created", plan.clone()),
                Some(&ann("en-GB")),
                links.clone(),
            )
            .expect("a set")
            .expect("renders");
        assert_eq!(en.subject, "Welcome, Ann!");
        assert_eq!(en.text, "Hello <b>pro</b>", "text is not escaped");
        assert_eq!(
            en.html.as_deref(),
            Some("<p>&lt;b&gt;pro&lt;&#x2f;b&gt;</p>")
        );
        let fr = t
            .render(
                &event("user.created", plan),
                Some(&ann("fr-CA")),
                links.clone(),
            )
            .expect("a set")
            .expect("renders");
        assert_eq!((fr.subject.as_str(), fr.html), ("Bienvenue, Ann !", None));
        let other = t
            .render(&event("order.paid", json!({})), None, links)
            .expect("the default")
            .expect("renders");
        assert_eq!(
            (other.subject.as_str(), other.text.as_str()),
            ("Welcome aboard", "order.paid")
        );
    }

    #[test]
    fn a_template_that_cannot_render_is_refused_naming_file_and_line() {
        let broken = folder(&[
            ("default.subject", "ok"),
            (
                "default.txt",
                "line one\n{{ event.description | nosuchfilter }}",
            ),
        ]);
        let err = Templates::load(broken.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("default.txt, line 2"), "{err}");
        let syntax = folder(&[("default.subject", "{% if %}"), ("default.txt", "x")]);
        let err = Templates::load(syntax.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("default.subject, line 1"), "{err}");
        let half = folder(&[("welcome.subject", "hi")]);
        let err = Templates::load(half.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("welcome.txt"), "{err}");
    }
}
