//! Behavioural tests of the backends: every check runs on memory and on a
//! private redis-server, and both must behave the same.

use std::{sync::Arc, time::Duration};

use herald::{
    Error, EventStatus, NewEvent,
    backend::{self, Backend, BackendConfig, ConsumerConfig},
    cursor::{Cursor, PartitionEntry},
    domain::{DeliveryAttempt, EventInput, MAX_ATTEMPTS_KEPT, Rules, StatusChange, Statuses},
    partition::Partitions,
    pb,
    query::{ListQuery, page_of},
    testing::{RedisCluster, RedisServer, skip_redis_tests},
    trace::TraceParent,
};
use uuid::Uuid;

fn consumer_config(name: &str, claim_idle_ms: u64) -> ConsumerConfig {
    ConsumerConfig {
        name: name.into(),
        claim_idle: Duration::from_millis(claim_idle_ms),
        block: Duration::from_millis(100),
    }
}

fn new_event(user: &str, description: &str) -> NewEvent {
    NewEvent::new(user, description).expect("valid event")
}

async fn create_then_get(b: Backend) {
    let created = b
        .store
        .create(new_event("alice", "hello"))
        .await
        .expect("create");
    assert_eq!(created.status, EventStatus::Pending);
    assert_eq!(b.store.get(created.id).await.expect("get"), created);
    let missing = Uuid::now_v7();
    assert!(matches!(b.store.get(missing).await, Err(Error::NotFound(id)) if id == missing));
}

async fn status_transitions(b: Backend) {
    let e = b
        .store
        .create(new_event("alice", "hello"))
        .await
        .expect("create");
    let forbidden = b.store.update_status(e.id, EventStatus::Opened).await;
    assert!(matches!(
        forbidden,
        Err(Error::InvalidTransition {
            from: EventStatus::Pending,
            to: EventStatus::Opened
        })
    ));
    assert_eq!(
        b.store.get(e.id).await.expect("get"),
        e,
        "a rejected change changes nothing"
    );

    let processed = b
        .store
        .update_status(e.id, EventStatus::Processed)
        .await
        .expect("processed");
    assert_eq!(processed.status, EventStatus::Processed);
    assert!(processed.updated_at >= e.updated_at);
    assert_eq!(processed.created_at, e.created_at);
    let again = b
        .store
        .update_status(e.id, EventStatus::Processed)
        .await
        .expect("no-op");
    assert_eq!(again, processed, "the same status again is a no-op");
    let opened = b
        .store
        .update_status(e.id, EventStatus::Opened)
        .await
        .expect("opened");
    assert_eq!(b.store.get(e.id).await.expect("get"), opened);

    let missing = Uuid::now_v7();
    assert!(matches!(
        b.store.update_status(missing, EventStatus::Processed).await,
        Err(Error::NotFound(_))
    ));
}

async fn queue_delivers_once_and_acks(b: Backend) {
    let c = b.queue.consumer(consumer_config("c1", 60_000));
    let first = b
        .store
        .create(new_event("u1", "one"))
        .await
        .expect("create");
    let second = b
        .store
        .create(new_event("u2", "two"))
        .await
        .expect("create");
    let got = c.receive(10).await.expect("receive");
    assert_eq!(
        got.iter().map(|d| d.event.clone()).collect::<Vec<_>>(),
        [first, second]
    );
    assert!(got.iter().all(|d| d.deliveries == 1));
    assert_eq!(
        c.pending_by_consumer().await.expect("pending"),
        [("c1".to_owned(), 2)]
    );
    let ids: Vec<PartitionEntry> = got.iter().map(|d| d.entry_id).collect();
    c.ack(&ids).await.expect("ack");
    assert!(c.pending_by_consumer().await.expect("pending").is_empty());
    assert!(
        c.receive(10).await.expect("receive").is_empty(),
        "nothing new"
    );
}

async fn idle_entries_are_reclaimed_and_counted(b: Backend) {
    let dead = b.queue.consumer(consumer_config("dead", 60_000));
    let e = b
        .store
        .create(new_event("u", "lost"))
        .await
        .expect("create");
    assert_eq!(dead.receive(10).await.expect("receive").len(), 1);
    drop(dead); // it dies without acknowledging

    let live = b.queue.consumer(consumer_config("live", 200));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        got = live.receive(10).await.expect("receive");
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1, "the idle entry is reclaimed");
    assert_eq!(got[0].event, e);
    assert_eq!(got[0].deliveries, 2);
    assert_eq!(
        live.pending_by_consumer().await.expect("pending"),
        [("live".to_owned(), 1)]
    );
}

async fn restarted_consumer_drains_its_own_pending_first(b: Backend) {
    let before = b.queue.consumer(consumer_config("worker-1", 60_000));
    let e = b
        .store
        .create(new_event("u", "in flight"))
        .await
        .expect("create");
    assert_eq!(before.receive(10).await.expect("receive").len(), 1);
    drop(before);
    let after = b.queue.consumer(consumer_config("worker-1", 60_000));
    let got = after.receive(10).await.expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, e);
    assert!(got[0].deliveries >= 1);
}

async fn dead_letter_acknowledges(b: Backend) {
    let c = b.queue.consumer(consumer_config("c", 60_000));
    for i in 0..3 {
        b.store
            .create(new_event("u", &format!("doomed {i}")))
            .await
            .expect("create");
    }
    let got = c.receive(10).await.expect("receive");
    for (i, delivery) in got.iter().enumerate() {
        c.dead_letter(delivery, &format!("gave up {i}"))
            .await
            .expect("dead letter");
    }
    assert!(c.pending_by_consumer().await.expect("pending").is_empty());

    // Listed oldest first with their reasons, a page at a time, and removable.
    let start = Cursor::start(b.store.partitions());
    let all = b
        .store
        .dead_letters(&start, 10)
        .await
        .expect("dead letters");
    assert_eq!(all.len(), 3);
    for (i, dead) in all.iter().enumerate() {
        assert_eq!(dead.reason, format!("gave up {i}"));
        assert_eq!(dead.delivery.event, got[i].event);
        assert_eq!(dead.delivery.entry_id, got[i].entry_id);
        assert_eq!(dead.delivery.deliveries, 1);
    }
    let mut after_first = start.clone();
    after_first.advance(all[0].id.partition, all[0].id.id);
    let page = b.store.dead_letters(&after_first, 1).await.expect("page");
    assert_eq!(page, all[1..2]);
    // A redrive of an event removes its dead letters, and only those.
    let redriven = b
        .store
        .redrive_many(&[StatusChange::new(
            all[1].delivery.event.id,
            EventStatus::Pending,
        )])
        .await
        .expect("redrive");
    assert!(redriven[0].is_ok(), "{redriven:?}");
    let left = b
        .store
        .dead_letters(&start, 10)
        .await
        .expect("dead letters");
    assert_eq!(left, [all[0].clone(), all[2].clone()]);
    // Redriving the rest takes the events of the oldest dead letters first.
    let (outcomes, more) = b.store.redrive_all(None, 1).await.expect("redrive all");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].as_ref().expect("redriven").id,
        all[0].delivery.event.id
    );
    assert!(more, "one more dead letter is left");
    let (outcomes, more) = b.store.redrive_all(None, 10).await.expect("redrive all");
    assert_eq!(outcomes.len(), 1);
    assert!(!more);
    assert!(
        b.store
            .dead_letters(&start, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
}

async fn redrive_requeues(b: Backend) {
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let e = b
        .store
        .create(new_event("u", "again"))
        .await
        .expect("create");
    let got = c.receive(10).await.expect("receive");
    c.ack(&[got[0].entry_id]).await.expect("ack");
    b.store
        .update_status(e.id, EventStatus::Failed)
        .await
        .expect("failed");
    assert!(
        c.receive(10).await.expect("receive").is_empty(),
        "FAILED is not queued"
    );
    b.store
        .update_status(e.id, EventStatus::Pending)
        .await
        .expect("redrive");
    let again = c.receive(10).await.expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, e.id);
    assert_eq!(again[0].event.status, EventStatus::Pending);
}

async fn feed_logs_every_change_in_order(b: Backend) {
    let start = b.feed.latest_cursor().await.expect("cursor");
    let e = b
        .store
        .create(new_event("alice", "hi"))
        .await
        .expect("create");
    b.store
        .update_status(e.id, EventStatus::Processed)
        .await
        .expect("processed");
    b.store
        .update_status(e.id, EventStatus::Processed)
        .await
        .expect("no-op logs nothing");
    let _ = b.store.update_status(e.id, EventStatus::Failed).await; // rejected: logs nothing
    let got = read_after(&b, &start, 100, Duration::from_millis(100)).await;
    let statuses: Vec<EventStatus> = got.iter().map(|n| n.event.status).collect();
    assert_eq!(statuses, [EventStatus::Pending, EventStatus::Processed]);
    let mut after_first = start.clone();
    after_first.advance(got[0].partition, got[0].entry);
    let mut after_both = after_first.clone();
    after_both.advance(got[1].partition, got[1].entry);
    assert_eq!(b.feed.latest_cursor().await.expect("cursor"), after_both);
    let rest = read_after(&b, &after_first, 100, Duration::from_millis(50)).await;
    assert_eq!(rest, got[1..]);
    let none = read_after(&b, &after_both, 100, Duration::from_millis(50)).await;
    assert!(none.is_empty());

    // A reader wanting PROCESSED changes only gets that one, and is told
    // it read through both.
    let processed = b
        .feed
        .read_after(
            &start,
            100,
            Duration::from_millis(100),
            [EventStatus::Processed].into_iter().collect(),
        )
        .await
        .expect("read");
    assert_eq!(processed.notifications, got[1..]);
    assert_eq!(processed.through, after_both);
    let nothing = b
        .feed
        .read_after(&start, 100, Duration::from_millis(100), Statuses::NONE)
        .await
        .expect("read");
    assert!(nothing.notifications.is_empty());
    assert_eq!(nothing.through, after_both);
}

/// Every change after `cursor` (see [`backend::NotificationFeed::read_after`]).
async fn read_after(
    b: &Backend,
    cursor: &Cursor,
    max: usize,
    block: Duration,
) -> Vec<backend::Notification> {
    b.feed
        .read_after(cursor, max, block, Statuses::ALL)
        .await
        .expect("read")
        .notifications
}

async fn blocked_feed_read_wakes_on_write(b: Backend) {
    let start = b.feed.latest_cursor().await.expect("cursor");
    let feed = b.feed.clone();
    let reader = tokio::spawn(async move {
        feed.read_after(&start, 10, Duration::from_secs(5), Statuses::ALL)
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = b
        .store
        .create(new_event("bob", "wake up"))
        .await
        .expect("create");
    let got = tokio::time::timeout(Duration::from_secs(4), reader)
        .await
        .expect("woken before the block time")
        .expect("join")
        .expect("read")
        .notifications;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, e);
}

async fn concurrent_creates_are_all_queued(b: Backend) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            store.create(new_event(&format!("u{i}"), "x")).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("create");
    }
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let mut seen = 0;
    while seen < 50 {
        let got = c.receive(20).await.expect("receive");
        assert!(!got.is_empty(), "only {seen} of 50 queued");
        seen += got.len();
    }
    assert_eq!(seen, 50);
}

async fn batches_keep_each_items_outcome(b: Backend) {
    let start = b.feed.latest_cursor().await.expect("cursor");
    let events = b
        .store
        .create_many(vec![
            new_event("a", "1"),
            new_event("b", "2"),
            new_event("c", "3"),
        ])
        .await
        .expect("create_many")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("every event stored");
    assert_eq!(events.len(), 3);
    assert_eq!(
        events
            .iter()
            .map(|e| e.user_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let unknown = Uuid::now_v7();
    let change = StatusChange::new;
    let results = b
        .store
        .update_status_many(&[
            change(events[0].id, EventStatus::Processed),
            change(events[1].id, EventStatus::Opened),
            change(unknown, EventStatus::Processed),
            change(events[0].id, EventStatus::Processed),
        ])
        .await
        .expect("update_status_many");
    assert!(matches!(&results[0], Ok(e) if e.status == EventStatus::Processed));
    assert!(matches!(results[1], Err(Error::InvalidTransition { .. })));
    assert!(matches!(results[2], Err(Error::NotFound(id)) if id == unknown));
    assert_eq!(
        results[3].as_ref().expect("no-op"),
        results[0].as_ref().expect("changed")
    );
    let logged = read_after(&b, &start, 100, Duration::from_millis(100)).await;
    assert_eq!(logged.len(), 4, "three creations and one change");
    assert_eq!(
        b.store.get(events[1].id).await.expect("get"),
        events[1],
        "unchanged"
    );
}

/// `n` events stored in one batch, of users `u0`, `u1`, ... (spread over
/// the partitions).
async fn stored_events(b: &Backend, n: usize) -> Vec<herald::Event> {
    store_all(
        b,
        (0..n).map(|i| new_event(&format!("u{i}"), "x")).collect(),
    )
    .await
}

/// `events` stored in one batch, every one of them.
async fn store_all(b: &Backend, events: Vec<NewEvent>) -> Vec<herald::Event> {
    b.store
        .create_many(events)
        .await
        .expect("create_many")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("every event stored")
}

async fn concurrent_status_changes_all_apply(b: Backend) {
    let events = stored_events(&b, 100).await;
    let mut tasks = Vec::new();
    for e in &events {
        for _ in 0..2 {
            let (store, id) = (Arc::clone(&b.store), e.id);
            tasks.push(tokio::spawn(async move {
                store.update_status(id, EventStatus::Processed).await
            }));
        }
    }
    for t in tasks {
        let e = t.await.expect("join").expect("update");
        assert_eq!(e.status, EventStatus::Processed);
    }
    let start = b.feed.latest_cursor().await.expect("cursor");
    b.store
        .update_status(events[0].id, EventStatus::Opened)
        .await
        .expect("opened");
    let after = read_after(&b, &start, 10, Duration::from_millis(50)).await;
    assert_eq!(after.len(), 1);
}

/// Two writers race to move every event out of PENDING, one to PROCESSED
/// and one to FAILED, in batches taken in opposite orders so that they meet
/// on the records: neither status may follow the other, so exactly one
/// change wins per event and the other is refused; the event is then in
/// one status index and its one change is logged once. A batch that
/// changes one event twice applies the changes in order.
async fn racing_status_changes_apply_one_each(b: Backend) {
    let events = stored_events(&b, 120).await;
    let start = b.feed.latest_cursor().await.expect("cursor");
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let writer = |status: EventStatus, reversed: bool| {
        let (store, mut ids) = (Arc::clone(&b.store), ids.clone());
        if reversed {
            ids.reverse();
        }
        tokio::spawn(async move {
            let mut results = Vec::new();
            for batch in ids.chunks(7) {
                let changes: Vec<_> = batch
                    .iter()
                    .map(|id| StatusChange::new(*id, status))
                    .collect();
                let outcomes = store.update_status_many(&changes).await.expect("batch");
                results.extend(batch.iter().copied().zip(outcomes));
            }
            results
        })
    };
    let (processed, failed) = (
        writer(EventStatus::Processed, false),
        writer(EventStatus::Failed, true),
    );
    let mut winners = std::collections::HashMap::new();
    for results in [processed.await.expect("join"), failed.await.expect("join")] {
        for (id, result) in results {
            match result {
                Ok(event) => assert!(
                    winners.insert(id, event.status).is_none(),
                    "two changes of {id} out of PENDING were both applied"
                ),
                Err(Error::InvalidTransition { .. }) => {}
                Err(err) => panic!("unexpected outcome for {id}: {err}"),
            }
        }
    }
    assert_eq!(winners.len(), ids.len(), "every event left PENDING once");
    for id in &ids {
        assert_eq!(
            Some(&b.store.get(*id).await.expect("get").status),
            winners.get(id)
        );
    }
    let counts = b.store.status_counts().await.expect("counts");
    let processed = winners
        .values()
        .filter(|s| **s == EventStatus::Processed)
        .count() as u64;
    assert_eq!(
        (counts.pending, counts.processed, counts.failed),
        (0, processed, ids.len() as u64 - processed)
    );
    let logged = read_after(&b, &start, 1000, Duration::from_millis(100)).await;
    assert_eq!(logged.len(), ids.len(), "one change logged per event");

    // One event FAILED and back to PENDING, another PROCESSED then
    // OPENED, in one batch: in order, each change logged, and each event
    // counted (and indexed) in the status it ends with.
    let start = b.feed.latest_cursor().await.expect("cursor");
    let (back, on) = (
        b.store
            .create(new_event("u0", "y"))
            .await
            .expect("create")
            .id,
        b.store
            .create(new_event("u1", "z"))
            .await
            .expect("create")
            .id,
    );
    let outcomes = b
        .store
        .update_status_many(&[
            StatusChange::new(back, EventStatus::Failed),
            StatusChange::new(on, EventStatus::Processed),
            StatusChange::new(back, EventStatus::Pending),
            StatusChange::new(on, EventStatus::Opened),
        ])
        .await
        .expect("batch");
    let statuses: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("applied").status)
        .collect();
    assert_eq!(
        statuses,
        [
            EventStatus::Failed,
            EventStatus::Processed,
            EventStatus::Pending,
            EventStatus::Opened
        ]
    );
    let after = b.store.status_counts().await.expect("counts");
    assert_eq!(
        (after.pending, after.processed, after.opened, after.failed),
        (1, counts.processed, counts.opened + 1, counts.failed)
    );
    let logged = read_after(&b, &start, 100, Duration::from_millis(100)).await;
    assert_eq!(logged.len(), 6, "two creations and four changes");
}

fn full_event(request_id: &str) -> NewEvent {
    let input = EventInput {
        user_id: "alice".into(),
        description: "viewed the pricing page".into(),
        category: "page interaction".into(),
        event_type: "pageview".into(),
        session_id: "session-1".into(),
        payload: serde_json::json!({"host": "example.com", "path": "/pricing", "n": 1.5, "tags": ["a", 2]})
            .as_object()
            .cloned(),
        occurred_at: Some(std::time::SystemTime::now() - Duration::from_secs(30)),
        request_id: request_id.into(),
    };
    NewEvent::validate(input, &Rules::default()).expect("valid")
}

async fn every_field_round_trips(b: Backend) {
    let trace = TraceParent::new_root();
    let created = b
        .store
        .create(full_event("").with_source("web").in_trace(trace))
        .await
        .expect("create");
    assert_eq!(created.source, "web");
    assert_eq!(created.traceparent, Some(trace));
    assert_eq!(created.event_type, "pageview");
    assert!(created.occurred_at < created.created_at);
    assert_eq!(b.store.get(created.id).await.expect("get"), created);
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let queued = c.receive(10).await.expect("receive");
    assert_eq!(
        queued[0].event, created,
        "the queue entry carries every field"
    );
    let processed = b
        .store
        .update_status(created.id, EventStatus::Processed)
        .await
        .expect("processed");
    assert_eq!(processed.payload, created.payload);
    assert_eq!(
        processed.traceparent,
        Some(trace),
        "a change without a trace keeps the event's"
    );
    let span = trace.child();
    let opened = b
        .store
        .update_status_many(&[
            StatusChange::new(created.id, EventStatus::Opened).in_trace(Some(span))
        ])
        .await
        .expect("opened")
        .pop()
        .expect("one result")
        .expect("opened");
    assert_eq!(
        opened.traceparent,
        Some(span),
        "a traced change stores its span"
    );
    assert_eq!(b.store.get(created.id).await.expect("get"), opened);
}

async fn repeated_request_ids_return_the_first_event(b: Backend) {
    let first = b
        .store
        .create(full_event("req-1").with_source("web"))
        .await
        .expect("create");
    let again = b
        .store
        .create(full_event("req-1").with_source("web"))
        .await
        .expect("repeat");
    assert_eq!(again, first);
    let other_client = b
        .store
        .create(full_event("req-1").with_source("mobile"))
        .await
        .expect("other");
    assert_ne!(other_client.id, first.id, "keys are per client");
    // In one batch with events without a key (written without the script
    // on one Redis node), each answer keeps its place.
    let in_one_batch = b
        .store
        .create_many(vec![
            full_event("req-2"),
            new_event("bob", "no key"),
            full_event("req-2"),
            new_event("carol", "no key either"),
        ])
        .await
        .expect("batch")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("every one answered");
    assert_eq!(in_one_batch[0].id, in_one_batch[2].id);
    let users: Vec<&str> = in_one_batch.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(users, ["alice", "bob", "alice", "carol"]);

    // Racing duplicates: one event, queued once.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            store.create(full_event("req-3")).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("join").expect("create").id);
    }
    assert_eq!(ids.len(), 1);
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let mut queued = Vec::new();
    loop {
        let got = c.receive(100).await.expect("receive");
        if got.is_empty() {
            break;
        }
        queued.extend(got.into_iter().map(|d| d.event.id));
    }
    assert_eq!(
        queued.len(),
        6,
        "req-1 twice (two clients), req-2 once, bob's and carol's, req-3 once"
    );
    assert!(queued.contains(ids.iter().next().expect("one id")));
}

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

fn query(edit: impl FnOnce(&mut pb::ListEventsRequest)) -> ListQuery {
    let mut request = pb::ListEventsRequest::default();
    edit(&mut request);
    ListQuery::try_from(request).expect("valid query")
}

async fn all_pages(b: &Backend, mut q: ListQuery) -> Vec<herald::Event> {
    let mut out = Vec::new();
    loop {
        let page = b.store.list(&q).await.expect("list");
        assert!(page.events.len() <= q.page_size);
        out.extend(page.events);
        match page.next {
            Some(position) => q.after = Some(position),
            None => return out,
        }
    }
}

async fn list_queries_follow_the_reference_order(b: Backend) {
    let events = seed(&b).await;
    let ids = |events: &[herald::Event]| events.iter().map(|e| e.id).collect::<Vec<_>>();
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
        let expected = page_of(
            &ListQuery {
                page_size: usize::MAX,
                ..q.clone()
            },
            events.clone(),
        )
        .events;
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

async fn pages_stay_stable_while_events_arrive(b: Backend) {
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

/// Counts per status follow every write, and only real changes.
async fn status_counts_follow_every_write(b: Backend) {
    let counts = || async { b.store.status_counts().await.expect("counts") };
    assert_eq!(counts().await.total(), 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            b.store
                .create(new_event("u", &format!("e{i}")))
                .await
                .expect("create")
                .id,
        );
    }
    // A repeated request id creates nothing, so counts nothing.
    b.store.create(full_event("once")).await.expect("create");
    b.store.create(full_event("once")).await.expect("repeat");
    let set = |id, status| b.store.update_status(id, status);
    set(ids[0], EventStatus::Processed)
        .await
        .expect("processed");
    set(ids[0], EventStatus::Opened).await.expect("opened");
    set(ids[0], EventStatus::Opened).await.expect("no-op");
    set(ids[1], EventStatus::Failed).await.expect("failed");
    set(ids[1], EventStatus::Pending).await.expect("redriven");
    set(ids[2], EventStatus::Failed).await.expect("failed");
    let _ = set(ids[2], EventStatus::Opened).await; // refused: counts nothing
    let got = counts().await;
    assert_eq!(
        (got.pending, got.processed, got.opened, got.failed),
        (2, 0, 1, 1)
    );
    assert_eq!(got.total(), 4);
}

/// An event that occurred `ago` before now.
fn backdated_event(description: &str, ago: Duration) -> NewEvent {
    let input = EventInput {
        user_id: "old".into(),
        description: description.into(),
        occurred_at: Some(std::time::SystemTime::now() - ago),
        ..EventInput::default()
    };
    NewEvent::validate(input, &Rules::default()).expect("valid")
}

/// Runs retention up to `cutoff` in slices of `slice` events, as the
/// logger's sweep does (`sweep_older_than`), after checking that a first
/// slice of every partition's settled statuses stays within its bound;
/// returns (removed, kept) in all.
async fn sweep_all(b: &Backend, cutoff: std::time::SystemTime, slice: usize) -> (u64, u64) {
    let settled = [
        EventStatus::Processed,
        EventStatus::Opened,
        EventStatus::Failed,
    ];
    let mut removed = 0;
    for (partition, status) in b
        .store
        .partitions()
        .all()
        .flat_map(|p| settled.map(|status| (p, status)))
    {
        let done = b
            .store
            .remove_older_than(backend::RetentionSlice {
                partition,
                status,
                cutoff,
                skip: 0,
                max: slice,
            })
            .await
            .expect("retention slice");
        assert!(done.scanned as usize <= slice, "a slice is bounded");
        removed += done.removed;
    }
    let (rest, kept) = b
        .store
        .sweep_older_than(cutoff, slice)
        .await
        .expect("retention sweep");
    (removed + rest, kept)
}

async fn retention_removes_old_settled_events_only(b: Backend) {
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            b.store
                .create(new_event("u", &format!("e{i}")))
                .await
                .expect("create")
                .id,
        );
    }
    let full = b.store.create(full_event("r1")).await.expect("create");
    let set = |id, status| b.store.update_status(id, status);
    set(ids[0], EventStatus::Processed)
        .await
        .expect("processed");
    set(ids[1], EventStatus::Processed)
        .await
        .expect("processed");
    set(ids[1], EventStatus::Opened).await.expect("opened");
    set(ids[2], EventStatus::Failed).await.expect("failed");
    set(full.id, EventStatus::Processed)
        .await
        .expect("processed");
    // ids[3] and ids[4] stay PENDING; one of them is dead-lettered.
    let got = c.receive(10).await.expect("receive");
    let doomed = got.iter().find(|d| d.event.id == ids[4]).expect("queued");
    c.dead_letter(doomed, "gave up").await.expect("dead letter");
    // Occurred two hours ago but created now: younger than an hour's cutoff.
    let backdated = b
        .store
        .create(backdated_event("late report", Duration::from_secs(7200)))
        .await
        .expect("create");
    set(backdated.id, EventStatus::Processed)
        .await
        .expect("processed");

    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(
        sweep_all(&b, hour_ago, 2).await,
        (0, 1),
        "only the backdated event occurred before the cutoff, and it is young"
    );
    assert_eq!(b.store.trim_dead_letters(hour_ago).await.expect("trim"), 0);

    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    let (removed, kept) = sweep_all(&b, later, 2).await;
    assert_eq!(
        (removed, kept),
        (5, 0),
        "settled ones go; the two PENDING events are never looked at"
    );
    for id in [ids[0], ids[1], ids[2], full.id, backdated.id] {
        assert!(
            matches!(b.store.get(id).await, Err(Error::NotFound(_))),
            "{id} is gone"
        );
    }
    for id in [ids[3], ids[4]] {
        assert_eq!(
            b.store.get(id).await.expect("kept").status,
            EventStatus::Pending
        );
    }
    let listed: Vec<Uuid> = all_pages(&b, query(|_| {}))
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        listed,
        [ids[3], ids[4]],
        "index entries went with the records"
    );
    assert!(
        all_pages(&b, query(|q| q.category = "page interaction".into()))
            .await
            .is_empty()
    );
    assert!(
        all_pages(&b, query(|q| q.user_id = "old".into()))
            .await
            .is_empty()
    );
    let counts = b.store.status_counts().await.expect("counts");
    assert_eq!(
        (
            counts.pending,
            counts.processed,
            counts.opened,
            counts.failed
        ),
        (2, 0, 0, 0)
    );
    assert_eq!(b.store.trim_dead_letters(later).await.expect("trim"), 1);
    assert!(
        b.store
            .dead_letters(&Cursor::start(b.store.partitions()), 10)
            .await
            .expect("dead")
            .is_empty()
    );
    assert_eq!(
        sweep_all(&b, later, 2).await,
        (0, 0),
        "nothing more to remove"
    );
    assert_eq!(
        b.store.sweep_older_than(later, 2).await.expect("sweep"),
        (0, 0),
        "the store's own sweep agrees"
    );
}

async fn queue_trim_keeps_unacknowledged_work(b: Backend) {
    // Before anything was written, the queue is there and empty.
    let fresh = b.queue.stats().await.expect("stats of a fresh queue");
    assert_eq!((fresh.length, fresh.pending), (0, 0), "{fresh:?}");
    for i in 0..5 {
        b.store
            .create(new_event("u", &format!("e{i}")))
            .await
            .expect("create");
    }
    assert_eq!(
        b.queue.trim_acknowledged().await.expect("trim"),
        0,
        "no group has read anything yet"
    );
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let got = c.receive(3).await.expect("receive");
    assert_eq!(got.len(), 3);
    c.ack(&[got[0].entry_id, got[2].entry_id])
        .await
        .expect("ack");
    let trimmed = b.queue.trim_acknowledged().await.expect("trim");
    let stats = b.queue.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.lag), (1, Some(2)));
    assert!(stats.length >= 3, "{stats:?}");
    if b.kind != "memory" {
        // Only the entry below the oldest pending one could go.
        assert_eq!((trimmed, stats.length), (1, 4));
    }
    // The pending entry and the undelivered ones are all still there.
    assert_eq!(
        c.pending_by_consumer().await.expect("pending"),
        [("c".to_owned(), 1)]
    );
    let rest = c.receive(10).await.expect("receive");
    assert_eq!(
        rest.iter()
            .map(|d| d.event.description.as_str())
            .collect::<Vec<_>>(),
        ["e3", "e4"]
    );
    let all: Vec<PartitionEntry> = rest.iter().map(|d| d.entry_id).collect();
    c.ack(&all).await.expect("ack");
    c.ack(&[got[1].entry_id]).await.expect("ack");
    let trimmed = b.queue.trim_acknowledged().await.expect("trim");
    let stats = b.queue.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.lag), (0, Some(0)));
    if b.kind != "memory" {
        // Everything but the last delivered entry.
        assert_eq!((trimmed, stats.length), (3, 1));
    }
}

/// An attempt of `event` through `channel` that succeeded or failed.
fn attempt(event: Uuid, channel: &str, succeeded: bool) -> DeliveryAttempt {
    DeliveryAttempt {
        event_id: event,
        channel: channel.into(),
        kind: "webhook".into(),
        target: format!("http://127.0.0.1:9/{channel}"),
        attempted_at: herald::domain::now(),
        latency: Duration::from_micros(1_234),
        succeeded,
        http_status: Some(if succeeded { 204 } else { 503 }),
        error: if succeeded {
            String::new()
        } else {
            "HTTP 503".into()
        },
    }
}

/// Attempts are kept per event, oldest first (the newest
/// MAX_ATTEMPTS_KEPT); a success marks its channel in the record, so every
/// later delivery of the event (reclaimed, redriven, dead-lettered) says
/// which channels took it.
async fn delivery_attempts_are_kept_and_mark_channels(b: Backend) {
    let e = b.store.create(new_event("u", "hi")).await.expect("create");
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let first = c.receive(10).await.expect("receive");
    assert_eq!(first.len(), 1);
    assert!(first[0].delivered.is_empty());
    let attempts = [
        attempt(e.id, "hooks", false),
        attempt(e.id, "hooks", true),
        attempt(e.id, "irc", true),
        attempt(e.id, "hooks", true),
    ];
    b.deliveries
        .record_attempts(&attempts)
        .await
        .expect("record");
    assert_eq!(
        b.deliveries.attempts(e.id).await.expect("attempts"),
        attempts
    );
    // Delivered again (its consumer restarted): the record says which
    // channels took it.
    drop(c);
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let again = c.receive(10).await.expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivered, ["hooks", "irc"]);
    assert_eq!(again[0].deliveries, 2);
    // Dead-lettered and redriven, it still skips them.
    c.dead_letter(&again[0], "irc down").await.expect("dead");
    let dead = b
        .store
        .dead_letters(&Cursor::start(b.store.partitions()), 10)
        .await
        .expect("dead letters");
    assert_eq!(dead[0].delivery.delivered, ["hooks", "irc"]);
    b.store
        .update_status(e.id, EventStatus::Failed)
        .await
        .expect("failed");
    b.store
        .redrive_many(&[StatusChange::new(e.id, EventStatus::Pending)])
        .await
        .expect("redrive");
    let redriven = c.receive(10).await.expect("receive");
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].delivered, ["hooks", "irc"]);
    // Only the newest are kept.
    let many: Vec<_> = (0..MAX_ATTEMPTS_KEPT + 5)
        .map(|i| attempt(e.id, &format!("c{i}"), false))
        .collect();
    b.deliveries.record_attempts(&many).await.expect("record");
    let kept = b.deliveries.attempts(e.id).await.expect("attempts");
    assert_eq!(kept, many[5..]);
    // Attempts of an unknown event are dropped; it has none to list.
    let other = b.store.create(new_event("v", "x")).await.expect("create");
    let missing = Uuid::now_v7();
    b.deliveries
        .record_attempts(&[
            attempt(missing, "hooks", true),
            attempt(other.id, "irc", false),
        ])
        .await
        .expect("record");
    assert!(
        matches!(b.deliveries.attempts(missing).await, Err(Error::NotFound(id)) if id == missing)
    );
    assert_eq!(
        b.deliveries
            .attempts(other.id)
            .await
            .expect("attempts")
            .len(),
        1
    );
    // Retention removes them with the event.
    b.store
        .update_status(other.id, EventStatus::Processed)
        .await
        .expect("processed");
    let cutoff = std::time::SystemTime::now() + Duration::from_secs(60);
    b.store.sweep_older_than(cutoff, 10).await.expect("sweep");
    assert!(matches!(
        b.deliveries.attempts(other.id).await,
        Err(Error::NotFound(_))
    ));
}

/// Each test on memory, a Redis and a Redis Cluster of three masters; the
/// tests after `opening:` take a configuration and open their backend with
/// options of their own (memory and one Redis).
macro_rules! backend_tests {
    ($($name:ident),* $(,)? ; opening: $($opening:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(backend::open(&BackendConfig::Memory).expect("memory")).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $opening() {
                    super::$opening(BackendConfig::Memory).await;
                }
            )*
        }

        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if skip_redis_tests() {
                        return;
                    }
                    let server = RedisServer::start();
                    super::$name(backend::open(&redis_config(&server)).expect("redis")).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $opening() {
                    if skip_redis_tests() {
                        return;
                    }
                    let server = RedisServer::start();
                    super::$opening(redis_config(&server)).await;
                }
            )*
        }

        mod cluster {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if skip_redis_tests() {
                        return;
                    }
                    let cluster = RedisCluster::start(3, 0);
                    let config = BackendConfig::RedisCluster { urls: cluster.urls(), prefix: "test".into() };
                    super::$name(backend::open(&config).expect("cluster")).await;
                }
            )*
        }
    };
}

/// The backend of `server` under the prefix `test`.
fn redis_config(server: &RedisServer) -> BackendConfig {
    BackendConfig::Redis {
        url: server.url(),
        prefix: "test".into(),
    }
}

/// A partition with a long queue does not hold back another's entries: they
/// come within the first two batches, not after the 300 queued before them.
async fn no_busy_partition_starves_the_others(b: Backend) {
    let partitions = b.store.partitions();
    let busy = "busy-user";
    let quiet = (0..)
        .map(|i| format!("quiet-{i}"))
        .find(|u| partitions.of_user(u) != partitions.of_user(busy))
        .expect("a user of another partition");
    for i in 0..300 {
        b.store
            .create(new_event(busy, &format!("busy {i}")))
            .await
            .expect("create");
    }
    for i in 0..5 {
        b.store
            .create(new_event(&quiet, &format!("quiet {i}")))
            .await
            .expect("create");
    }
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let mut got = c.receive(20).await.expect("receive");
    got.extend(c.receive(20).await.expect("receive"));
    let quiet_ones = got.iter().filter(|d| d.event.user_id == quiet).count();
    assert_eq!(quiet_ones, 5, "the quiet partition's entries came early");
}

backend_tests!(
    create_then_get,
    status_transitions,
    queue_delivers_once_and_acks,
    idle_entries_are_reclaimed_and_counted,
    restarted_consumer_drains_its_own_pending_first,
    dead_letter_acknowledges,
    redrive_requeues,
    feed_logs_every_change_in_order,
    blocked_feed_read_wakes_on_write,
    concurrent_creates_are_all_queued,
    batches_keep_each_items_outcome,
    concurrent_status_changes_all_apply,
    racing_status_changes_apply_one_each,
    every_field_round_trips,
    repeated_request_ids_return_the_first_event,
    list_queries_follow_the_reference_order,
    pages_stay_stable_while_events_arrive,
    status_counts_follow_every_write,
    retention_removes_old_settled_events_only,
    queue_trim_keeps_unacknowledged_work,
    no_busy_partition_starves_the_others,
    delivery_attempts_are_kept_and_mark_channels;
    opening:
    request_ids_expire_after_the_window,
    feed_history_is_bounded_and_says_what_was_trimmed,
);

/// After Redis lost its data (a restart without persistence), the consumer
/// recreates the group and carries on.
#[tokio::test]
async fn redis_consumer_recreates_a_vanished_group() {
    if skip_redis_tests() {
        return;
    }
    let mut server = RedisServer::start();
    let config = redis_config(&server);
    let b = backend::open(&config).expect("redis");
    let c = b.queue.consumer(consumer_config("c", 60_000));
    b.store
        .create(new_event("u", "before"))
        .await
        .expect("create");
    assert_eq!(c.receive(10).await.expect("receive").len(), 1);

    server.restart(); // no AOF: everything is gone, the group too
    let mut created = None;
    for _ in 0..50 {
        match b.store.create(new_event("u", "after")).await {
            Ok(e) => {
                created = Some(e);
                break;
            }
            Err(Error::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("unexpected error while Redis restarts: {e}"),
        }
    }
    let created = created.expect("Redis is back");
    let mut got = Vec::new();
    for _ in 0..50 {
        match c.receive(10).await {
            Ok(batch) if !batch.is_empty() => {
                got = batch;
                break;
            }
            Ok(_) => {}
            Err(Error::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("receive after restart: {e}"),
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, created);
}

/// A request id answers with its event only within the window.
async fn request_ids_expire_after_the_window(config: BackendConfig) {
    let options = backend::StoreOptions {
        request_id_window: Duration::from_secs(1),
        ..Default::default()
    };
    let b = backend::open_with(&config, &options).expect("backend");
    let first = b
        .store
        .create(full_event("short-lived"))
        .await
        .expect("create");
    assert_eq!(
        b.store
            .create(full_event("short-lived"))
            .await
            .expect("repeat")
            .id,
        first.id
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let later = b
        .store
        .create(full_event("short-lived"))
        .await
        .expect("after the window");
    assert_ne!(later.id, first.id);
}

/// The notification log keeps at most its maximum length (Redis trims whole
/// nodes, so a little more) and at most its age, and says what it trimmed.
async fn feed_history_is_bounded_and_says_what_was_trimmed(config: BackendConfig) {
    let options = backend::StoreOptions {
        notifications_max_len: 50,
        ..Default::default()
    };
    let b = backend::open_with(&config, &options).expect("backend");
    let start = Cursor::start(b.feed.partitions());
    let fresh = b.feed.history().await.expect("history");
    assert_eq!(fresh.trimmed_through, start);
    for i in 0..300 {
        b.store
            .create(new_event("u", &format!("e{i}")))
            .await
            .expect("create");
    }
    let history = b.feed.history().await.expect("history");
    assert_eq!(history.last, b.feed.latest_cursor().await.expect("latest"));
    assert_ne!(history.trimmed_through, start, "something was trimmed");
    let kept = b.feed.read_range(&start, None, 1_000).await.expect("read");
    assert!((50..300).contains(&kept.len()), "{} kept", kept.len());
    let mut after_kept = start.clone();
    for n in &kept {
        after_kept.advance(n.partition, n.entry);
    }
    assert_eq!(after_kept, history.last);
    // Everything after the trimmed cursor is still there, and nothing before.
    let after_trimmed = b
        .feed
        .read_range(&history.trimmed_through, None, 1_000)
        .await
        .expect("read");
    assert_eq!(after_trimmed, kept);
    let described: Vec<&str> = kept.iter().map(|n| n.event.description.as_str()).collect();
    let first = 300 - kept.len();
    let expected: Vec<String> = (first..300).map(|i| format!("e{i}")).collect();
    assert_eq!(described, expected);
    // Paging by cursor walks the same entries.
    let mut after_ninth = start.clone();
    after_ninth.advance(kept[9].partition, kept[9].entry);
    let page = b
        .feed
        .read_range(&after_ninth, None, 5)
        .await
        .expect("page");
    assert_eq!(page, kept[10..15]);
    // The user's partition alone holds the same.
    let only = b.feed.partitions().of_user("u");
    let page = b
        .feed
        .read_range(&after_ninth, Some(only), 5)
        .await
        .expect("page");
    assert_eq!(page, kept[10..15]);

    // By age: everything logged before now goes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.feed
        .trim_older_than(Duration::ZERO)
        .await
        .expect("trim by age");
    assert!(
        b.feed
            .read_range(&start, None, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let history = b.feed.history().await.expect("history");
    assert_eq!(history.trimmed_through, history.last);
}

/// The Redis Cluster of the tests: three masters with a replica each serve
/// every slot, and keys of different hash tags, written through one node,
/// read back through another (redis-cli follows the redirects).
#[test]
fn a_private_redis_cluster_serves_every_slot() {
    if skip_redis_tests() {
        return;
    }
    let mut cluster = RedisCluster::start(3, 1);
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    assert_eq!(ports.len(), 6);
    let info = cluster.info(ports[0]);
    assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:6"), "{info}");
    let cli = |port: u16, args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for (i, key) in ["herald:{p00}:x", "herald:{p07}:x", "herald:{p15}:x"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(cli(ports[0], &["set", key, &i.to_string()]), "OK");
        assert_eq!(cli(ports[2], &["get", key]), i.to_string());
    }
}

/// A deployment's partition count is recorded on first use; a process with
/// another count, or a Redis in the first (unpartitioned) layout or of
/// another layout version, is refused with a message naming what differs,
/// and nothing is written.
#[tokio::test]
async fn redis_refuses_another_partition_count_and_the_old_layout() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start();
    let open = |prefix: &str, partitions: u16| {
        let options = backend::StoreOptions {
            partitions: Partitions::new(partitions).expect("partitions"),
            ..Default::default()
        };
        let config = BackendConfig::Redis {
            url: server.url(),
            prefix: prefix.into(),
        };
        backend::open_with(&config, &options).expect("backend")
    };
    let first = open("test", 16);
    first.store.prepare().await.expect("first use records 16");
    first
        .store
        .create(new_event("u", "kept"))
        .await
        .expect("create");
    let other = open("test", 8);
    let why = refusal(&other).await;
    assert!(
        why.contains("16") && why.contains("--partitions 8"),
        "{why}"
    );
    assert!(matches!(
        other.store.create(new_event("u", "refused")).await,
        Err(Error::Misconfigured(_))
    ));
    assert_eq!(
        first.store.status_counts().await.expect("counts").total(),
        1,
        "the refused process wrote nothing"
    );

    // Data in the first layout: refused, whatever the partition count.
    let mut conn = ::redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: String = ::redis::cmd("XADD")
        .arg("old:events")
        .arg("*")
        .arg("event")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    let why = refusal(&open("old", 16)).await;
    assert!(why.contains("old:events"), "{why}");

    // Data of an earlier layout version (records as hashes): refused, named.
    let _: () = ::redis::cmd("HSET")
        .arg("v3:meta")
        .arg("layout")
        .arg("3")
        .arg("partitions")
        .arg("16")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let why = refusal(&open("v3", 16)).await;
    assert!(why.contains("layout 3"), "{why}");
}

/// Why a backend refuses to start (it must).
async fn refusal(b: &Backend) -> String {
    match b.store.prepare().await {
        Err(Error::Misconfigured(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// With `wait_replicas`, a write no replica confirmed in time is UNAVAILABLE
/// (it may be lost with its master), and a retry with the same request id
/// finds the event instead of making another.
#[tokio::test]
async fn redis_writes_wait_for_replicas() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start(); // no replica
    let options = backend::StoreOptions {
        wait_replicas: 1,
        ..Default::default()
    };
    let config = redis_config(&server);
    let b = backend::open_with(&config, &options).expect("backend");
    let input = || {
        let input = EventInput {
            user_id: "u".into(),
            description: "waited".into(),
            request_id: "r1".into(),
            ..EventInput::default()
        };
        NewEvent::validate(input, &Rules::default()).expect("valid")
    };
    match b.store.create(input()).await {
        Err(Error::Unavailable(why)) => assert!(why.contains("0 of the 1 replicas"), "{why}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    let plain = backend::open(&config).expect("backend");
    let first = plain.store.create(input()).await.expect("the retry");
    assert_eq!(
        plain.store.status_counts().await.expect("counts").total(),
        1
    );
    assert_eq!(first.description, "waited");
}

/// A private Redis with a backend on it under the prefix `test`, and a
/// plain connection to look at (or tamper with) what it stores.
async fn redis_with_conn() -> (RedisServer, Backend, ::redis::aio::MultiplexedConnection) {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let b = backend::open(&config).expect("backend");
    let conn = ::redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    (server, b, conn)
}

/// The key of event `id`'s record under the prefix `test`.
fn record_key(b: &Backend, id: Uuid) -> String {
    let partitions = b.store.partitions();
    backend::Keys::new("test", partitions).event(partitions.of_id(id).expect("partition"), id)
}

/// On one Redis node, a batch of creates without idempotency keys is one
/// transaction whatever partitions its users fall in, and every event lands
/// in its own partition (found again from its id, queued and logged there).
#[tokio::test]
async fn redis_writes_a_batch_of_creates_in_one_transaction() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    b.store.prepare().await.expect("prepare");
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let partitions = b.store.partitions();
    let spread: std::collections::HashSet<_> =
        users.iter().map(|u| partitions.of_user(u)).collect();
    assert!(spread.len() > 1, "the users fall in one partition");
    let start = b.feed.latest_cursor().await.expect("cursor");
    reset_command_stats(&mut conn).await;
    let events = store_all(&b, users.iter().map(|u| new_event(u, "batched")).collect()).await;
    assert_eq!(exec_calls(&mut conn).await, 1);
    for (event, user) in events.iter().zip(&users) {
        assert_eq!(&event.user_id, user);
        assert_eq!(partitions.of_id(event.id), Some(partitions.of_user(user)));
        assert_eq!(b.store.get(event.id).await.expect("get"), *event);
    }
    let logged = read_after(&b, &start, 100, Duration::from_millis(100)).await;
    assert_eq!(logged.len(), users.len(), "one creation logged per event");
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let mut queued = 0;
    while queued < users.len() {
        let got = c.receive(100).await.expect("receive");
        assert!(!got.is_empty(), "only {queued} of {} queued", users.len());
        queued += got.len();
    }

    // With an idempotency key among them, the others are still one
    // transaction (the keyed one goes by script).
    reset_command_stats(&mut conn).await;
    let mut mixed: Vec<NewEvent> = users.iter().map(|u| new_event(u, "mixed")).collect();
    mixed.insert(3, full_event("req-mixed"));
    let created = store_all(&b, mixed).await;
    assert_eq!(created[3].request_id, "req-mixed");
    assert_eq!(created[4].user_id, users[3]);
    assert_eq!(exec_calls(&mut conn).await, 1, "one transaction");
}

/// Zeroes Redis's per-command counts (`INFO commandstats`).
async fn reset_command_stats(conn: &mut ::redis::aio::MultiplexedConnection) {
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("resetstat");
}

/// How many `EXEC`s Redis ran since its counts were last zeroed.
async fn exec_calls(conn: &mut ::redis::aio::MultiplexedConnection) -> u64 {
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("info");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_exec:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or_else(|| panic!("EXEC was not called: {stats}"))
}

/// A typical record (short fields, a small payload) is one Redis string
/// holding little more than its bytes: no hash, no field names.
#[tokio::test]
async fn redis_keeps_a_typical_record_compact() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    let input = EventInput {
        user_id: "ann".into(),
        description: "Your invoice 42 is ready to download".into(),
        category: "billing".into(),
        payload: serde_json::json!({"invoice": 42, "amount": "12.50"})
            .as_object()
            .cloned(),
        ..EventInput::default()
    };
    let event = b
        .store
        .create(NewEvent::validate(input, &Rules::default()).expect("valid"))
        .await
        .expect("create");
    let key = record_key(&b, event.id);
    let (kind, length, usage): (String, usize, usize) = ::redis::pipe()
        .cmd("TYPE")
        .arg(&key)
        .cmd("STRLEN")
        .arg(&key)
        .cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("TYPE, STRLEN, MEMORY USAGE");
    assert_eq!(kind, "string");
    // Head, index keys, then the protobuf bytes of the fields as sent.
    assert!(length < 200, "a record of {length} bytes");
    // Beside the bytes: the key, the key table's entry, the object header
    // and the allocator's rounding up.
    assert!(
        usage <= length + key.len() + 100,
        "{usage} bytes for a record of {length}"
    );
    assert_eq!(b.store.get(event.id).await.expect("get"), event);
}

/// Retention leaves nothing of a removed event in Redis: its record and
/// every index entry (user, session, category, type, status) go.
#[tokio::test]
async fn redis_retention_leaves_no_index_entry_behind() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    let event = b.store.create(full_event("r1")).await.expect("create");
    b.deliveries
        .record_attempts(&[attempt(event.id, "hooks", true)])
        .await
        .expect("attempt");
    b.store
        .update_status(event.id, EventStatus::Processed)
        .await
        .expect("processed");
    let swept = b
        .store
        .sweep_older_than(std::time::SystemTime::now() + Duration::from_secs(60), 10)
        .await
        .expect("sweep");
    assert_eq!(swept.0, 1, "removed");
    let partitions = b.store.partitions();
    let p = partitions.of_id(event.id).expect("partition");
    let keys = backend::Keys::new("test", partitions);
    let mut sizes = ::redis::pipe();
    for (kind, value) in [
        ("user", event.user_id.as_str()),
        ("session", event.session_id.as_str()),
        ("category", event.category.as_str()),
        ("type", event.event_type.as_str()),
        ("status", "PROCESSED"),
    ] {
        assert!(!value.is_empty(), "{kind} is set");
        sizes.zcard(keys.index(p, kind, value));
    }
    sizes.exists(record_key(&b, event.id));
    sizes.exists(keys.attempts(p, event.id));
    let left: Vec<u64> = sizes.query_async(&mut conn).await.expect("ZCARD");
    assert_eq!(left, [0, 0, 0, 0, 0, 0, 0]);
}

/// Queue and notification entries refer to their event's record. An entry
/// whose record is gone (removed by retention, say) has nothing to deliver:
/// the consumer acknowledges it and the feed skips it, and the events
/// around it come through.
#[tokio::test]
async fn redis_entries_of_a_removed_record_are_skipped() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    let start = b.feed.latest_cursor().await.expect("cursor");
    let kept = b
        .store
        .create(new_event("u", "kept"))
        .await
        .expect("create");
    let gone = b
        .store
        .create(new_event("u", "gone"))
        .await
        .expect("create");
    let removed: u64 = ::redis::cmd("DEL")
        .arg(record_key(&b, gone.id))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(removed, 1);

    let c = b.queue.consumer(consumer_config("c", 60_000));
    let got = c.receive(10).await.expect("receive");
    assert_eq!(
        got.iter().map(|d| d.event.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    c.ack(&[got[0].entry_id]).await.expect("ack");
    assert_eq!(
        b.queue.stats().await.expect("stats").pending,
        0,
        "the entry of the removed event was acknowledged"
    );
    let notes = b
        .feed
        .read_range(&start, None, 10)
        .await
        .expect("read_range");
    assert_eq!(
        notes.iter().map(|n| n.event.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    assert_eq!(notes[0].event, kept);

    // Reading one entry at a time from just after `kept`, the removed
    // event's entry is read past, not taken for the end of the log.
    let later = b
        .store
        .create(new_event("u", "later"))
        .await
        .expect("create");
    let mut after_kept = start.clone();
    after_kept.advance(notes[0].partition, notes[0].entry);
    let ids = |notes: Vec<herald::backend::Notification>| {
        notes.iter().map(|n| n.event.id).collect::<Vec<_>>()
    };
    let page = b
        .feed
        .read_range(&after_kept, None, 1)
        .await
        .expect("read_range");
    assert_eq!(ids(page), vec![later.id]);
    // The live reader is told it read through the removed event's entry.
    let live = b
        .feed
        .read_after(&after_kept, 1, Duration::from_secs(5), Statuses::ALL)
        .await
        .expect("read_after");
    assert!(live.notifications.is_empty());
    assert_ne!(live.through, after_kept);
    let live = read_after(&b, &live.through, 1, Duration::from_secs(5)).await;
    assert_eq!(ids(live), vec![later.id]);
}
