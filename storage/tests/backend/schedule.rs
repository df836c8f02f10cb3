//! Scheduled events: stored at once as SCHEDULED, off the work queue until
//! a mover releases them when due (once, earliest due first), cancelled
//! instead of queued (never both), and the partition's lease.

use std::time::SystemTime;

use herald_storage::{BackendKind, Released};

use super::*;

/// An event of `user` due `after` from now.
fn scheduled(user: &str, description: &str, after: Duration) -> NewEvent {
    let input = EventInput {
        user_id: user.into(),
        description: description.into(),
        deliver_after: Some(after),
        ..EventInput::default()
    };
    NewEvent::validate(input, &Rules::default()).expect("valid")
}

/// Every due event of every partition at `now`, as one mover.
async fn release_all(b: &Backend, now: SystemTime) -> Vec<Released> {
    let mut out = Vec::new();
    for p in b.store.partitions().all() {
        let moved = b
            .store
            .release_due(p, now, 100, "mover-a", Duration::from_secs(5))
            .await
            .expect("release")
            .expect("the lease is this mover's");
        out.extend(moved);
    }
    out
}

/// Every entry the queue gives now.
async fn drain(b: &Backend, name: &str) -> Vec<Uuid> {
    let consumer = b.queue.consumer(consumer_config(name, 60_000));
    let mut ids = Vec::new();
    loop {
        let batch = consumer.receive(100).await.expect("receive");
        if batch.is_empty() {
            return ids;
        }
        let entries: Vec<PartitionEntry> = batch.iter().map(|d| d.entry_id).collect();
        ids.extend(batch.into_iter().map(|d| d.event.id));
        consumer.ack(&entries).await.expect("ack");
    }
}

pub(super) async fn scheduled_events_wait_then_queue_once_in_due_order(b: Backend) {
    let hour = Duration::from_secs(3600);
    let later = store_all(
        &b,
        vec![
            scheduled("ann", "in two hours", 2 * hour),
            scheduled("bob", "in an hour", hour),
            scheduled("ann", "in three hours", 3 * hour),
        ],
    )
    .await;
    let now_event = b.store.create(new_event("carl", "now")).await.expect("now");
    // A time already past queues the event at once.
    let past = EventInput {
        user_id: "dora".into(),
        description: "already due".into(),
        deliver_at: Some(SystemTime::now() - Duration::from_secs(60)),
        ..EventInput::default()
    };
    let past = b
        .store
        .create(NewEvent::validate(past, &Rules::default()).expect("valid"))
        .await
        .expect("past");
    assert_eq!(past.status, EventStatus::Pending);
    for event in &later {
        assert_eq!(event.status, EventStatus::Scheduled);
        let stored = b.store.get(event.id).await.expect("get");
        assert_eq!(stored, *event, "deliver_at and all round-trip");
        assert!(stored.deliver_at.is_some_and(|t| t > SystemTime::now()));
    }
    let counts = b.store.status_counts().await.expect("counts");
    assert_eq!((counts.scheduled, counts.pending), (3, 2));
    let listed = all_pages(&b, query(|q| q.status = pb::EventStatus::Scheduled as i32)).await;
    assert_eq!(listed.len(), 3);

    // Only the events due now are on the queue.
    let mut queued = drain(&b, "c1").await;
    queued.sort();
    let mut wanted = vec![now_event.id, past.id];
    wanted.sort();
    assert_eq!(queued, wanted);
    assert!(release_all(&b, SystemTime::now()).await.is_empty());

    // Past the first two due times: those two, earliest due first.
    let cursor = b.feed.latest_cursor().await.expect("cursor");
    let moved = release_all(&b, SystemTime::now() + 2 * hour + Duration::from_secs(1)).await;
    let ids: Vec<Uuid> = moved.iter().map(|r| r.id).collect();
    let mut expected = vec![later[1].id, later[0].id];
    let mut sorted = ids.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "the two due ones");
    for r in &moved {
        let event = b.store.get(r.id).await.expect("get");
        assert_eq!(event.status, EventStatus::Pending);
        assert_eq!(Some(r.due), event.deliver_at);
    }
    let logged = read_after(&b, &cursor, 10, Duration::from_millis(100)).await;
    assert_eq!(logged.len(), 2, "each move is logged once");
    assert!(
        logged
            .iter()
            .all(|n| n.event.status == EventStatus::Pending)
    );
    let mut queued = drain(&b, "c1").await;
    queued.sort();
    assert_eq!(queued, expected, "queued once each");

    // Moved once: again, nothing.
    assert!(
        release_all(&b, SystemTime::now() + 2 * hour + Duration::from_secs(1))
            .await
            .is_empty()
    );
    let counts = b.store.status_counts().await.expect("counts");
    assert_eq!((counts.scheduled, counts.pending), (1, 4));

    // Within one partition, the earliest due goes first.
    let ann: Vec<_> = store_all(
        &b,
        (0..5)
            .map(|i| scheduled("erin", &format!("#{i}"), hour * (10 - i)))
            .collect(),
    )
    .await;
    let p = b.store.partitions().of_user("erin");
    let first = b
        .store
        .release_due(
            p,
            SystemTime::now() + hour * 20,
            2,
            "mover-a",
            Duration::from_secs(5),
        )
        .await
        .expect("release")
        .expect("lease");
    assert_eq!(
        first.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ann[4].id, ann[3].id],
        "at most 2, the earliest due"
    );
}

pub(super) async fn a_scheduled_event_is_cancelled_or_queued_never_both(b: Backend) {
    let hour = Duration::from_secs(3600);
    let event = b
        .store
        .create(scheduled("ann", "reminder", hour))
        .await
        .expect("create");
    let cancelled = b
        .store
        .update_status(event.id, EventStatus::Cancelled)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, EventStatus::Cancelled);
    assert!(
        release_all(&b, SystemTime::now() + 2 * hour)
            .await
            .is_empty()
    );
    assert!(drain(&b, "c2").await.is_empty(), "never queued");
    // Again: a no-op success; a queued event cannot be cancelled.
    assert_eq!(
        b.store
            .update_status(event.id, EventStatus::Cancelled)
            .await
            .expect("again")
            .status,
        EventStatus::Cancelled
    );
    let queued = b.store.create(new_event("ann", "now")).await.expect("now");
    assert!(matches!(
        b.store
            .update_status(queued.id, EventStatus::Cancelled)
            .await,
        Err(Error::InvalidTransition {
            from: EventStatus::Pending,
            to: EventStatus::Cancelled
        })
    ));
    assert!(matches!(
        b.store.update_status(event.id, EventStatus::Pending).await,
        Err(Error::InvalidTransition { .. })
    ));

    // Cancels racing the mover: each event ends cancelled (and never
    // queued) or queued once (and its cancel refused).
    let racing = store_all(
        &b,
        (0..40)
            .map(|i| scheduled(&format!("u{}", i % 7), &format!("race {i}"), hour))
            .collect(),
    )
    .await;
    let store = b.store.clone();
    let cancels = racing.iter().map(|e| {
        let store = store.clone();
        let id = e.id;
        async move { store.update_status(id, EventStatus::Cancelled).await }
    });
    let (cancels, moved) = tokio::join!(
        futures_util::future::join_all(cancels),
        release_all(&b, SystemTime::now() + 2 * hour)
    );
    let mut moved: Vec<Uuid> = moved.into_iter().map(|r| r.id).collect();
    for (event, cancel) in racing.iter().zip(&cancels) {
        let now = b.store.get(event.id).await.expect("get");
        match cancel {
            Ok(_) => assert_eq!(now.status, EventStatus::Cancelled),
            Err(Error::InvalidTransition { .. }) => {
                assert_eq!(now.status, EventStatus::Pending);
            }
            Err(err) => panic!("cancel: {err}"),
        }
    }
    moved.sort();
    let mut pending: Vec<Uuid> = racing
        .iter()
        .zip(&cancels)
        .filter(|(_, c)| c.is_err())
        .map(|(e, _)| e.id)
        .collect();
    pending.sort();
    assert_eq!(moved, pending, "the mover moved what was not cancelled");
    // (The queue also gives `queued`, made before the race.)
    let mut raced: Vec<Uuid> = drain(&b, "c2")
        .await
        .into_iter()
        .filter(|id| *id != queued.id)
        .collect();
    raced.sort();
    assert_eq!(raced, pending, "each queued once, none cancelled");
}

pub(super) async fn a_partitions_lease_keeps_other_movers_out(b: Backend) {
    let p = b.store.partitions().of_user("ann");
    let now = SystemTime::now();
    let lease = Duration::from_millis(300);
    let mine = b
        .store
        .release_due(p, now, 10, "a", lease)
        .await
        .expect("a");
    assert!(mine.is_some());
    let theirs = b
        .store
        .release_due(p, now, 10, "b", lease)
        .await
        .expect("b");
    if b.kind == BackendKind::Memory {
        assert!(theirs.is_some(), "one process: no lease to hold");
        return;
    }
    assert!(theirs.is_none(), "a holds the lease");
    // The holder renews it; once it stops, the lease lapses.
    assert!(
        b.store
            .release_due(p, now, 10, "a", lease)
            .await
            .expect("a")
            .is_some()
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        b.store
            .release_due(p, now, 10, "b", lease)
            .await
            .expect("b")
            .is_some()
    );
}
