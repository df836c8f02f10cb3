//! Each user's inbox: notifications (PROCESSED, read once OPENED), the
//! unread ones and their count, kept with every status change and carried
//! on the notification log.

use herald::query::InboxView;

use super::*;

/// One page of `user`'s inbox `view`, newest first.
async fn inbox(b: &Backend, user: &str, view: InboxView) -> Vec<(String, EventStatus)> {
    let q = ListQuery {
        user_id: Some(user.into()),
        inbox: Some(view),
        descending: true,
        page_size: 1,
        ..ListQuery::default()
    };
    all_pages(b, q)
        .await
        .into_iter()
        .map(|e| (e.description, e.status))
        .collect()
}

async fn set(b: &Backend, event: &herald::Event, status: EventStatus) {
    b.store
        .apply(StatusChange::new(event.id, status))
        .await
        .expect("status change");
}

pub(super) async fn the_inbox_and_its_unread_count_follow_status_changes(b: Backend) {
    let start = b.feed.latest_cursor().await.expect("cursor");
    let events = store_all(
        &b,
        vec![
            new_event("ann", "a1"),
            new_event("ann", "a2"),
            new_event("ann", "a3"),
            new_event("bob", "b1"),
        ],
    )
    .await;
    let unread = |user: &'static str| {
        let store = b.store.clone();
        async move { store.unread_count(user).await.expect("unread count") }
    };
    assert_eq!(unread("ann").await, 0, "nothing sent yet");
    assert!(inbox(&b, "ann", InboxView::All).await.is_empty());

    for event in [&events[0], &events[1], &events[3]] {
        set(&b, event, EventStatus::Processed).await;
    }
    assert_eq!((unread("ann").await, unread("bob").await), (2, 1));
    let processed = |d: &str| (d.to_owned(), EventStatus::Processed);
    let opened = |d: &str| (d.to_owned(), EventStatus::Opened);
    assert_eq!(
        inbox(&b, "ann", InboxView::All).await,
        [processed("a2"), processed("a1")]
    );

    set(&b, &events[0], EventStatus::Opened).await;
    set(&b, &events[0], EventStatus::Opened).await;
    assert_eq!(unread("ann").await, 1, "read once, however often marked");
    assert_eq!(
        inbox(&b, "ann", InboxView::All).await,
        [processed("a2"), opened("a1")]
    );
    assert_eq!(inbox(&b, "ann", InboxView::Unread).await, [processed("a2")]);
    assert_eq!(inbox(&b, "bob", InboxView::Unread).await, [processed("b1")]);

    // The log carries the count with each change that moved it.
    let logged: Vec<(String, EventStatus, Option<u64>)> =
        read_after(&b, &start, 100, Duration::ZERO)
            .await
            .into_iter()
            .map(|n| (n.event.description, n.event.status, n.unread))
            .collect();
    let moved: Vec<_> = logged
        .iter()
        .filter(|(d, ..)| d.starts_with('a'))
        .map(|(d, s, n)| (d.as_str(), *s, *n))
        .collect();
    assert_eq!(
        moved,
        [
            ("a1", EventStatus::Pending, None),
            ("a2", EventStatus::Pending, None),
            ("a3", EventStatus::Pending, None),
            ("a1", EventStatus::Processed, Some(1)),
            ("a2", EventStatus::Processed, Some(2)),
            ("a1", EventStatus::Opened, Some(1)),
        ]
    );

    // Retention takes removed notifications out of the inbox and its count.
    let (removed, _) = storage::sweep(
        b.store.as_ref(),
        std::time::SystemTime::now() + Duration::from_secs(1),
        100,
    )
    .await
    .expect("sweep");
    assert_eq!(removed, 3, "the settled ones; a3 is still PENDING");
    assert_eq!((unread("ann").await, unread("bob").await), (0, 0));
    assert!(inbox(&b, "ann", InboxView::All).await.is_empty());
}
