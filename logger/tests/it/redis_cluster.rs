//! The pipeline on a private Redis Cluster: a logger and processors on
//! `--redis-cluster`, a processor killed mid-run, and a master killed under
//! load (failover), with and without `--redis-wait-replicas`.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Lines, Logger, Processor, eventually};
use herald::{Event, EventStatus, domain::EventInput, partition::Partitions};
use herald_client::RetryPolicy;
use herald_processor::channels::notification_line;
use herald_storage::testing::{RedisCluster, skip_redis_tests};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common;

/// The health service of the partitions' writes.
const PARTITIONS: &str = "herald.partitions";

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

/// One create call of a failover run: its user's partition, when it
/// started, how long it took, and its error code (none: created).
struct Call {
    partition: usize,
    at: Instant,
    took: Duration,
    code: Option<tonic::Code>,
}

/// The partitions whose slots the master on `port` holds.
fn partitions_on(port: u16) -> Vec<usize> {
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let nodes = cli(&["cluster", "nodes"]);
    let mine = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("the node itself");
    let ranges: Vec<(u16, u16)> = mine
        .split_whitespace()
        .skip(8)
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    (0..16)
        .filter(|p| {
            let slot: u16 = cli(&["cluster", "keyslot", &format!("herald:{{p{p:02}}}:events")])
                .trim()
                .parse()
                .expect("a slot");
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .collect()
}

/// The 99th percentile of `latencies` (zero for none).
fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The health of `service` as the logger answers it now.
async fn health(logger: &Logger, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::new(logger.channel().await);
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let answer = client.check(request).await.ok()?.into_inner();
    ServingStatus::try_from(answer.status).ok()
}

/// A failover under load, on a cluster of 3 masters with a replica each: a
/// logger and two processors on it, 16 callers creating events of users of
/// every partition (each retrying an UNAVAILABLE with its request id, with
/// a 10 s deadline per call), and `kill -9` of a master 3 s in. Without
/// `--redis-wait-replicas` the promoted replica takes the writes; with
/// `--redis-wait-replicas 1` the moved partitions are refused at once
/// until the killed node is back as the new master's replica. Checks that
/// nothing acknowledged is lost (with the WAIT), nothing notified twice, no call timed out
/// or failed otherwise than UNAVAILABLE, the other masters' partitions kept
/// their latency, the moved ones took writes again within a bound, and
/// health said so; prints the figures the README reports.
async fn failover(wait_replicas: u32) {
    let mut cluster = RedisCluster::start(3, 1);
    let seeds = cluster.urls();
    let wait = wait_replicas.to_string();
    let logger = Logger::start(
        &[
            "--redis-cluster",
            &seeds.join(","),
            "--redis-wait-replicas",
            &wait,
        ],
        Lines::default().sink(),
    )
    .await;
    let (lines_a, lines_b) = (Lines::default(), Lines::default());
    let processors = [("a", &lines_a), ("b", &lines_b)].map(|(name, lines)| {
        let flags = ["--consumer-name", name];
        Processor::start_on_cluster(&seeds, &logger.url(), &flags, lines.sink())
    });
    let client = logger.client().await.with_retry(RetryPolicy {
        retries: 0,
        ..RetryPolicy::default()
    });
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::<Event>::new()));
    let callers: Vec<_> = (0..16)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            let (calls, acknowledged) = (calls.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let input = EventInput {
                        user_id: user(i),
                        description: format!("under failover {w}.{i}"),
                        request_id: format!("caller-{w}-{i}"),
                        ..EventInput::default()
                    };
                    let partition = Partitions::default().of_user(&input.user_id).index();
                    loop {
                        let at = Instant::now();
                        let answer = tokio::time::timeout(
                            Duration::from_secs(10),
                            client.create(input.clone()),
                        )
                        .await;
                        let code = match &answer {
                            Ok(Ok(_)) => None,
                            Ok(Err(err)) => Some(err.code()),
                            Err(_) => Some(tonic::Code::DeadlineExceeded),
                        };
                        let took = at.elapsed();
                        calls.lock().expect("lock").push(Call {
                            partition,
                            at,
                            took,
                            code,
                        });
                        match answer {
                            Ok(Ok(event)) => {
                                acknowledged.lock().expect("lock").push(event);
                                break;
                            }
                            Ok(Err(err)) if err.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            _ => break,
                        }
                    }
                    i += 16;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let victim = ports
        .iter()
        .position(|p| cluster.is_master(*p))
        .expect("a master");
    let moved = partitions_on(ports[victim]);
    assert!(!moved.is_empty(), "the victim holds partitions");
    let killed = Instant::now();
    cluster.nodes()[victim].kill();
    let survivors: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| *p != ports[victim])
        .collect();
    let mut partitions_down = false;
    let promoted = loop {
        partitions_down |= health(&logger, PARTITIONS).await == Some(ServingStatus::NotServing);
        if survivors.iter().filter(|p| cluster.is_master(**p)).count() == 3 {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no replica promoted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Writes on the moved partitions come back: at once with the promoted
    // master, or (with --redis-wait-replicas) once the killed node is back
    // as its replica; until then they are refused, quickly.
    let first_write_on = |p: usize, after: Instant| {
        let calls = calls.lock().expect("lock");
        calls
            .iter()
            .filter(|c| c.partition == p && c.code.is_none() && c.at > after)
            .map(|c| c.at + c.took)
            .min()
    };
    let back = if wait_replicas == 0 {
        promoted
    } else {
        tokio::time::sleep(Duration::from_secs(6)).await;
        partitions_down |= health(&logger, PARTITIONS).await == Some(ServingStatus::NotServing);
        assert!(
            moved
                .iter()
                .all(|p| first_write_on(*p, promoted + Duration::from_secs(1)).is_none()),
            "a moved partition took a write without a replica"
        );
        tokio::task::block_in_place(|| cluster.nodes()[victim].restart());
        Instant::now()
    };
    eventually(
        Duration::from_secs(30),
        "writes on every moved partition",
        || async {
            moved
                .iter()
                .all(|p| first_write_on(*p, back).is_some())
                .then_some(())
        },
    )
    .await;
    let resumed = moved
        .iter()
        .filter_map(|p| first_write_on(*p, back))
        .max()
        .expect("writes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    eventually(
        Duration::from_secs(30),
        "every partition SERVING",
        || async {
            (health(&logger, PARTITIONS).await == Some(ServingStatus::Serving)).then_some(())
        },
    )
    .await;
    assert_eq!(health(&logger, "").await, Some(ServingStatus::Serving));

    // Nothing acknowledged is lost (with a WAIT; without, Redis's
    // replication may lose the last writes of a killed master), and each
    // is notified exactly once.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let mut lost = 0;
    for event in &acknowledged {
        let kept = eventually(Duration::from_secs(60), "PROCESSED", || async {
            match client.get_event(event.id).await {
                Ok(e) if e.status == EventStatus::Processed => Some(true),
                Err(err) if err.code() == tonic::Code::NotFound => Some(false),
                _ => None,
            }
        })
        .await;
        lost += usize::from(!kept);
    }
    let mut lines = lines_a.lines();
    lines.extend(lines_b.lines());
    let mut printed: HashMap<&str, usize> = HashMap::new();
    for line in &lines {
        *printed.entry(line.as_str()).or_default() += 1;
    }
    let twice = acknowledged
        .iter()
        .filter(|e| {
            printed
                .get(notification_line(e).as_str())
                .is_some_and(|n| *n > 1)
        })
        .count();

    let calls = std::mem::take(&mut *calls.lock().expect("lock"));
    let failed = |code: tonic::Code| calls.iter().filter(|c| c.code == Some(code)).count();
    let healthy = |from: Instant, to: Instant| {
        p99(calls
            .iter()
            .filter(|c| !moved.contains(&c.partition) && c.at >= from && c.at < to)
            .map(|c| c.took)
            .collect())
    };
    let before = healthy(start + Duration::from_secs(1), killed);
    let during = healthy(killed, resumed);
    let slowest_moved = calls
        .iter()
        .filter(|c| moved.contains(&c.partition))
        .map(|c| c.took)
        .max()
        .unwrap_or_default();
    // Once the promoted master was seen to lack replicas.
    let refused: Vec<Duration> = calls
        .iter()
        .filter(|c| c.code.is_some() && c.at > promoted + Duration::from_secs(3) && c.at < back)
        .map(|c| c.took)
        .collect();
    println!(
        "slowest call on a moved partition: {slowest_moved:?}; {} refused after the promotion, p99 {:?}",
        refused.len(),
        p99(refused.clone())
    );
    let refusals: Vec<Duration> = calls
        .iter()
        .filter(|c| c.code == Some(tonic::Code::Unavailable))
        .map(|c| c.took)
        .collect();
    println!(
        "failover with --redis-wait-replicas {wait_replicas}: {} events acknowledged, {} calls; \
         partitions {moved:?} moved; replica promoted {:.1} s after the kill; writes on the moved \
         partitions back {:.1} s after {}; {} UNAVAILABLE (p99 {} ms); other partitions' p99 {} ms \
         before, {} ms during; herald.partitions NOT_SERVING seen: {partitions_down}; \
         {lost} acknowledged events lost",
        acknowledged.len(),
        calls.len(),
        promoted.duration_since(killed).as_secs_f64(),
        resumed.duration_since(back).as_secs_f64(),
        if wait_replicas == 0 {
            "the promotion"
        } else {
            "the killed node's return"
        },
        refusals.len(),
        p99(refusals.clone()).as_millis(),
        before.as_millis(),
        during.as_millis(),
    );
    assert_eq!(failed(tonic::Code::DeadlineExceeded), 0, "no call hangs");
    let other: Vec<_> = calls
        .iter()
        .filter_map(|c| c.code)
        .filter(|c| *c != tonic::Code::Unavailable)
        .collect();
    assert!(other.is_empty(), "only UNAVAILABLE: {other:?}");
    assert_eq!(twice, 0, "each acknowledged event notified exactly once");
    assert!(
        during <= before * 5 + Duration::from_millis(500),
        "the other masters' partitions kept their latency: p99 {before:?} before, {during:?} during"
    );
    assert!(
        resumed.duration_since(back) < Duration::from_secs(15),
        "writes resumed by themselves"
    );
    if wait_replicas > 0 {
        assert!(
            partitions_down,
            "health said the moved partitions took no writes"
        );
        assert!(
            !refused.is_empty(),
            "writes were refused after the promotion"
        );
        assert!(
            p99(refused) < Duration::from_millis(500),
            "refusals come at once"
        );
    }
    for processor in processors {
        processor.shutdown.cancel();
        processor.handle.await.expect("join").expect("processor");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_without_loss_or_wedge() {
    if skip_redis_tests() {
        return;
    }
    failover(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_master_without_replicas_is_refused_quickly_until_one_is_back() {
    if skip_redis_tests() {
        return;
    }
    failover(1).await;
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
