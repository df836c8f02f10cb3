//! Tests of the domain rules.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::*;
use crate::{error::Error, pb};

#[test]
fn a_set_of_statuses_holds_what_it_was_given() {
    let some: Statuses = [EventStatus::Processed, EventStatus::Processed]
        .into_iter()
        .collect();
    assert!(some.contains(EventStatus::Processed));
    assert!(!some.contains(EventStatus::Pending));
    assert!(Statuses::ALL.covers(some));
    assert!(some.covers(Statuses::NONE));
    assert!(!some.covers(Statuses::ALL));
    assert_eq!(
        EventStatus::ALL.into_iter().collect::<Statuses>(),
        Statuses::ALL
    );
}

fn fields(err: Error) -> Vec<String> {
    err.into_violations().into_iter().map(|v| v.field).collect()
}

#[test]
fn valid_event_is_accepted() {
    let e = NewEvent::new("alice", "Welcome to Herald").expect("valid");
    assert_eq!(e.user_id(), "alice");
    let stored = e.into_event(crate::partition::Partitions::default());
    assert_eq!(stored.status, EventStatus::Pending);
    assert_eq!(stored.id.get_version_num(), 7);
    assert_eq!(stored.created_at, stored.updated_at);
}

#[test]
fn each_bad_field_is_named() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("", "hi", &["user_id"]),
        ("   ", "hi", &["user_id"]),
        ("bob", "", &["description"]),
        ("bob", " \n\t ", &["description"]),
        ("", "", &["user_id", "description"]),
        ("bo\nb", "hi", &["user_id"]),
        ("bob", "bell\u{7}", &["description"]),
        ("bob", "two\nlines", &["description"]),
    ];
    for (user, desc, want) in cases {
        let err = NewEvent::new(*user, *desc).expect_err("must be rejected");
        assert_eq!(fields(err), *want, "user={user:?} desc={desc:?}");
    }
}

#[test]
fn length_limits_are_inclusive() {
    let max_user = "u".repeat(MAX_USER_ID_BYTES);
    let max_desc = "d".repeat(MAX_DESCRIPTION_BYTES);
    assert!(NewEvent::new(max_user.clone(), max_desc.clone()).is_ok());
    let err = NewEvent::new(max_user + "u", max_desc + "d").expect_err("too long");
    assert_eq!(fields(err), ["user_id", "description"]);
    // Bytes, not characters: 129 two-byte characters are 258 bytes.
    assert!(NewEvent::new("é".repeat(129), "x").is_err());
}

fn input() -> EventInput {
    EventInput {
        user_id: "u".into(),
        description: "d".into(),
        ..EventInput::default()
    }
}

fn check(input: EventInput, rules: &Rules) -> Vec<String> {
    NewEvent::validate(input, rules)
        .err()
        .map(fields)
        .unwrap_or_default()
}

#[test]
fn invisible_values_are_blank_and_line_breakers_are_refused() {
    let rules = Rules::default();
    for blank in ["\u{200B}", " \u{FEFF}\u{2060} ", "\u{00AD}", "\t\u{3000}"] {
        let input = EventInput {
            user_id: blank.into(),
            ..input()
        };
        let err = NewEvent::validate(input, &rules).expect_err("blank");
        assert_eq!(
            err.into_violations()[0].description,
            "is required and must not be blank",
            "{blank:?}"
        );
    }
    for breaker in [
        '\u{202E}', '\u{2028}', '\u{2029}', '\u{2066}', '\u{0085}', '\n',
    ] {
        let input = EventInput {
            description: format!("left {breaker} right"),
            ..input()
        };
        let err = NewEvent::validate(input, &rules).expect_err("not one line");
        let v = &err.into_violations()[0];
        assert_eq!(v.field, "description");
        assert!(
            v.description.contains("one line"),
            "{breaker:?}: {}",
            v.description
        );
    }
    // Letters of other scripts, marks and emoji (with a zero-width joiner) stay.
    let fine = EventInput {
        description: "שלום \u{200F}مرحبا 👩\u{200D}💻 café".into(),
        ..input()
    };
    NewEvent::validate(fine, &rules).expect("one line, not blank");
}

#[test]
fn numbers_json_cannot_hold_and_invalid_timestamps_are_refused() {
    use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
    let number = |n: f64| Value {
        kind: Some(Kind::NumberValue(n)),
    };
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let list = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![number(1.0), number(bad)],
            })),
        };
        let request = pb::CreateEventRequest {
            user_id: "u".into(),
            description: "d".into(),
            payload: Some(Struct {
                fields: [("a".to_owned(), list)].into(),
            }),
            ..Default::default()
        };
        let err = EventInput::try_from(request).expect_err("not JSON");
        assert_eq!(fields(err), ["payload.a[1]"]);
    }
    for (seconds, nanos) in [
        (0, 2_000_000_000),
        (0, -1),
        (i64::MAX, 0),
        (-62_135_596_801, 0),
    ] {
        let request = pb::CreateEventRequest {
            user_id: "u".into(),
            description: "d".into(),
            occurred_at: Some(Timestamp { seconds, nanos }),
            ..Default::default()
        };
        let err = EventInput::try_from(request).expect_err("invalid timestamp");
        assert_eq!(fields(err), ["occurred_at"], "{seconds} {nanos}");
    }
    let edge = parse_timestamp(
        Timestamp {
            seconds: 1,
            nanos: 999_999_999,
        },
        "t",
    );
    assert!(edge.is_ok());
}

#[test]
fn optional_attributes_are_bounded_and_one_line() {
    let rules = Rules::default();
    let full = EventInput {
        category: "page interaction".into(),
        event_type: "pageview".into(),
        session_id: "s".repeat(MAX_ATTRIBUTE_BYTES),
        request_id: "r-1".into(),
        ..input()
    };
    assert!(check(full.clone(), &rules).is_empty());
    let bad = EventInput {
        category: "c".repeat(MAX_ATTRIBUTE_BYTES + 1),
        event_type: "page\nview".into(),
        session_id: "  ".into(),
        request_id: "r".repeat(MAX_ATTRIBUTE_BYTES + 1),
        ..full
    };
    assert_eq!(
        check(bad, &rules),
        ["category", "type", "session_id", "request_id"]
    );
}

#[test]
fn payload_limits_are_checked() {
    let rules = Rules::default();
    let payload = |v: serde_json::Value| EventInput {
        payload: v.as_object().cloned(),
        ..input()
    };
    let mut deep = serde_json::json!(1);
    for _ in 0..=MAX_PAYLOAD_DEPTH {
        deep = serde_json::json!({ "x": deep });
    }
    assert_eq!(
        check(payload(deep.clone()), &rules),
        ["payload"],
        "one level too deep"
    );
    assert!(
        check(payload(deep["x"].clone()), &rules).is_empty(),
        "exactly the deepest allowed"
    );
    let many: serde_json::Map<_, _> = (0..=MAX_PAYLOAD_KEYS)
        .map(|i| (format!("k{i}"), serde_json::json!(i)))
        .collect();
    assert_eq!(
        check(payload(serde_json::Value::Object(many)), &rules),
        ["payload"]
    );
    let big = serde_json::json!({ "text": "x".repeat(MAX_PAYLOAD_BYTES) });
    assert_eq!(check(payload(big), &rules), ["payload"]);
}

#[test]
fn occurred_at_bounds_are_inclusive_of_the_allowed_window() {
    let rules = Rules {
        max_future_skew: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        ..Rules::default()
    };
    let at = |t: SystemTime| EventInput {
        occurred_at: Some(t),
        ..input()
    };
    let now = SystemTime::now();
    assert!(check(at(now + Duration::from_secs(50)), &rules).is_empty());
    assert!(check(at(now - Duration::from_secs(3500)), &rules).is_empty());
    let ahead = NewEvent::validate(at(now + Duration::from_secs(70)), &rules).expect_err("ahead");
    let v = ahead.into_violations();
    assert_eq!(v[0].field, "occurred_at");
    assert!(
        v[0].description.starts_with("invalid timestamp: "),
        "{}",
        v[0].description
    );
    assert_eq!(
        check(at(now - Duration::from_secs(3700)), &rules),
        ["occurred_at"]
    );
    let stored = NewEvent::validate(at(now - Duration::from_secs(10)), &rules)
        .expect("valid")
        .into_event(crate::partition::Partitions::default());
    assert_eq!(
        to_micros(stored.occurred_at),
        to_micros(now - Duration::from_secs(10))
    );
    assert!(stored.occurred_at < stored.created_at);
}

#[test]
fn unknown_types_are_accepted_unless_rejected() {
    let typed = EventInput {
        event_type: "signup".into(),
        ..input()
    };
    assert!(check(typed.clone(), &Rules::default()).is_empty());
    let strict = Rules {
        reject_unknown_types: true,
        ..Rules::default()
    };
    assert_eq!(check(typed, &strict), ["type"]);
    assert!(
        check(input(), &strict).is_empty(),
        "no type, nothing to look up"
    );
}

#[test]
fn payloads_round_trip_through_struct() {
    let payload = serde_json::json!({
        "host": "example.com", "n": 1.5, "ok": true, "none": null,
        "form": { "first_name": "Ada", "tags": ["a", 2] }
    });
    let map = payload.as_object().cloned().expect("object");
    assert_eq!(struct_to_json(json_to_struct(&map)), map);
}

#[test]
fn lifecycle_allows_exactly_the_designed_transitions() {
    use EventStatus::*;
    let allowed = [
        (Pending, Processed),
        (Processed, Opened),
        (Pending, Failed),
        (Failed, Pending),
        (Scheduled, Pending),
        (Scheduled, Cancelled),
    ];
    for from in EventStatus::ALL {
        for to in EventStatus::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
    assert_eq!(Pending.sources().collect::<Vec<_>>(), [Failed, Scheduled]);
    assert_eq!(Cancelled.sources().collect::<Vec<_>>(), [Scheduled]);
    assert_eq!(Processed.sources().collect::<Vec<_>>(), [Pending]);
}

#[test]
fn status_names_round_trip() {
    for (i, s) in EventStatus::ALL.into_iter().enumerate() {
        assert_eq!(s.index(), i);
        assert_eq!(EventStatus::parse(s.as_str()), Some(s));
        assert_eq!(EventStatus::parse(&s.as_str().to_lowercase()), Some(s));
        assert_eq!(
            EventStatus::from_pb(s.to_pb() as i32, "status").ok(),
            Some(s)
        );
    }
    assert!(EventStatus::parse("done").is_none());
    assert_eq!(
        EventStatus::parse("EVENT_STATUS_OPENED"),
        Some(EventStatus::Opened)
    );
    assert_eq!(
        EventStatus::parse("event_status_failed"),
        Some(EventStatus::Failed)
    );
    assert!(EventStatus::parse("EVENT_STATUS_").is_none());
    assert_eq!(
        fields(EventStatus::from_pb(0, "status").expect_err("unspecified")),
        ["status"]
    );
    assert_eq!(
        fields(EventStatus::from_pb(42, "status").expect_err("unknown")),
        ["status"]
    );
}

#[test]
fn update_request_reports_every_bad_field() {
    let err = StatusChange::try_from(pb::UpdateStatusRequest {
        event_id: "nope".into(),
        status: 0,
        traceparent: "00-nope".into(),
    })
    .expect_err("invalid");
    assert_eq!(fields(err), ["event_id", "status", "traceparent"]);
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let change = StatusChange::try_from(pb::UpdateStatusRequest {
        event_id: Uuid::now_v7().to_string(),
        status: 2,
        traceparent: traced.into(),
    })
    .expect("valid");
    assert_eq!(change.trace.map(|t| t.to_string()).as_deref(), Some(traced));
    assert_eq!(pb::UpdateStatusRequest::from(change).traceparent, traced);
}

#[test]
fn batch_requests_are_sized_and_checked_per_item() {
    let item = |id: &str, status: i32| pb::UpdateStatusRequest {
        event_id: id.into(),
        status,
        ..Default::default()
    };
    let empty = pb::BatchUpdateStatusRequest::default();
    assert_eq!(
        fields(parse_batch_changes(empty, MAX_BATCH_CHANGES).expect_err("empty")),
        ["requests"]
    );
    let too_many = pb::BatchUpdateStatusRequest {
        requests: vec![item("x", 1); MAX_BATCH_CHANGES + 1],
        ..Default::default()
    };
    assert_eq!(
        fields(parse_batch_changes(too_many, MAX_BATCH_CHANGES).expect_err("too many")),
        ["requests"]
    );

    let id = Uuid::now_v7();
    let request = pb::BatchUpdateStatusRequest {
        requests: vec![
            item(&id.to_string(), 2),
            item("bad", 2),
            item(&id.to_string(), 0),
        ],
        ..Default::default()
    };
    let items = parse_batch_changes(request, MAX_BATCH_CHANGES).expect("sized right");
    assert_eq!(
        items[0].as_ref().expect("valid").status,
        EventStatus::Processed
    );
    let fields_of = |r: &Result<StatusChange, Error>| fields(r.clone().expect_err("invalid"));
    assert_eq!(fields_of(&items[1]), ["requests[1].event_id"]);
    assert_eq!(fields_of(&items[2]), ["requests[2].status"]);
}

#[test]
fn event_round_trips_through_protobuf() {
    let input = EventInput {
        category: "c".into(),
        event_type: "t".into(),
        session_id: "s".into(),
        payload: serde_json::json!({"k": "v"}).as_object().cloned(),
        occurred_at: Some(SystemTime::now() - Duration::from_secs(5)),
        request_id: "r".into(),
        ..input()
    };
    let e = NewEvent::validate(input, &Rules::default())
        .expect("valid")
        .with_source("app")
        .into_event(crate::partition::Partitions::default());
    let back = Event::try_from(pb::Event::from(e.clone())).expect("well-formed");
    assert_eq!(back, e);
}

#[test]
fn micros_round_trip_before_and_after_epoch() {
    for m in [0, 1, -1, 1_700_000_000_123_456, -5_000_000] {
        assert_eq!(to_micros(from_micros(m)), m);
    }
}
