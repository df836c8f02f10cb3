//! The pipeline on a private Redis Cluster: a logger and processors on
//! `--redis-cluster`, a processor killed mid-run, and a master killed under
//! load (failover), with and without `--redis-wait-replicas`.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Lines, Logger, Processor, eventually};
use herald::{Event, EventStatus, partition::Partitions};
use herald_processor::channels::notification_line;
use herald_storage::testing::{RedisCluster, skip_redis_tests};
use uuid::Uuid;

use crate::common;

/// Users whose events land in every partition (37 users over 16 partitions).
fn user(i: usize) -> String {
    format!("user-{}", i % 37)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_on_a_cluster_one_killed_mid_run_none_lost() {
    if skip_redis_tests() {
        return;
    }
    let cluster = RedisCluster::start(3, 0);
    let seeds = cluster.urls();
    let logger = Logger::start(
        &["--redis-cluster", &seeds.join(",")],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let covered: HashSet<_> = (0..37)
        .map(|i| Partitions::default().of_user(&user(i)))
        .collect();
    assert_eq!(covered.len(), 16, "the users cover every partition");

    let (lines_a, lines_b) = (Lines::default(), Lines::default());
    let a = Processor::start_on_cluster(
        &seeds,
        &logger.url(),
        &["--consumer-name", "a"],
        lines_a.sink(),
    );
    let b = Processor::start_on_cluster(
        &seeds,
        &logger.url(),
        &["--consumer-name", "b", "--claim-idle", "1000ms"],
        lines_b.sink(),
    );
    let mut subscription = client.subscribe("user-0").await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut events = Vec::new();
            for i in 0..400 {
                let event = client
                    .create_event(&user(i), &format!("event {i}"))
                    .await
                    .expect("create");
                events.push(event);
            }
            events
        })
    };
    // Kill processor a while it is busy: what it held is reclaimed by b.
    eventually(Duration::from_secs(30), "a at work", || async {
        (lines_a.lines().len() >= 20).then_some(())
    })
    .await;
    a.kill();
    let events: Vec<Event> = writer.await.expect("writer");
    for e in &events {
        eventually(Duration::from_secs(60), "PROCESSED", || async {
            (client.get_event(e.id).await.ok()?.status == EventStatus::Processed).then_some(())
        })
        .await;
    }

    let mut lines = lines_a.lines();
    lines.extend(lines_b.lines());
    let printed: HashSet<&str> = lines.iter().map(String::as_str).collect();
    for e in &events {
        assert!(
            printed.contains(notification_line(e).as_str()),
            "no line for {}",
            e.id
        );
    }
    // The subscriber heard of each of its user's events exactly once.
    common::assert_heard_once(&mut subscription, &events, "user-0").await;

    b.shutdown.cancel();
    b.handle.await.expect("join").expect("processor b");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// What one failover run saw.
struct Failover {
    acknowledged: usize,
    lost: usize,
    refused: u64,
}

/// Creates events from 8 writers on a cluster of 3 masters with a replica
/// each, kills one master (SIGKILL) under that load, waits for its replica to
/// take over, restarts the dead node (it rejoins as a replica), then checks
/// that Herald serves every partition again by itself and counts the
/// acknowledged events that are gone.
async fn failover(wait_replicas: &str) -> Failover {
    let mut cluster = RedisCluster::start(3, 1);
    let seeds = cluster.urls();
    let logger = Logger::start(
        &[
            "--redis-cluster",
            &seeds.join(","),
            "--redis-wait-replicas",
            wait_replicas,
        ],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    match client.create_event(&user(i), "under failover").await {
                        Ok(e) => acknowledged.lock().expect("lock").push(e.id),
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    i += 8;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let victim = ports
        .iter()
        .position(|p| cluster.is_master(*p))
        .expect("a master");
    cluster.nodes()[victim].kill();
    // The failure is noticed after the node timeout (2 s) and a replica is
    // promoted; meanwhile the writes to the dead master's partitions wait.
    let survivors: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| *p != ports[victim])
        .collect();
    eventually(Duration::from_secs(30), "a replica promoted", || async {
        let masters = survivors.iter().filter(|p| cluster.is_master(**p)).count();
        (masters == 3).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| cluster.wait_until_ok(survivors[0]));
    // Only now may the dead node come back (empty: no persistence here);
    // it rejoins as a replica of the node that took over.
    tokio::task::block_in_place(|| cluster.nodes()[victim].restart());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }

    // Herald recovered by itself: every partition takes writes again.
    for i in 0..37 {
        eventually(
            Duration::from_secs(30),
            "a write to every partition",
            || async {
                client
                    .create_event(&user(i), "after")
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
    let ids: Vec<Uuid> = acknowledged.lock().expect("lock").clone();
    let mut lost = 0;
    for id in &ids {
        let found = eventually(Duration::from_secs(10), "an answer", || async {
            match client.get_event(*id).await {
                Ok(_) => Some(true),
                Err(err) if err.code() == tonic::Code::NotFound => Some(false),
                Err(_) => None,
            }
        })
        .await;
        if !found {
            lost += 1;
        }
    }
    logger.stop_within(Duration::from_secs(10)).await;
    Failover {
        acknowledged: ids.len(),
        lost,
        refused: refused.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_is_survived_and_wait_replicas_loses_nothing() {
    if skip_redis_tests() {
        return;
    }
    let report = |how: &str, f: &Failover| {
        println!(
            "failover {how}: {} acknowledged, {} of them lost, {} calls refused meanwhile",
            f.acknowledged, f.lost, f.refused
        );
    };
    let plain = failover("0").await;
    report("without --redis-wait-replicas", &plain);
    assert!(plain.acknowledged > 0);
    let waited = failover("1").await;
    report("with --redis-wait-replicas 1", &waited);
    assert!(waited.acknowledged > 0);
    assert_eq!(waited.lost, 0, "with a WAIT, nothing acknowledged is lost");
}

/// Giving both a Redis URL and a cluster is refused, naming both flags.
#[test]
fn redis_url_and_cluster_together_are_refused() {
    use clap::Parser;
    let err = herald_logger::Config::try_parse_from([
        "herald-logger",
        "--redis-url",
        "redis://127.0.0.1:6379/",
        "--redis-cluster",
        "redis://127.0.0.1:7000",
    ])
    .expect_err("both");
    let text = err.to_string();
    assert!(
        text.contains("--redis-url") && text.contains("--redis-cluster"),
        "{text}"
    );
}
