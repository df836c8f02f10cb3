//! Recipients: who a user is to the channels (their contact data) and what
//! they do not want to receive (their preferences), with the checks every
//! field passes and the conversions to and from protobuf.

use std::{fmt, time::SystemTime};

use super::*;
use crate::{error::Error, pb};

/// Longest accepted email address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest accepted name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest accepted locale tag, in bytes.
pub const MAX_LOCALE_BYTES: usize = 35;
/// Longest accepted time zone name, in bytes.
pub const MAX_TIME_ZONE_BYTES: usize = 64;
/// Largest accepted attributes object, as compact JSON, in bytes.
pub const MAX_RECIPIENT_ATTRIBUTES_BYTES: usize = 4096;
/// Most opt-outs one user's preferences hold.
pub const MAX_OPT_OUTS: usize = 100;
/// Most recipients in one PutRecipients call.
pub const MAX_BATCH_RECIPIENTS: usize = 1000;

/// How a user is reached and addressed; every field may be empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    /// Where email goes.
    pub email: String,
    /// How to address the user.
    pub name: String,
    /// The user's language (a BCP 47 tag).
    pub locale: String,
    /// The user's IANA time zone.
    pub time_zone: String,
    /// Free attributes for templates.
    pub attributes: Option<Payload>,
}

/// One opt-out: the channel, category and event type it covers (an empty
/// one covers any; at least one is given). As JSON (the end users' API, an
/// import file): `{"channel", "category", "type"}`, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptOut {
    /// A channel's name in the channels file.
    pub channel: String,
    /// An event category.
    pub category: String,
    /// An event type.
    #[serde(rename = "type")]
    pub event_type: String,
}

impl OptOut {
    /// Whether it keeps `event` from going through the channel named
    /// `channel`.
    pub fn covers(&self, channel: &str, event: &Event) -> bool {
        let matches = |wanted: &str, value: &str| wanted.is_empty() || wanted == value;
        matches(&self.channel, channel)
            && matches(&self.category, &event.category)
            && matches(&self.event_type, &event.event_type)
    }
}

impl fmt::Display for OptOut {
    /// `channel email, category marketing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("channel", &self.channel),
            ("category", &self.category),
            ("type", &self.event_type),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
        f.write_str(&parts.join(", "))
    }
}

/// What a user opts out of; empty: everything on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    /// Each kept at most once, in the order given.
    pub opt_outs: Vec<OptOut>,
}

impl Preferences {
    /// The first opt-out that keeps `event` from the channel named
    /// `channel`, if any.
    pub fn opted_out(&self, channel: &str, event: &Event) -> Option<&OptOut> {
        self.opt_outs.iter().find(|o| o.covers(channel, event))
    }

    /// Reads and checks `p`, naming fields under `field`
    /// (`preferences.opt_outs[2].channel`); an opt-out given twice is kept
    /// once.
    pub fn from_pb(p: pb::Preferences, field: &str) -> Result<Self, Error> {
        let mut violations = Vec::new();
        if p.opt_outs.len() > MAX_OPT_OUTS {
            violations.push(FieldViolation::new(
                format!("{field}.opt_outs"),
                format!("must hold at most {MAX_OPT_OUTS}, got {}", p.opt_outs.len()),
            ));
        }
        let mut opt_outs: Vec<OptOut> = Vec::with_capacity(p.opt_outs.len());
        for (i, o) in p.opt_outs.into_iter().enumerate() {
            let at = format!("{field}.opt_outs[{i}]");
            if o.channel.is_empty() && o.category.is_empty() && o.r#type.is_empty() {
                violations.push(FieldViolation::new(
                    &at,
                    "must name a channel, a category or a type",
                ));
                continue;
            }
            for (name, value) in [
                ("channel", &o.channel),
                ("category", &o.category),
                ("type", &o.r#type),
            ] {
                if !value.is_empty() {
                    check_identifier(
                        &mut violations,
                        &format!("{at}.{name}"),
                        value,
                        MAX_ATTRIBUTE_BYTES,
                    );
                }
            }
            let opt_out = OptOut {
                channel: o.channel,
                category: o.category,
                event_type: o.r#type,
            };
            if !opt_outs.contains(&opt_out) {
                opt_outs.push(opt_out);
            }
        }
        if violations.is_empty() {
            Ok(Self { opt_outs })
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// The same preferences with `opt_out` too (kept once); refused
    /// (INVALID_ARGUMENT on `preferences.opt_outs`) when they already hold
    /// [`MAX_OPT_OUTS`]: dropping one the user chose to make room would
    /// send them what they opted out of.
    pub fn with(mut self, opt_out: OptOut) -> Result<Self, Error> {
        if self.opt_outs.contains(&opt_out) {
            return Ok(self);
        }
        if self.opt_outs.len() >= MAX_OPT_OUTS {
            return Err(Error::invalid(
                "preferences.opt_outs",
                format!("holds the most opt-outs there may be ({MAX_OPT_OUTS}); remove some first"),
            ));
        }
        self.opt_outs.push(opt_out);
        Ok(self)
    }
}

impl From<pb::Preferences> for Preferences {
    /// Preferences as a server answered or stored them (checked when they
    /// were set).
    fn from(p: pb::Preferences) -> Self {
        Self {
            opt_outs: p
                .opt_outs
                .into_iter()
                .map(|o| OptOut {
                    channel: o.channel,
                    category: o.category,
                    event_type: o.r#type,
                })
                .collect(),
        }
    }
}

impl From<Preferences> for pb::Preferences {
    fn from(p: Preferences) -> Self {
        pb::Preferences {
            opt_outs: p
                .opt_outs
                .into_iter()
                .map(|o| pb::OptOut {
                    channel: o.channel,
                    category: o.category,
                    r#type: o.event_type,
                })
                .collect(),
        }
    }
}

/// A user's recipient record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The user.
    pub user_id: String,
    /// How they are reached (empty when only preferences were stored).
    pub contact: Contact,
    /// What they opt out of.
    pub preferences: Preferences,
    /// When the record last changed (microsecond precision).
    pub updated_at: SystemTime,
}

impl From<Recipient> for pb::Recipient {
    fn from(r: Recipient) -> Self {
        pb::Recipient {
            user_id: r.user_id,
            email: r.contact.email,
            name: r.contact.name,
            locale: r.contact.locale,
            time_zone: r.contact.time_zone,
            attributes: r.contact.attributes.as_ref().map(json_to_struct),
            preferences: Some(r.preferences.into()),
            updated_at: Some(r.updated_at.into()),
        }
    }
}

impl Recipient {
    /// A record as a server answered or stored it (checked when it was
    /// put): its contact data and preferences, changed at `updated_at`.
    pub fn from_pb(r: pb::Recipient) -> Self {
        let updated_at = r
            .updated_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Self {
            user_id: r.user_id,
            contact: Contact {
                email: r.email,
                name: r.name,
                locale: r.locale,
                time_zone: r.time_zone,
                attributes: r.attributes.map(struct_to_json),
            },
            preferences: r.preferences.map(Into::into).unwrap_or_default(),
            updated_at,
        }
    }
}

impl OptOut {
    /// The opt-out as one JSON object (`channel`, `category`, `type`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "channel": self.channel,
            "category": self.category,
            "type": self.event_type,
        })
    }
}

impl Recipient {
    /// The record as one JSON object (field names as in the protobuf
    /// message, the time in RFC 3339): what `herald recipients get --json`
    /// prints and `herald recipients import` reads.
    pub fn to_json(&self) -> serde_json::Value {
        let opt_outs: Vec<serde_json::Value> = self
            .preferences
            .opt_outs
            .iter()
            .map(OptOut::to_json)
            .collect();
        serde_json::json!({
            "user_id": self.user_id,
            "email": self.contact.email,
            "name": self.contact.name,
            "locale": self.contact.locale,
            "time_zone": self.contact.time_zone,
            "attributes": self.contact.attributes,
            "opt_outs": opt_outs,
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

/// A checked PutRecipient: the contact data, and the preferences if the
/// request carried them (else the stored ones stay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientUpdate {
    /// The user.
    pub user_id: String,
    /// The new contact data.
    pub contact: Contact,
    /// The new preferences, if given.
    pub preferences: Option<Preferences>,
}

impl RecipientUpdate {
    /// Reads and checks `r` (every problem reported, each naming its
    /// field as the message does: `email`, `preferences.opt_outs[0]`); a
    /// time zone is kept as the time zone database spells it.
    pub fn from_pb(r: pb::Recipient) -> Result<Self, Error> {
        let mut violations = Vec::new();
        let v = &mut violations;
        check_identifier(v, "user_id", &r.user_id, MAX_USER_ID_BYTES);
        if !r.email.is_empty() {
            check_email(v, "email", &r.email);
        }
        if !r.name.is_empty() {
            check_text(v, "name", &r.name, MAX_NAME_BYTES);
        }
        if !r.locale.is_empty() {
            check_locale(v, "locale", &r.locale);
        }
        let time_zone = if r.time_zone.is_empty() {
            String::new()
        } else {
            check_time_zone(v, "time_zone", &r.time_zone).unwrap_or_default()
        };
        let attributes = match r.attributes {
            Some(s) => {
                if let Some(path) = non_finite_number(&s, "attributes") {
                    v.push(FieldViolation::new(
                        path,
                        "must be a finite number (JSON has no NaN or infinity)",
                    ));
                    None
                } else {
                    let map = struct_to_json(s);
                    check_json_limits(v, "attributes", &map, MAX_RECIPIENT_ATTRIBUTES_BYTES);
                    Some(map)
                }
            }
            None => None,
        };
        let preferences = match r.preferences {
            Some(p) => match Preferences::from_pb(p, "preferences") {
                Ok(p) => Some(p),
                Err(err) => {
                    v.extend(err.into_violations());
                    None
                }
            },
            None => None,
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        Ok(Self {
            user_id: r.user_id,
            contact: Contact {
                email: r.email,
                name: r.name,
                locale: r.locale,
                time_zone,
                attributes,
            },
            preferences,
        })
    }
}

/// Checks a PutRecipients request: its size (else INVALID_ARGUMENT on
/// `recipients`), then each recipient on its own, with field names like
/// `recipients[3].email`.
pub fn parse_batch_recipients(
    r: pb::PutRecipientsRequest,
) -> Result<Vec<Result<RecipientUpdate, Error>>, Error> {
    check_batch_size("recipients", r.recipients.len(), MAX_BATCH_RECIPIENTS)?;
    Ok(r.recipients
        .into_iter()
        .enumerate()
        .map(|(i, r)| within(&format!("recipients[{i}]"), RecipientUpdate::from_pb(r)))
        .collect())
}

/// An addr-spec (`ann@example.com`, no display name), one line, at most
/// [`MAX_EMAIL_BYTES`].
fn check_email(out: &mut Vec<FieldViolation>, field: &str, value: &str) {
    let before = out.len();
    check_text(out, field, value, MAX_EMAIL_BYTES);
    if out.len() > before {
        return;
    }
    let options = email_address::Options::default().without_display_text();
    if let Err(err) = email_address::EmailAddress::parse_with_options(value, options) {
        out.push(FieldViolation::new(
            field,
            format!("must be an email address such as ann@example.com: {err}"),
        ));
    }
}

/// A BCP 47 language tag by its shape: a language of 2 to 3 letters (or 5
/// to 8), then subtags of 1 to 8 letters and digits, joined by `-`.
fn check_locale(out: &mut Vec<FieldViolation>, field: &str, value: &str) {
    let mut subtags = value.split('-');
    let language = subtags.next().unwrap_or_default();
    let well_formed = value.len() <= MAX_LOCALE_BYTES
        && matches!(language.len(), 2..=3 | 5..=8)
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !well_formed {
        let hint = if value.contains('_') {
            " (subtags are joined by '-', not '_')"
        } else {
            ""
        };
        out.push(FieldViolation::new(
            field,
            format!(
                "must be a BCP 47 language tag such as en or pt-BR, at most \
                 {MAX_LOCALE_BYTES} bytes{hint}"
            ),
        ));
    }
}

/// An IANA time zone name the time zone database knows (`Europe/Paris`,
/// `UTC`): the name as the database spells it.
fn check_time_zone(out: &mut Vec<FieldViolation>, field: &str, value: &str) -> Option<String> {
    let known = (value.len() <= MAX_TIME_ZONE_BYTES)
        .then(|| jiff::tz::db().get(value).ok())
        .flatten();
    match known {
        Some(zone) => Some(zone.iana_name().unwrap_or(value).to_owned()),
        None => {
            out.push(FieldViolation::new(
                field,
                "must be an IANA time zone name such as Europe/Paris or UTC",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Partitions;

    fn recipient(edit: impl FnOnce(&mut pb::Recipient)) -> Result<RecipientUpdate, Error> {
        let mut r = pb::Recipient {
            user_id: "ann".into(),
            email: "ann@example.com".into(),
            name: "Ann Lee".into(),
            locale: "pt-BR".into(),
            time_zone: "europe/paris".into(),
            ..Default::default()
        };
        edit(&mut r);
        RecipientUpdate::from_pb(r)
    }

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_good_recipient_is_kept_with_its_zone_spelled_as_the_database_does() {
        let r = recipient(|_| {}).expect("valid");
        assert_eq!(r.contact.time_zone, "Europe/Paris");
        assert_eq!(r.preferences, None);
        let bare = recipient(|r| {
            r.email.clear();
            r.name.clear();
            r.locale.clear();
            r.time_zone = "UTC".into();
        })
        .expect("only the user is required");
        assert_eq!(bare.contact.time_zone, "UTC");
    }

    #[test]
    fn every_bad_field_is_named() {
        type Edit = fn(&mut pb::Recipient);
        let cases: [(&str, Edit); 9] = [
            ("user_id", |r| r.user_id = " ".into()),
            ("email", |r| r.email = "ann".into()),
            ("email", |r| r.email = "Ann <ann@example.com>".into()),
            ("email", |r| {
                r.email = "ann@example.com\r\nBcc: x@y.z".into()
            }),
            ("name", |r| r.name = "a\nb".into()),
            ("locale", |r| r.locale = "pt_BR".into()),
            ("locale", |r| r.locale = "e".into()),
            ("time_zone", |r| r.time_zone = "Mars/Olympus".into()),
            ("preferences.opt_outs[0]", |r| {
                r.preferences = Some(pb::Preferences {
                    opt_outs: vec![pb::OptOut::default()],
                })
            }),
        ];
        for (field, edit) in cases {
            let err = recipient(edit).expect_err(field);
            assert_eq!(fields(err), [field]);
        }
        let big = recipient(|r| {
            let long = "x".repeat(MAX_RECIPIENT_ATTRIBUTES_BYTES);
            r.attributes = Some(json_to_struct(
                serde_json::json!({ "a": long })
                    .as_object()
                    .expect("object"),
            ));
        })
        .expect_err("too big");
        assert_eq!(fields(big), ["attributes"]);
        let all = recipient(|r| {
            r.email = "nope".into();
            r.locale = "!".into();
        })
        .expect_err("two problems");
        assert_eq!(fields(all), ["email", "locale"]);
    }

    #[test]
    fn batches_name_the_item_and_refuse_a_bad_size() {
        let items = parse_batch_recipients(pb::PutRecipientsRequest {
            recipients: vec![
                pb::Recipient {
                    user_id: "a".into(),
                    ..Default::default()
                },
                pb::Recipient {
                    user_id: "b".into(),
                    email: "bad".into(),
                    ..Default::default()
                },
            ],
        })
        .expect("size ok");
        assert!(items[0].is_ok());
        let err = items[1].clone().expect_err("bad email");
        assert_eq!(fields(err), ["recipients[1].email"]);
        let empty = parse_batch_recipients(pb::PutRecipientsRequest::default()).expect_err("empty");
        assert_eq!(fields(empty), ["recipients"]);
    }

    #[test]
    fn opt_outs_cover_what_they_name() {
        let mut event = NewEvent::new("ann", "hi")
            .expect("valid")
            .into_event(Partitions::default());
        event.category = "marketing".into();
        event.event_type = "promo.sent".into();
        let prefs = Preferences::from_pb(
            pb::Preferences {
                opt_outs: vec![
                    pb::OptOut {
                        channel: "email".into(),
                        category: "marketing".into(),
                        ..Default::default()
                    },
                    pb::OptOut {
                        r#type: "digest".into(),
                        ..Default::default()
                    },
                    pb::OptOut {
                        channel: "email".into(),
                        category: "marketing".into(),
                        ..Default::default()
                    },
                ],
            },
            "preferences",
        )
        .expect("valid");
        assert_eq!(prefs.opt_outs.len(), 2, "the same opt-out is kept once");
        assert_eq!(
            prefs.opted_out("email", &event).map(ToString::to_string),
            Some("channel email, category marketing".to_owned())
        );
        assert_eq!(prefs.opted_out("hooks", &event), None);
        event.category = "billing".into();
        assert_eq!(prefs.opted_out("email", &event), None);
        event.event_type = "digest".into();
        assert!(prefs.opted_out("hooks", &event).is_some());
        let category = |i: usize| OptOut {
            category: format!("c{i}"),
            ..Default::default()
        };
        let full = (0..MAX_OPT_OUTS).fold(Preferences::default(), |p, i| {
            p.with(category(i)).expect("room")
        });
        assert_eq!(full.opt_outs.len(), MAX_OPT_OUTS);
        let again = full.clone().with(category(0)).expect("already there");
        assert_eq!(again, full, "an opt-out held already changes nothing");
        let refused = full.with(category(MAX_OPT_OUTS)).expect_err("full");
        assert_eq!(
            refused.into_violations()[0].field,
            "preferences.opt_outs",
            "none the user chose gives way"
        );
    }
}
