//! What ordered delivery reads and does: each user's earliest PENDING
//! event (by id, so by creation), kept with every status change, and an
//! entry kept from being reclaimed while it waits for its turn.

use std::time::SystemTime;

use super::*;

pub(super) async fn first_queued_follows_each_users_pending_events(b: Backend) {
    let s = &b.store;
    let first = |user: &'static str| {
        let s = s.clone();
        async move { s.first_queued(user).await.expect("first_queued") }
    };
    // A deployment without ordering does not index its creates.
    let before = s.create(new_event("ann", "before")).await.expect("create");
    assert_eq!(first("ann").await, None);
    s.update_status(before.id, EventStatus::Processed)
        .await
        .expect("processed");
    s.use_ordering().await.expect("use ordering");
    let e1 = s.create(new_event("ann", "one")).await.expect("create");
    let e2 = s.create(new_event("ann", "two")).await.expect("create");
    let e3 = s.create(new_event("bob", "three")).await.expect("create");
    let later = EventInput {
        user_id: "ann".into(),
        description: "later".into(),
        deliver_after: Some(Duration::from_secs(3600)),
        ..EventInput::default()
    };
    let later = s
        .create(NewEvent::validate(later, &Rules::default()).expect("valid"))
        .await
        .expect("create");
    assert_eq!(first("ann").await, Some(e1.id));
    assert_eq!(first("bob").await, Some(e3.id));
    assert_eq!(first("carl").await, None);

    s.update_status(e1.id, EventStatus::Processed)
        .await
        .expect("processed");
    assert_eq!(first("ann").await, Some(e2.id));
    s.update_status(e2.id, EventStatus::Failed)
        .await
        .expect("failed");
    assert_eq!(first("ann").await, None, "a scheduled event is not queued");
    let p = s.partitions().of_user("ann");
    s.release_due(
        p,
        SystemTime::now() + Duration::from_secs(7200),
        10,
        "m",
        Duration::from_secs(5),
    )
    .await
    .expect("release");
    assert_eq!(first("ann").await, Some(later.id), "released: queued");
    s.update_status(e2.id, EventStatus::Pending)
        .await
        .expect("redriven");
    assert_eq!(first("ann").await, Some(e2.id), "the earlier one again");

    // A batch's events are made, and come first, in the order given.
    let batch = store_all(
        &b,
        (0..20)
            .map(|i| new_event(&format!("u{}", i % 2), &format!("#{i}")))
            .collect(),
    )
    .await;
    assert_eq!(first("u0").await, Some(batch[0].id));
    assert_eq!(first("u1").await, Some(batch[1].id));
    for user in ["u0", "u1"] {
        let ids: Vec<Uuid> = batch
            .iter()
            .filter(|e| e.user_id == user)
            .map(|e| e.id)
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a user's ids ascend in creation order"
        );
    }
}

pub(super) async fn a_touched_entry_is_kept_from_other_consumers(b: Backend) {
    let idle = 600;
    let a = b.queue.consumer(consumer_config("a", idle));
    let other = b.queue.consumer(consumer_config("b", idle));
    b.store
        .create(new_event("ann", "waiting"))
        .await
        .expect("create");
    let got = a.receive(10).await.expect("receive");
    assert_eq!(got.len(), 1);
    let entry = got[0].entry_id;
    // Another consumer's touch does not take it.
    other.touch(&[entry]).await.expect("touch");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(idle / 2)).await;
        a.touch(&[entry]).await.expect("touch");
        assert!(
            other.receive(10).await.expect("receive").is_empty(),
            "touched: not idle"
        );
    }
    assert_eq!(
        a.pending_by_consumer().await.expect("pending"),
        vec![("a".to_owned(), 1)]
    );
    // Left alone, it is reclaimed, counted as a second delivery.
    let mut reclaimed = Vec::new();
    for _ in 0..40 {
        reclaimed = other.receive(10).await.expect("receive");
        if !reclaimed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reclaimed.len(), 1, "reclaimed once idle");
    assert_eq!(reclaimed[0].deliveries, 2, "touches counted no delivery");
}
