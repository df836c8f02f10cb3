//! Digests: each event joins exactly one (however often and however
//! concurrently it joins), the first opens it and sets when it is due, the
//! one that fills it seals it, a taken digest is sealed and not taken again
//! until its lease runs out, with the channels that took it kept.

use std::time::SystemTime;

use herald::partition::new_id;
use herald_storage::{Digest, DigestKey, Join};

use super::*;

fn key(user: &str) -> DigestKey {
    DigestKey {
        user: user.into(),
        event_type: "comment.created".into(),
        channels: vec!["mail".into(), "hooks".into()],
        required: false,
    }
}

/// `event` joining the digest of `user`'s comments, `now`.
fn join(b: &Backend, user: &str, event: Uuid, now: SystemTime, max_events: u32) -> Join {
    Join {
        event,
        key: key(user),
        window: Duration::from_secs(2),
        max_events,
        new_digest: new_id(b.store.partitions().of_user(user)),
        now,
    }
}

/// Every digest of every partition due at `now`, with a lease of 10 s.
async fn take_all(b: &Backend, now: SystemTime) -> Vec<Digest> {
    let mut out = Vec::new();
    for p in b.store.partitions().all() {
        let taken = b
            .digests
            .take_due_digests(p, now, 100, Duration::from_secs(10))
            .await
            .expect("take");
        out.extend(taken);
    }
    out.sort_by_key(|d| d.opened_at);
    out
}

async fn events_of(b: &Backend, user: &str, n: usize) -> Vec<Uuid> {
    let events = (0..n).map(|i| new_event(user, &format!("#{i}"))).collect();
    store_all(b, events).await.iter().map(|e| e.id).collect()
}

pub(super) async fn each_event_joins_one_digest_taken_once_due(b: Backend) {
    b.store.use_ordering().await.expect("use ordering");
    let t0 = SystemTime::now();
    let ann = events_of(&b, "ann", 25).await;
    assert_eq!(
        b.store.first_queued("ann").await.expect("first"),
        Some(ann[0])
    );
    let mut digest = None;
    for (i, id) in ann.iter().enumerate() {
        let at = t0 + Duration::from_millis(10 * i as u64);
        // Every join of one event, concurrent or repeated, answers one digest.
        let joins = (0..4).map(|_| {
            let (digests, join) = (b.digests.clone(), join(&b, "ann", *id, at, 100));
            async move { digests.join_digest(&join).await.expect("join") }
        });
        let ids = futures_util::future::join_all(joins).await;
        assert!(ids.iter().all(|d| *d == ids[0]), "{ids:?}");
        assert_eq!(
            *digest.get_or_insert(ids[0]),
            ids[0],
            "one digest for the window"
        );
    }
    let digest = digest.expect("joined");
    assert_eq!(
        b.store.partitions().of_id(digest),
        Some(b.store.partitions().of_user("ann")),
        "a digest lives in its user's partition"
    );
    assert_eq!(
        b.store.first_queued("ann").await.expect("first"),
        None,
        "an event held in a digest is not waited for"
    );
    let bob = events_of(&b, "bob", 1).await;
    let bobs = b
        .digests
        .join_digest(&join(&b, "bob", bob[0], t0, 100))
        .await
        .expect("join");
    assert_ne!(bobs, digest, "another user, another digest");
    let gone = join(&b, "ann", Uuid::now_v7(), t0, 100);
    assert!(matches!(
        b.digests.join_digest(&gone).await,
        Err(Error::NotFound(_))
    ));

    assert!(
        take_all(&b, t0 + Duration::from_millis(1900))
            .await
            .is_empty(),
        "nothing is due before the window closes"
    );
    let due = t0 + Duration::from_secs(2);
    let taken = take_all(&b, due).await;
    assert_eq!(taken.len(), 2, "{taken:?}");
    let of = |id: Uuid| taken.iter().find(|d| d.id == id).expect("taken");
    let first = of(digest);
    assert_eq!(
        first.members, ann,
        "every member once, in the order they joined"
    );
    assert_eq!((first.key.clone(), first.takes), (key("ann"), 1));
    assert!(first.delivered.is_empty());
    assert_eq!(of(bobs).members, bob);
    assert!(take_all(&b, due).await.is_empty(), "taken: leased");

    // Taken means sealed: the next event opens the next digest.
    let late = events_of(&b, "ann", 1).await;
    let next = b
        .digests
        .join_digest(&join(&b, "ann", late[0], due, 100))
        .await
        .expect("join");
    assert_ne!(next, digest);

    b.digests.digest_took(digest, "mail").await.expect("took");
    b.digests.digest_took(digest, "mail").await.expect("took");
    let again = take_all(&b, due + Duration::from_secs(10)).await;
    let again: Vec<&Digest> = again.iter().filter(|d| d.id == digest).collect();
    assert_eq!(again.len(), 1, "the lease ran out: taken again");
    assert_eq!(again[0].members, ann);
    assert_eq!(again[0].delivered, ["mail"]);
    assert_eq!(again[0].takes, 2);

    b.digests.finish_digest(digest).await.expect("finish");
    b.digests.finish_digest(bobs).await.expect("finish");
    b.digests
        .digest_took(digest, "hooks")
        .await
        .expect("took, gone");
    let left = take_all(&b, due + Duration::from_secs(3600)).await;
    let left: Vec<Uuid> = left.iter().map(|d| d.id).collect();
    assert_eq!(left, [next], "finished digests are gone");
}

pub(super) async fn the_event_that_fills_a_digest_seals_it(b: Backend) {
    let t0 = SystemTime::now();
    let ann = events_of(&b, "ann", 25).await;
    let mut digests: Vec<Uuid> = Vec::new();
    for id in &ann {
        let digest = b
            .digests
            .join_digest(&join(&b, "ann", *id, t0, 10))
            .await
            .expect("join");
        if digests.last() != Some(&digest) {
            digests.push(digest);
        }
    }
    assert_eq!(digests.len(), 3);
    let full = take_all(&b, t0).await;
    let sizes: Vec<usize> = full.iter().map(|d| d.members.len()).collect();
    assert_eq!(sizes, [10, 10], "full digests are due at once");
    assert_eq!(full[0].members, ann[..10]);
    assert_eq!(full[1].members, ann[10..20]);
    let rest = take_all(&b, t0 + Duration::from_secs(2)).await;
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].id, &rest[0].members[..]), (digests[2], &ann[20..]));
}
