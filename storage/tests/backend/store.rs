//! Creates, status changes, idempotency and status counts.

use super::*;

pub(super) async fn create_then_get(b: Backend) {
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

pub(super) async fn status_transitions(b: Backend) {
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

pub(super) async fn batches_keep_each_items_outcome(b: Backend) {
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

pub(super) async fn concurrent_status_changes_all_apply(b: Backend) {
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
pub(super) async fn racing_status_changes_apply_one_each(b: Backend) {
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

pub(super) async fn every_field_round_trips(b: Backend) {
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

pub(super) async fn repeated_request_ids_return_the_first_event(b: Backend) {
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

/// Counts per status follow every write, and only real changes.
pub(super) async fn status_counts_follow_every_write(b: Backend) {
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

/// A request id is scoped per client and user, on every backend alike.
pub(super) async fn request_ids_are_scoped_per_client_and_user(b: Backend) {
    // Client ids and request ids that run together as text are still
    // apart: `shop` + `eu:1` is not `shop:eu` + `1`, for any user (on
    // Redis they shared a key when their users shared a partition).
    for user in ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"] {
        let a = b
            .store
            .create(keyed_event(user, "eu:1").with_source("shop"))
            .await
            .expect("create");
        let c = b
            .store
            .create(keyed_event(user, "1").with_source("shop:eu"))
            .await
            .expect("create");
        assert_ne!(a.id, c.id, "{user}: another client's event");
        assert_eq!(c.source, "shop:eu");
    }
    // A request id is scoped per client and user: the same id for another
    // user is another request, never an answer with someone else's event.
    let mut firsts = Vec::new();
    for user in ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"] {
        let e = b
            .store
            .create(keyed_event(user, "same").with_source("web"))
            .await
            .expect("create");
        assert_eq!(e.user_id, user, "answered with another user's event");
        let again = b
            .store
            .create(keyed_event(user, "same").with_source("web"))
            .await
            .expect("repeat");
        assert_eq!(again, e, "{user}: a repeat answers the first event");
        firsts.push(e.id);
    }
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), 8);
}

/// A request id answers with its event only within the window.
pub(super) async fn request_ids_expire_after_the_window(config: BackendTarget) {
    let options = storage::StoreOptions {
        request_id_window: Duration::from_secs(1),
        ..Default::default()
    };
    let b = storage::open_with(&config, &options).expect("backend");
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
