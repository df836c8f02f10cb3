//! The dead-letter requests, read and checked: a page of ListDeadLetters,
//! and which events RedriveEvents brings back.

use uuid::Uuid;

use crate::{
    cursor::Cursor,
    domain::parse_event_id,
    error::{Error, Result},
    partition::Partitions,
    pb,
};

/// Dead letters a page holds unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most dead letters one page holds.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Most events one RedriveEvents call names (fewer if their answer would
/// not fit the message size limit).
pub const MAX_REDRIVE: usize = 1_000;

/// A ListDeadLetters request: how many, after which position.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterPage {
    /// Most dead letters in the page.
    pub size: usize,
    /// The page token: where the previous page ended (`None`: from the oldest).
    pub after: Option<Cursor>,
}

impl TryFrom<pb::ListDeadLettersRequest> for DeadLetterPage {
    type Error = Error;

    fn try_from(r: pb::ListDeadLettersRequest) -> Result<Self> {
        let size = match r.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<Cursor>().map_err(|_| not_a_token())?),
        };
        Ok(Self { size, after })
    }
}

impl DeadLetterPage {
    /// Where the page starts in a deployment of `partitions`: after the
    /// token's position, or at the start; a token of another layout is
    /// refused naming `page_token`.
    pub fn start(&self, partitions: Partitions) -> Result<Cursor> {
        match &self.after {
            None => Ok(Cursor::start(partitions)),
            Some(after) => after
                .check(partitions, "page_token")
                .map(|()| after.clone())
                .map_err(|_| not_a_token()),
        }
    }
}

fn not_a_token() -> Error {
    Error::invalid("page_token", "is not a token of this list")
}

/// Which events a RedriveEvents request brings back.
#[derive(Clone, Debug)]
pub enum RedriveRequest {
    /// The events of the oldest dead letters, as many as one answer holds.
    All,
    /// These events, each id read on its own (`event_ids[i]` names a bad one).
    Events(Vec<Result<Uuid>>),
}

impl TryFrom<pb::RedriveEventsRequest> for RedriveRequest {
    type Error = Error;

    fn try_from(r: pb::RedriveEventsRequest) -> Result<Self> {
        match (r.all, r.event_ids.is_empty()) {
            (true, true) => Ok(Self::All),
            (true, false) => Err(Error::invalid(
                "event_ids",
                "give event_ids or all, not both",
            )),
            (false, _) => Ok(Self::Events(
                r.event_ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| parse_event_id(id, &format!("event_ids[{i}]")))
                    .collect(),
            )),
        }
    }
}

impl RedriveRequest {
    /// The request, if it names 1 to `max` events (or all).
    pub fn within(self, max: usize) -> Result<Self> {
        match &self {
            Self::Events(ids) if !(1..=max).contains(&ids.len()) => Err(Error::invalid(
                "event_ids",
                format!("must hold 1 to {max} ids (or set all), got {}", ids.len()),
            )),
            _ => Ok(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: Error) -> String {
        match err {
            Error::InvalidArgument(v) => v[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pages_read_their_size_and_token() {
        let page = |size, token: &str| {
            DeadLetterPage::try_from(pb::ListDeadLettersRequest {
                page_size: size,
                page_token: token.into(),
            })
        };
        assert_eq!(page(0, "").expect("default").size, DEFAULT_PAGE_SIZE);
        assert_eq!(page(5_000, "").expect("capped").size, MAX_PAGE_SIZE);
        assert_eq!(field(page(-1, "").expect_err("negative")), "page_size");
        assert_eq!(field(page(10, "nope").expect_err("token")), "page_token");
        let partitions = Partitions::default();
        let start = Cursor::start(partitions);
        let resumed = page(10, &start.to_string()).expect("a token");
        assert_eq!(resumed.start(partitions).expect("same layout"), start);
        let other = Partitions::new(4).expect("4 partitions");
        let err = resumed.start(other).expect_err("another layout");
        assert_eq!(field(err), "page_token");
    }

    #[test]
    fn a_redrive_names_events_or_all_never_both() {
        let request = |all, ids: &[&str]| {
            RedriveRequest::try_from(pb::RedriveEventsRequest {
                all,
                event_ids: ids.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(matches!(request(true, &[]), Ok(RedriveRequest::All)));
        let id = Uuid::now_v7();
        let err = request(true, &[&id.to_string()]).expect_err("both");
        assert_eq!(field(err), "event_ids");
        let Ok(RedriveRequest::Events(ids)) = request(false, &[&id.to_string(), "x"]) else {
            panic!("events");
        };
        assert_eq!(ids[0].as_ref().ok(), Some(&id));
        assert_eq!(field(ids[1].clone().expect_err("bad id")), "event_ids[1]");
        let none = request(false, &[]).expect("read");
        assert_eq!(field(none.within(10).expect_err("empty")), "event_ids");
        let two = request(false, &[&id.to_string(), &id.to_string()]).expect("read");
        assert_eq!(
            field(two.clone().within(1).expect_err("too many")),
            "event_ids"
        );
        assert!(two.within(2).is_ok());
    }
}
