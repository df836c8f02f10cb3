//! The work queue: delivery, acknowledgement, reclaiming, dead letters,
//! trimming.

use super::*;

pub(super) async fn queue_delivers_once_and_acks(b: Backend) {
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

pub(super) async fn idle_entries_are_reclaimed_and_counted(b: Backend) {
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

pub(super) async fn restarted_consumer_drains_its_own_pending_first(b: Backend) {
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

pub(super) async fn dead_letter_acknowledges(b: Backend) {
    let c = b.queue.consumer(consumer_config("c", 60_000));
    for i in 0..3 {
        b.store
            .create(new_event("u", &format!("doomed {i}")))
            .await
            .expect("create");
    }
    let got = c.receive(10).await.expect("receive");
    for (i, delivery) in got.iter().enumerate() {
        b.dead_letters
            .dead_letter(delivery, &format!("gave up {i}"))
            .await
            .expect("dead letter");
    }
    assert!(c.pending_by_consumer().await.expect("pending").is_empty());

    // Listed oldest first with their reasons, a page at a time, and removable.
    let start = Cursor::start(b.store.partitions());
    let all = b
        .dead_letters
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
    let page = b
        .dead_letters
        .dead_letters(&after_first, 1)
        .await
        .expect("page");
    assert_eq!(page, all[1..2]);
    // A redrive of an event removes its dead letters, and only those.
    let redriven = b
        .dead_letters
        .redrive_many(&[StatusChange::new(
            all[1].delivery.event.id,
            EventStatus::Pending,
        )])
        .await
        .expect("redrive");
    assert!(redriven[0].is_ok(), "{redriven:?}");
    let left = b
        .dead_letters
        .dead_letters(&start, 10)
        .await
        .expect("dead letters");
    assert_eq!(left, [all[0].clone(), all[2].clone()]);
    // Redriving the rest takes the events of the oldest dead letters first.
    let (outcomes, more) = storage::redrive_oldest(b.dead_letters.as_ref(), None, 1)
        .await
        .expect("redrive all");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].as_ref().expect("redriven").id,
        all[0].delivery.event.id
    );
    assert!(more, "one more dead letter is left");
    let (outcomes, more) = storage::redrive_oldest(b.dead_letters.as_ref(), None, 10)
        .await
        .expect("redrive all");
    assert_eq!(outcomes.len(), 1);
    assert!(!more);
    assert!(
        b.dead_letters
            .dead_letters(&start, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
}

pub(super) async fn redrive_requeues(b: Backend) {
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

pub(super) async fn concurrent_creates_are_all_queued(b: Backend) {
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

pub(super) async fn queue_trim_keeps_unacknowledged_work(b: Backend) {
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
    if b.kind != storage::BackendKind::Memory {
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
    if b.kind != storage::BackendKind::Memory {
        // Everything but the last delivered entry.
        assert_eq!((trimmed, stats.length), (3, 1));
    }
}

/// A partition with a long queue does not hold back another's entries: they
/// come within the first two batches, not after the 300 queued before them.
pub(super) async fn no_busy_partition_starves_the_others(b: Backend) {
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
