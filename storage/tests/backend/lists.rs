//! ListEvents' queries and their pages.

use super::*;

/// Events of three users over two sessions, occurring out of creation order,
/// two of them at the same instant (ties break by id).
async fn seed(b: &Backend) -> Vec<herald::Event> {
    let base = std::time::SystemTime::now() - Duration::from_secs(3600);
    let specs = [
        ("ada", "s1", "pageview", 50),
        ("ada", "s1", "cta click", 10),
        ("ada", "s2", "pageview", 30),
        ("bob", "s3", "pageview", 30),
        ("bob", "s3", "form interaction", 20),
        ("cy", "", "", 40),
        ("ada", "s1", "pageview", 30),
    ];
    let inputs = specs
        .iter()
        .map(|(user, session, kind, secs)| {
            let input = EventInput {
                user_id: (*user).into(),
                description: format!("{kind} at {secs}"),
                category: if kind.is_empty() {
                    String::new()
                } else {
                    "page interaction".into()
                },
                event_type: (*kind).into(),
                session_id: (*session).into(),
                occurred_at: Some(base + Duration::from_secs(*secs)),
                ..EventInput::default()
            };
            NewEvent::validate(input, &Rules::default()).expect("valid")
        })
        .collect();
    let mut events = store_all(b, inputs).await;
    for i in [0, 3] {
        events[i] = b
            .store
            .update_status(events[i].id, EventStatus::Processed)
            .await
            .expect("processed");
    }
    events
}

/// What `q` finds among `events`, all of it in one page, by the
/// reference order that every backend must follow.
fn reference(q: &ListQuery, events: &[herald::Event]) -> Vec<herald::Event> {
    let all = ListQuery {
        page_size: usize::MAX,
        ..q.clone()
    };
    page_of(&all, events.to_vec()).events
}

/// The ids of `events`, in their order.
pub(super) fn ids(events: &[herald::Event]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

pub(super) async fn list_queries_follow_the_reference_order(b: Backend) {
    let events = seed(&b).await;
    let cases: Vec<ListQuery> = vec![
        query(|_| {}),
        query(|r| r.user_id = "ada".into()),
        query(|r| r.session_id = "s1".into()),
        query(|r| r.r#type = "pageview".into()),
        query(|r| r.category = "page interaction".into()),
        query(|r| r.status = EventStatus::Processed.to_pb() as i32),
        query(|r| r.status = EventStatus::Pending.to_pb() as i32),
        query(|r| r.user_id = "nobody".into()),
        query(|r| r.status = EventStatus::Failed.to_pb() as i32),
        query(|r| {
            r.user_id = "ada".into();
            r.r#type = "pageview".into();
            r.order_by = "occurred_at desc".into();
        }),
        query(|r| {
            r.occurred_after = Some((events[6].occurred_at).into());
            r.occurred_before = Some((events[0].occurred_at).into());
        }),
    ];
    for q in cases {
        let expected = reference(&q, &events);
        let got = b.store.list(&q).await.expect("list").events;
        assert_eq!(ids(&got), ids(&expected), "query {q:?}");
        assert_eq!(got, expected, "whole events for {q:?}");
        let paged = all_pages(
            &b,
            ListQuery {
                page_size: 2,
                ..q.clone()
            },
        )
        .await;
        assert_eq!(ids(&paged), ids(&expected), "paged by 2: {q:?}");
    }
    // A session's events come back in the order they happened.
    let session = b
        .store
        .list(&query(|r| r.session_id = "s1".into()))
        .await
        .expect("list")
        .events;
    assert!(
        session
            .windows(2)
            .all(|w| w[0].occurred_at <= w[1].occurred_at)
    );
    assert_eq!(session.len(), 3);
    // The half-open range includes its start and excludes its end.
    let range = b
        .store
        .list(&query(|r| {
            r.occurred_after = Some(events[2].occurred_at.into());
            r.occurred_before = Some(events[5].occurred_at.into());
        }))
        .await
        .expect("list")
        .events;
    assert!(
        range.iter().all(
            |e| e.occurred_at >= events[2].occurred_at && e.occurred_at < events[5].occurred_at
        )
    );
    assert_eq!(range.len(), 3, "the three events at +30 s");
}

pub(super) async fn pages_stay_stable_while_events_arrive(b: Backend) {
    let before = seed(&b).await;
    let mut q = query(|r| r.page_size = 2);
    let mut seen = Vec::new();
    let mut added = 0;
    loop {
        let page = b.store.list(&q).await.expect("list");
        seen.extend(page.events.iter().map(|e| e.id));
        // Meanwhile, more events arrive, some sorting before the cursor.
        let input = EventInput {
            user_id: "late".into(),
            description: "arrived while paging".into(),
            occurred_at: Some(
                std::time::SystemTime::now()
                    - Duration::from_secs(if added % 2 == 0 { 7200 } else { 1 }),
            ),
            ..EventInput::default()
        };
        b.store
            .create(NewEvent::validate(input, &Rules::default()).expect("valid"))
            .await
            .expect("create");
        added += 1;
        match page.next {
            Some(position) => q.after = Some(position),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event on two pages");
    for e in &before {
        assert!(seen.contains(&e.id), "event {} skipped", e.id);
    }
}

/// Events that occurred at one instant come in id order, each once, paged
/// one at a time or seven at a time, oldest or newest first, on every
/// backend; a page resumes inside the group where its token says.
pub(super) async fn a_tie_group_pages_in_id_order_each_event_once(b: Backend) {
    let at = std::time::SystemTime::now() - Duration::from_secs(60);
    let inputs = (0..300)
        .map(|i| {
            let input = EventInput {
                user_id: format!("u{}", i % 3),
                description: format!("tie {i}"),
                category: "tied".into(),
                occurred_at: Some(at),
                ..EventInput::default()
            };
            NewEvent::validate(input, &Rules::default()).expect("valid")
        })
        .collect();
    let mut created = store_all(&b, inputs).await;
    created.sort_by_key(|e| e.id);
    for descending in [false, true] {
        let mut expected: Vec<Uuid> = created.iter().map(|e| e.id).collect();
        if descending {
            expected.reverse();
        }
        for page_size in [1, 7] {
            let q = query(|r| {
                r.category = "tied".into();
                r.page_size = page_size;
                if descending {
                    r.order_by = "occurred_at desc".into();
                }
            });
            let got: Vec<Uuid> = all_pages(&b, q).await.iter().map(|e| e.id).collect();
            assert_eq!(
                got, expected,
                "descending {descending}, pages of {page_size}"
            );
        }
    }
}

/// 700 events in two users' partitions, occurring out of creation order
/// (200 of them at one instant), settled in a third order: most
/// PROCESSED, some then OPENED, some FAILED, some left PENDING. Returns
/// them as they are now. Enough for a status index of one partition to
/// outgrow a bucket of Redis's (128 entries) several times over, splitting
/// where entries arrive, and for a tie group too big for one bucket.
pub(super) async fn seed_many_settled(b: &Backend) -> Vec<herald::Event> {
    let base = std::time::SystemTime::now() - Duration::from_secs(1900);
    let inputs = (0..700u64)
        .map(|i| {
            let secs = if i % 3 == 0 && i < 600 {
                900
            } else {
                (i * 7919) % 2100
            };
            let input = EventInput {
                user_id: if i < 600 { "many" } else { "other" }.into(),
                description: format!("event {i}"),
                occurred_at: Some(base + Duration::from_secs(secs)),
                ..EventInput::default()
            };
            NewEvent::validate(input, &Rules::default()).expect("valid")
        })
        .collect();
    let mut events = store_all(b, inputs).await;
    let place: std::collections::HashMap<Uuid, usize> =
        events.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    // Settled in batches of up to 100 changes (one script run per
    // partition, splitting buckets as it goes), in a third order.
    let order: Vec<usize> = (0..events.len())
        .map(|k| (k * 389) % events.len())
        .collect();
    for chunk in order.chunks(100) {
        let changes: Vec<StatusChange> = chunk
            .iter()
            .filter(|i| *i % 11 != 0)
            .map(|&i| {
                let status = if i % 13 == 0 {
                    EventStatus::Failed
                } else {
                    EventStatus::Processed
                };
                StatusChange::new(events[i].id, status)
            })
            .collect();
        let changed = b.store.update_status_many(&changes).await.expect("batch");
        for event in changed {
            let event = event.expect("changed");
            let i = place[&event.id];
            events[i] = event;
        }
    }
    // Some then opened, one at a time.
    for &i in order.iter().filter(|i| *i % 7 == 0) {
        if events[i].status == EventStatus::Processed {
            events[i] = b
                .store
                .update_status(events[i].id, EventStatus::Opened)
                .await
                .expect("opened");
        }
    }
    events
}

/// The statuses' indexes of many settled events (see
/// [`seed_many_settled`]) page in the reference order, each event once,
/// whole or a page at a time, either way, within a time range or not,
/// and the counts per status follow them.
pub(super) async fn many_settled_events_page_in_order_and_are_counted(b: Backend) {
    let events = seed_many_settled(&b).await;
    let base = events.iter().map(|e| e.occurred_at).min().expect("events");
    // A query of `status` (any if `None`), oldest or newest first, edited.
    let of = |status: Option<EventStatus>,
              descending: bool,
              edit: &dyn Fn(&mut pb::ListEventsRequest)| {
        query(|r| {
            r.status = status.map_or(0, |s| s.to_pb() as i32);
            if descending {
                r.order_by = "occurred_at desc".into();
            }
            edit(r);
        })
    };
    let at = |secs| Some((base + Duration::from_secs(secs)).into());
    let mut cases: Vec<ListQuery> = Vec::new();
    for descending in [false, true] {
        cases.extend([
            of(Some(EventStatus::Processed), descending, &|_| {}),
            of(Some(EventStatus::Opened), descending, &|_| {}),
            of(Some(EventStatus::Failed), descending, &|_| {}),
            of(None, descending, &|_| {}),
            of(Some(EventStatus::Processed), descending, &|r| {
                r.occurred_after = at(300);
                r.occurred_before = at(900);
            }),
            of(Some(EventStatus::Processed), descending, &|r| {
                r.user_id = "many".into();
                r.occurred_after = at(900);
            }),
        ]);
    }
    for q in cases {
        let expected = reference(&q, &events);
        assert!(!expected.is_empty(), "{q:?} finds events");
        for page_size in [1000, 37, 7] {
            let got = all_pages(
                &b,
                ListQuery {
                    page_size,
                    ..q.clone()
                },
            )
            .await;
            assert_eq!(ids(&got), ids(&expected), "pages of {page_size}: {q:?}");
        }
    }
    let mut counts = b.store.status_counts().await.expect("counts");
    for s in EventStatus::ALL {
        let n = events.iter().filter(|e| e.status == s).count() as u64;
        assert_eq!(*counts.slot(s), n, "{}", s.as_str());
    }
}
