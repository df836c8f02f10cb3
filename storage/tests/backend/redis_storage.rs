//! What Redis alone stores and how: the layout, transactions, record size,
//! replicas, a cluster.

use ::redis::AsyncCommands;

use super::*;

/// After Redis lost its data (a restart without persistence), the consumer
/// recreates the group and carries on.
#[tokio::test]
async fn redis_consumer_recreates_a_vanished_group() {
    if skip_redis_tests() {
        return;
    }
    let mut server = RedisServer::start();
    let config = redis_config(&server);
    let b = storage::open(&config).expect("redis");
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

/// A command refused inside a create's transaction for a passing reason
/// (`LOADING` while Redis reloads its data, `READONLY` on a replica, as
/// here: a master demoted in a failover) aborts the transaction with
/// `EXECABORT`: the create is UNAVAILABLE, retried like any outage, never
/// INTERNAL.
#[tokio::test]
async fn redis_a_transaction_refused_for_a_passing_reason_is_unavailable() {
    if skip_redis_tests() {
        return;
    }
    let master = RedisServer::start();
    let replica = RedisServer::start();
    let b = storage::open(&redis_config(&replica)).expect("redis");
    b.store
        .create(new_event("u", "before"))
        .await
        .expect("create");
    let client = ::redis::Client::open(replica.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let () = ::redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query_async(&mut conn)
        .await
        .expect("replicaof");
    match b.store.create(new_event("u", "on a replica")).await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("a create on a replica: {other:?}"),
    }
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
        let options = storage::StoreOptions {
            partitions: Partitions::new(partitions).expect("partitions"),
            ..Default::default()
        };
        let config = BackendTarget::Redis {
            url: server.url(),
            prefix: prefix.into(),
        };
        storage::open_with(&config, &options).expect("backend")
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
/// (it may be lost with its master); the partition's later writes are
/// refused at once, writing nothing, until a replica is there, and then go
/// on by themselves; a retry with the same request id finds the event
/// instead of making another.
#[tokio::test]
async fn redis_writes_wait_for_replicas() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start(); // no replica
    let options = storage::StoreOptions {
        wait_replicas: 1,
        ..Default::default()
    };
    let config = redis_config(&server);
    let b = storage::open_with(&config, &options).expect("backend");
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
    // The partition is refused at once from then on, writing nothing, and
    // said to take no writes.
    let other = |request_id: &str| {
        let input = EventInput {
            user_id: "u".into(),
            description: "refused".into(),
            request_id: request_id.into(),
            ..EventInput::default()
        };
        NewEvent::validate(input, &Rules::default()).expect("valid")
    };
    let asked = std::time::Instant::now();
    match b.store.create(other("r2")).await {
        Err(Error::Unavailable(why)) => {
            assert!(why.contains("refused until one is back"), "{why}")
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(asked.elapsed() < Duration::from_millis(500), "at once");
    let p = b.store.partitions().of_user("u");
    let down = b.store.unwritable_partitions().await.expect("partitions");
    assert_eq!(down.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [p]);
    // A replica comes: the partition's writes resume by themselves.
    let replica = RedisServer::start();
    let attached = std::process::Command::new("redis-cli")
        .args(["-p", &replica.port().to_string(), "replicaof", "127.0.0.1"])
        .arg(server.port().to_string())
        .output()
        .expect("redis-cli");
    assert!(attached.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match b.store.create(other("r3")).await {
            Ok(_) => break,
            Err(err) => assert!(std::time::Instant::now() < deadline, "still refused: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        b.store
            .unwritable_partitions()
            .await
            .expect("partitions")
            .is_empty()
    );
    let plain = storage::open(&config).expect("backend");
    let first = plain.store.create(input()).await.expect("the retry");
    assert_eq!(
        plain.store.status_counts().await.expect("counts").total(),
        2,
        "the first write, found again by the retry, and the one after the replica came"
    );
    assert_eq!(first.description, "waited");
}

/// A private Redis with a backend on it under the prefix `test`, and a
/// plain connection to look at (or tamper with) what it stores.
async fn redis_with_conn() -> (RedisServer, Backend, ::redis::aio::MultiplexedConnection) {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let b = storage::open(&config).expect("backend");
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
    storage::Keys::new("test", partitions).event(partitions.of_id(id).expect("partition"), id)
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
    command_calls(conn, "exec").await
}

/// How many times Redis ran `command` (lowercase; in scripts too) since
/// its counts were last zeroed.
async fn command_calls(conn: &mut ::redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("info");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or_else(|| panic!("{command} was not called: {stats}"))
}

/// A page resumed inside a large group of events that occurred at the
/// same instant starts from its token's place, found by a binary search,
/// not by reading the group from its start: resuming after the 3,999th of
/// 4,000 tied events reads a dozen single entries, whatever the page
/// token names. Counted in Redis's own command calls, not timed.
#[tokio::test]
async fn redis_resumes_inside_a_tie_group_without_reading_it_from_the_start() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    let at = std::time::SystemTime::now() - Duration::from_secs(60);
    for _ in 0..8 {
        let batch = (0..500)
            .map(|i| {
                let input = EventInput {
                    user_id: "tied".into(),
                    description: format!("tie {i}"),
                    occurred_at: Some(at),
                    ..EventInput::default()
                };
                NewEvent::validate(input, &Rules::default()).expect("valid")
            })
            .collect();
        store_all(&b, batch).await;
    }
    let everything = all_pages(&b, query(|r| r.user_id = "tied".into())).await;
    assert_eq!(everything.len(), 4000);
    for descending in [false, true] {
        let mut q = query(|r| {
            r.user_id = "tied".into();
            r.page_size = 1;
            if descending {
                r.order_by = "occurred_at desc".into();
            }
        });
        let mut order = everything.clone();
        if descending {
            order.reverse();
        }
        q.after = Some(herald::query::Position::of(&order[3998]));
        reset_command_stats(&mut conn).await;
        let page = b.store.list(&q).await.expect("list");
        assert_eq!(
            page.events,
            [order[3999].clone()],
            "descending {descending}"
        );
        let reads = command_calls(&mut conn, "zrange").await;
        assert!(
            reads <= 16,
            "{reads} ZRANGE calls to resume (descending {descending})"
        );
    }
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

/// Sorted-set entries with their scores.
type Scored = Vec<(Vec<u8>, f64)>;

/// A settled status's index is kept in buckets of at most 128 entries,
/// which Redis keeps as listpacks (about a quarter of a skip list's bytes
/// an entry), however the entries arrive; only a tie group too big for one
/// bucket makes a bigger one. Together they hold the status's events,
/// which its count says too.
#[tokio::test]
async fn redis_keeps_settled_status_indexes_in_compact_buckets() {
    if skip_redis_tests() {
        return;
    }
    let (_server, b, mut conn) = redis_with_conn().await;
    let events = super::lists::seed_many_settled(&b).await;
    let partitions = b.store.partitions();
    let p = partitions.of_id(events[0].id).expect("partition");
    let keys = storage::Keys::new("test", partitions);
    let processed = events
        .iter()
        .filter(|e| e.status == EventStatus::Processed && partitions.of_id(e.id) == Some(p))
        .count();
    let starts: Vec<String> = conn
        .zrange(keys.status_directory(p, EventStatus::Processed), 0, -1)
        .await
        .expect("ZRANGE");
    assert!(
        starts.len() >= 3,
        "{} buckets for {processed} events",
        starts.len()
    );
    assert_eq!(starts[0], "-inf");
    let (mut total, mut compact, mut compact_bytes, mut tied) = (0, 0, 0, 0);
    for start in &starts {
        let key = keys.status_bucket(p, EventStatus::Processed, start);
        let (n, encoding, bytes, first, last): (usize, String, usize, Scored, Scored) =
            ::redis::pipe()
                .zcard(&key)
                .cmd("OBJECT")
                .arg("ENCODING")
                .arg(&key)
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .cmd("ZRANGE")
                .arg(&key)
                .arg(-1)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .expect("bucket");
        total += n;
        if n > 128 {
            assert_eq!(first[0].1, last[0].1, "a bucket of {n} is one tie group");
            tied += 1;
        } else {
            assert_eq!(encoding, "listpack", "a bucket of {n}");
            compact += n;
            compact_bytes += bytes;
        }
    }
    assert_eq!(total, processed);
    assert_eq!(tied, 1, "the 200 events of one instant");
    assert!(
        compact_bytes < 50 * compact,
        "{compact_bytes} bytes for {compact} entries in listpacks"
    );
    let counted: u64 = conn.hget(keys.counts(p), "PROCESSED").await.expect("HGET");
    assert_eq!(counted, processed as u64);
}

/// Data of layout 4 (the settled statuses' indexes one sorted set each,
/// no counts) is refused, naming the upgrade; the upgrade moves every entry
/// into buckets and counts them, after which everything lists and counts
/// as before, and a second upgrade has nothing to do.
#[tokio::test]
async fn redis_upgrades_the_previous_layout_in_place() {
    if skip_redis_tests() {
        return;
    }
    let (server, b, mut conn) = redis_with_conn().await;
    super::lists::seed_many_settled(&b).await;
    let listed = |b: Backend| async move {
        let mut pages = Vec::new();
        for status in [
            None,
            Some(EventStatus::Processed),
            Some(EventStatus::Opened),
        ] {
            let q = query(|r| {
                r.page_size = 50;
                r.status = status.map_or(0, |s| s.to_pb() as i32);
            });
            pages.push(all_pages(&b, q).await);
        }
        (pages, b.store.status_counts().await.expect("counts"))
    };
    let (before, counts) = listed(b).await;
    // Layout 4: each bucketed index's entries in the sorted set its
    // buckets' names extend, no directory, no counts.
    let partitions = Partitions::default();
    let keys = storage::Keys::new("test", partitions);
    let settled = [
        EventStatus::Processed,
        EventStatus::Opened,
        EventStatus::Failed,
        EventStatus::Cancelled,
    ];
    let mut entries = 0;
    for p in partitions.all() {
        for status in settled {
            let (old, dir) = (keys.status(p, status), keys.status_directory(p, status));
            let starts: Vec<String> = conn.zrange(&dir, 0, -1).await.expect("ZRANGE");
            for start in starts {
                let bucket = keys.status_bucket(p, status, &start);
                let (): () = ::redis::pipe()
                    .cmd("ZUNIONSTORE")
                    .arg(old)
                    .arg(2)
                    .arg(old)
                    .arg(&bucket)
                    .ignore()
                    .del(&bucket)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .expect("ZUNIONSTORE");
            }
            entries += conn.zcard::<_, u64>(old).await.expect("ZCARD");
            let () = conn.del(&dir).await.expect("DEL");
        }
        let () = conn.del(keys.counts(p)).await.expect("DEL");
    }
    let () = conn.hset(keys.meta(), "layout", "4").await.expect("HSET");

    let old = storage::open(&redis_config(&server)).expect("backend");
    let why = refusal(&old).await;
    assert!(why.contains("--upgrade-storage"), "{why}");
    let upgraded = old.store.upgrade().await.expect("upgrade");
    assert_eq!(
        upgraded,
        Some(storage::Upgraded {
            from: "4".into(),
            to: "5".into(),
            entries
        })
    );
    let new = storage::open(&redis_config(&server)).expect("backend");
    new.store.prepare().await.expect("layout 5");
    assert_eq!(new.store.upgrade().await.expect("again"), None);
    let (after, counted) = listed(new).await;
    assert_eq!(after, before);
    assert_eq!(counted, counts);
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
    let swept = storage::sweep(
        b.store.as_ref(),
        std::time::SystemTime::now() + Duration::from_secs(60),
        10,
    )
    .await
    .expect("sweep");
    assert_eq!(swept.0, 1, "removed");
    let partitions = b.store.partitions();
    let p = partitions.of_id(event.id).expect("partition");
    let keys = storage::Keys::new("test", partitions);
    let mut sizes = ::redis::pipe();
    for (kind, value) in [
        ("user", event.user_id.as_str()),
        ("session", event.session_id.as_str()),
        ("category", event.category.as_str()),
        ("type", event.event_type.as_str()),
    ] {
        assert!(!value.is_empty(), "{kind} is set");
        sizes.zcard(keys.index(p, kind, value));
    }
    sizes.zcard(keys.status_bucket(p, EventStatus::Processed, "-inf"));
    sizes.hget(keys.counts(p), "PROCESSED");
    sizes.exists(record_key(&b, event.id));
    sizes.exists(keys.attempts(p, event.id));
    // Its user's unread count went to zero, and the field with it.
    sizes.exists(keys.unread(p));
    let left: Vec<u64> = sizes.query_async(&mut conn).await.expect("ZCARD");
    assert_eq!(left, [0, 0, 0, 0, 0, 0, 0, 0, 0]);
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
    let ids =
        |notes: Vec<storage::Notification>| notes.iter().map(|n| n.event.id).collect::<Vec<_>>();
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

/// The create script run twice with the same batch (redis-rs sends a
/// request again when a connection drops before its answer, as in a
/// failover) answers the second run as written and writes nothing twice;
/// a record key holding another record is still refused, undoing the
/// batch's claims.
#[tokio::test]
async fn a_create_batch_sent_twice_is_written_once() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start();
    let mut conn = ::redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let writer = conn.clone();
    let script = ::redis::Script::new(include_str!("../../src/redis/lua/create_many.lua"));
    // One event without idempotency key, schedule, ordering or index: the
    // record is opaque to the script but for its head (status, times).
    let record = |fill: u8| {
        let mut r = vec![b'1'];
        r.extend([fill; 59]);
        r
    };
    let run = |records: Vec<(String, Vec<u8>)>| {
        let mut invocation = script.prepare_invoke();
        invocation
            .key("t:{p00}:events")
            .key("t:{p00}:notifications")
            .arg(1000)
            .arg(60)
            .arg("t:{p00}:scheduled");
        for (key, value) in &records {
            invocation
                .key(key)
                .arg("")
                .arg(&key.as_bytes()[key.len() - 16..])
                .arg(value.as_slice())
                .arg(1)
                .arg("")
                .arg("")
                .arg(0);
        }
        let mut conn = writer.clone();
        async move { invocation.invoke_async::<Vec<Vec<u8>>>(&mut conn).await }
    };
    let batch = vec![
        ("t:{p00}:event:aaaaaaaaaaaaaaaa".to_owned(), record(1)),
        ("t:{p00}:event:bbbbbbbbbbbbbbbb".to_owned(), record(2)),
    ];
    let first = run(batch.clone()).await.expect("first run");
    let again = run(batch.clone()).await.expect("the same batch again");
    assert_eq!(first, again, "answered as written, both times");
    let queued: u64 = ::redis::cmd("XLEN")
        .arg("t:{p00}:events")
        .query_async(&mut conn)
        .await
        .expect("xlen");
    assert_eq!(queued, 2, "each event queued once");
    // Another record under a taken key: refused, and the new claim undone.
    let clash = vec![
        ("t:{p00}:event:cccccccccccccccc".to_owned(), record(3)),
        ("t:{p00}:event:aaaaaaaaaaaaaaaa".to_owned(), record(9)),
    ];
    let err = run(clash).await.expect_err("a taken id");
    assert!(err.to_string().contains("HERALD_EXISTS"), "{err}");
    let claimed: bool = ::redis::cmd("EXISTS")
        .arg("t:{p00}:event:cccccccccccccccc")
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert!(!claimed, "the batch's claims are undone");
}
