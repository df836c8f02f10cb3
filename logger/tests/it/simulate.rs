//! The delivery simulator against a real logger whose embedded worker
//! delivers through the lossy simulated sink: its observed ratios, read back
//! from the server, fall within statistical bounds of the requested ones.

use std::{sync::Arc, time::Duration};

use common::{Lines, Logger};
use herald_cli::simulate::{SimulateOptions, simulate};

use crate::common;

#[tokio::test]
async fn observed_ratios_match_the_requested_ones() {
    let lines = Lines::default();
    let logger = Logger::start(
        &[
            "--sink",
            "simulated",
            "--loss-ratio",
            "0.3",
            "--sink-seed",
            "7",
            "--max-deliveries",
            "3",
            "--retry-backoff",
            "1ms",
        ],
        lines.sink(),
    )
    .await;
    let client = logger.client().await;
    let options = SimulateOptions {
        users: 200,
        messages: 5,
        loss_ratio: 0.3,
        open_ratio: 0.3,
        max_deliveries: 3,
        seed: Some(11),
        timeout: Duration::from_secs(120),
    };
    let report = simulate(&client, &options, Arc::new(|_, _| {}))
        .await
        .expect("simulation");

    assert_eq!(report.created, 1_000);
    assert_eq!(report.pending, 0, "every event settled");
    assert_eq!(report.processed + report.failed, report.created);
    // Lost three times running: 0.3^3 = 2.7% of 1,000, sd ~5.1; within 4 sd.
    assert!((6..=48).contains(&report.failed), "{report:?}");
    assert!((report.expected_failure_ratio - 0.027).abs() < 1e-9);
    let (lo, hi) = report.failure_interval;
    assert!(
        lo <= report.observed_failure_ratio
            && report.observed_failure_ratio <= hi
            && hi - lo < 0.03,
        "{report:?}"
    );
    assert!(report.text().contains("95% interval"), "{}", report.text());
    // Opened: 30% of the processed ones, within 4 sd.
    let n = report.processed as f64;
    let sd = (n * 0.3 * 0.7).sqrt();
    assert!(
        (report.opened as f64 - 0.3 * n).abs() <= 4.0 * sd,
        "{report:?}"
    );
    // The sink printed each delivered notification once.
    let delivered = lines.lines().len() as u64;
    assert_eq!(delivered, report.processed, "one line per processed event");
    let [p50, p90, p99, max] = report.latency_ms;
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{report:?}"
    );
    logger.stop_within(Duration::from_secs(10)).await;
}
