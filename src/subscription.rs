//! What a subscriber asked for: [`SubscriptionFilter`] (whose changes, of
//! which categories, types, session and statuses) and where to resume
//! ([`Cursor`]), validated from a `SubscribeRequest`.

use crate::{
    cursor::Cursor,
    domain::{
        Event, EventStatus, FieldViolation, MAX_ATTRIBUTE_BYTES, MAX_USER_ID_BYTES,
        check_identifier,
    },
    error::Error,
    pb,
};

/// Most entries a filter list (categories, types, statuses) may hold.
pub const MAX_FILTER_VALUES: usize = 64;

/// Which logged changes a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Whose changes; `None` for every user's.
    pub user_id: Option<String>,
    /// Any of these categories; empty for all ([`any_matches`]: `*` ends a prefix).
    pub categories: Vec<String>,
    /// Any of these types; empty for all ([`any_matches`]: `*` ends a prefix).
    pub types: Vec<String>,
    /// Only this session; `None` for all.
    pub session_id: Option<String>,
    /// Changes into any of these statuses (never empty; PROCESSED by default).
    pub statuses: Vec<EventStatus>,
}

impl SubscriptionFilter {
    /// Notifications (PROCESSED) of one user: the default subscription.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::everyone()
        }
    }

    /// Notifications (PROCESSED) of every user.
    pub fn everyone() -> Self {
        Self {
            user_id: None,
            categories: Vec::new(),
            types: Vec::new(),
            session_id: None,
            statuses: vec![EventStatus::Processed],
        }
    }

    /// Whether a logged change (the event as it reached its status) is for
    /// this subscriber.
    pub fn matches(&self, event: &Event) -> bool {
        self.statuses.contains(&event.status)
            && self.user_id.as_ref().is_none_or(|u| *u == event.user_id)
            && any_matches(&self.categories, &event.category)
            && any_matches(&self.types, &event.event_type)
            && self
                .session_id
                .as_ref()
                .is_none_or(|s| *s == event.session_id)
    }
}

/// Whether `value` matches `pattern`: equal to it, or, for a pattern ending
/// in `*`, starting with what comes before (`user.*` matches `user.signup`;
/// `*` alone matches anything, the empty value too).
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

/// Whether `value` matches any of `patterns` ([`pattern_matches`]), or `patterns` is
/// empty (no filter).
pub fn any_matches(patterns: &[String], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| pattern_matches(p, value))
}

/// A validated Subscribe request: the filter and where to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Which changes.
    pub filter: SubscriptionFilter,
    /// Resume after this position; `None` for live changes only.
    pub after: Option<Cursor>,
}

impl TryFrom<pb::SubscribeRequest> for SubscribeRequest {
    type Error = Error;

    fn try_from(r: pb::SubscribeRequest) -> Result<Self, Error> {
        let mut violations = Vec::new();
        let v = &mut violations;
        if !r.user_id.is_empty() {
            check_identifier(v, "user_id", &r.user_id, MAX_USER_ID_BYTES);
        }
        if !r.session_id.is_empty() {
            check_identifier(v, "session_id", &r.session_id, MAX_ATTRIBUTE_BYTES);
        }
        for (field, values) in [("categories", &r.categories), ("types", &r.types)] {
            check_count(v, field, values.len());
            for (i, value) in values.iter().enumerate() {
                check_identifier(v, &format!("{field}[{i}]"), value, MAX_ATTRIBUTE_BYTES);
            }
        }
        check_count(v, "statuses", r.statuses.len());
        let mut statuses = Vec::new();
        for (i, &value) in r.statuses.iter().enumerate() {
            match EventStatus::from_pb(value, &format!("statuses[{i}]")) {
                Ok(status) if !statuses.contains(&status) => statuses.push(status),
                Ok(_) => {}
                Err(err) => v.extend(err.into_violations()),
            }
        }
        if statuses.is_empty() {
            statuses.push(EventStatus::Processed);
        }
        let after = match r.after_cursor.as_str() {
            "" => None,
            text => match text.parse::<Cursor>() {
                Ok(cursor) => Some(cursor),
                Err(_) => {
                    v.push(FieldViolation::new(
                        "after_cursor",
                        format!(
                            "is not a cursor of this server: {}",
                            crate::error::quote(text)
                        ),
                    ));
                    None
                }
            },
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        Ok(Self {
            filter: SubscriptionFilter {
                user_id: Some(r.user_id).filter(|u| !u.is_empty()),
                categories: r.categories,
                types: r.types,
                session_id: Some(r.session_id).filter(|s| !s.is_empty()),
                statuses,
            },
            after,
        })
    }
}

fn check_count(out: &mut Vec<FieldViolation>, field: &str, n: usize) {
    if n > MAX_FILTER_VALUES {
        out.push(FieldViolation::new(
            field,
            format!("may hold at most {MAX_FILTER_VALUES} values, got {n}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewEvent;

    fn request(f: impl FnOnce(&mut pb::SubscribeRequest)) -> Result<SubscribeRequest, Error> {
        let mut r = pb::SubscribeRequest {
            user_id: "ann".into(),
            ..Default::default()
        };
        f(&mut r);
        SubscribeRequest::try_from(r)
    }

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn defaults_to_processed_notifications() {
        let r = request(|_| {}).expect("valid");
        assert_eq!(r.filter, SubscriptionFilter::user("ann"));
        assert_eq!(r.after, None);
        // Everyone's, for a dashboard.
        assert!(request(|r| r.user_id.clear()).is_ok());
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = request(|r| {
            r.categories = vec!["ok".into(), "".into()];
            r.types = vec!["t\n".into()];
            r.session_id = "s".repeat(MAX_ATTRIBUTE_BYTES + 1);
            r.statuses = vec![0, 99];
            r.after_cursor = "yesterday".into();
        })
        .expect_err("invalid");
        assert_eq!(
            fields(err),
            [
                "session_id",
                "categories[1]",
                "types[0]",
                "statuses[0]",
                "statuses[1]",
                "after_cursor"
            ]
        );
        let err = request(|r| r.types = vec!["t".into(); MAX_FILTER_VALUES + 1]).expect_err("many");
        assert_eq!(fields(err), ["types"]);
    }

    #[test]
    fn filters_apply_to_every_attribute() {
        let mut event = NewEvent::new("ann", "hi")
            .expect("valid")
            .into_event(crate::partition::Partitions::default());
        event.category = "billing".into();
        event.event_type = "invoice".into();
        event.session_id = "s1".into();
        event.status = EventStatus::Processed;
        let all = request(|r| {
            r.categories = vec!["billing".into(), "shop".into()];
            r.types = vec!["invoice".into()];
            r.session_id = "s1".into();
        })
        .expect("valid")
        .filter;
        assert!(all.matches(&event));
        let miss = |f: fn(&mut SubscriptionFilter)| {
            let mut filter = all.clone();
            f(&mut filter);
            !filter.matches(&event)
        };
        assert!(miss(|f| f.user_id = Some("bob".into())));
        assert!(miss(|f| f.categories = vec!["shop".into()]));
        assert!(miss(|f| f.types = vec!["receipt".into()]));
        assert!(miss(|f| f.types = vec!["inv*x".into()]));
        assert!(!miss(|f| f.types = vec!["inv*".into()]));
        assert!(!miss(|f| f.categories = vec!["x".into(), "bill*".into()]));
        assert!(!miss(|f| f.types = vec!["*".into()]));
        assert!(miss(|f| f.session_id = Some("s2".into())));
        assert!(miss(|f| f.statuses = vec![EventStatus::Pending]));
        let everyone = SubscriptionFilter::everyone();
        assert!(everyone.matches(&event));
    }
}
