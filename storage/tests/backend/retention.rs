//! Retention: old settled events go, pending ones stay.

use super::*;

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
/// logger does (`storage::sweep`), after checking that a first
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
            .remove_older_than(storage::RetentionSlice {
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
    let (rest, kept) = storage::sweep(b.store.as_ref(), cutoff, slice)
        .await
        .expect("retention sweep");
    (removed + rest, kept)
}

pub(super) async fn retention_removes_old_settled_events_only(b: Backend) {
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
    b.dead_letters
        .dead_letter(doomed, "gave up")
        .await
        .expect("dead letter");
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
    assert_eq!(
        b.dead_letters
            .trim_dead_letters(hour_ago)
            .await
            .expect("trim"),
        0
    );

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
    assert_eq!(
        b.dead_letters.trim_dead_letters(later).await.expect("trim"),
        1
    );
    assert!(
        b.dead_letters
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
        storage::sweep(b.store.as_ref(), later, 2)
            .await
            .expect("sweep"),
        (0, 0),
        "the store's own sweep agrees"
    );
}

/// Retention over many settled events (see `lists::seed_many_settled`):
/// those created after the cutoff are kept, slice after slice, however
/// many come before the removable ones; a later cutoff removes exactly
/// the settled events that occurred before it, and what is left still
/// lists in order and is counted.
pub(super) async fn retention_walks_many_settled_events(b: Backend) {
    let events = super::lists::seed_many_settled(&b).await;
    let settled = |e: &&herald::Event| e.status != EventStatus::Pending;
    let now = std::time::SystemTime::now();
    let early = now - Duration::from_secs(1000);
    let (removed, kept) = sweep_all(&b, early, 50).await;
    assert_eq!(removed, 0, "every event was created after the cutoff");
    let older = events
        .iter()
        .filter(settled)
        .filter(|e| e.occurred_at < early)
        .count();
    assert_eq!(kept, older as u64, "each kept candidate counted once");

    let cutoff = now + Duration::from_secs(100);
    let (removed, _) = sweep_all(&b, cutoff, 50).await;
    let (gone, left): (Vec<_>, Vec<_>) = events
        .iter()
        .cloned()
        .partition(|e| settled(&e) && e.occurred_at < cutoff);
    assert_eq!(removed, gone.len() as u64);
    assert!(left.iter().any(|e| e.status == EventStatus::Processed));
    let listed = all_pages(&b, query(|r| r.page_size = 37)).await;
    let expected = page_of(&query(|r| r.page_size = 1000), left.clone()).events;
    assert_eq!(super::lists::ids(&listed), super::lists::ids(&expected));
    let mut counts = b.store.status_counts().await.expect("counts");
    for s in EventStatus::ALL {
        let n = left.iter().filter(|e| e.status == s).count() as u64;
        assert_eq!(*counts.slot(s), n, "{}", s.as_str());
    }
}
