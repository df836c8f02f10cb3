//! The notification log: every change in order, blocking reads, bounded
//! history.

use super::*;

pub(super) async fn feed_logs_every_change_in_order(b: Backend) {
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

pub(super) async fn blocked_feed_read_wakes_on_write(b: Backend) {
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

/// The notification log keeps at most its maximum length (Redis trims whole
/// nodes, so a little more) and at most its age, and says what it trimmed.
pub(super) async fn feed_history_is_bounded_and_says_what_was_trimmed(config: BackendTarget) {
    let options = storage::StoreOptions {
        notifications_max_len: 50,
        ..Default::default()
    };
    let b = storage::open_with(&config, &options).expect("backend");
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
