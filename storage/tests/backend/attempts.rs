//! The delivery log: attempts kept per event and channel.

use super::*;

/// Attempts are kept per event, oldest first (the newest
/// MAX_ATTEMPTS_KEPT); a success marks its channel in the record, so every
/// later delivery of the event (reclaimed, redriven, dead-lettered) says
/// which channels took it.
pub(super) async fn delivery_attempts_are_kept_and_mark_channels(b: Backend) {
    let e = b.store.create(new_event("u", "hi")).await.expect("create");
    let c = b.queue.consumer(consumer_config("c", 60_000));
    let first = c.receive(10).await.expect("receive");
    assert_eq!(first.len(), 1);
    assert!(first[0].delivered.is_empty());
    let attempts = [
        attempt(e.id, "hooks", false),
        attempt(e.id, "hooks", true),
        attempt(e.id, "irc", true),
        // Sent in a digest: the attempt names it.
        DeliveryAttempt {
            digest_id: Some(Uuid::now_v7()),
            ..attempt(e.id, "hooks", true)
        },
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
    b.dead_letters
        .dead_letter(&again[0], "irc down")
        .await
        .expect("dead");
    let dead = b
        .dead_letters
        .dead_letters(&Cursor::start(b.store.partitions()), 10)
        .await
        .expect("dead letters");
    assert_eq!(dead[0].delivery.delivered, ["hooks", "irc"]);
    b.store
        .update_status(e.id, EventStatus::Failed)
        .await
        .expect("failed");
    b.dead_letters
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
    storage::sweep(b.store.as_ref(), cutoff, 10)
        .await
        .expect("sweep");
    assert!(matches!(
        b.deliveries.attempts(other.id).await,
        Err(Error::NotFound(_))
    ));
}
