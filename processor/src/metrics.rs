//! The worker's own metrics: notifications sent and failed per sink, dead
//! letters, and processing time (the logger's embedded worker has them too).
//! The endpoint that serves them is `herald_runtime::metrics`.

use std::time::Instant;

use herald_runtime::metrics::{DURATION_BUCKETS, counter, counter_vec, register};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Registry};

/// What a worker counts: notifications sent and failed per sink, dead
/// letters, and how long events take from receipt to settled.
#[derive(Clone)]
pub struct WorkerMetrics {
    sent: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounter,
    processing: Histogram,
}

impl WorkerMetrics {
    /// Registers the worker's metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let processing = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "herald_processing_duration_seconds",
                    "From a processor receiving an event to its being marked PROCESSED and acknowledged",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
            )
            .expect("valid metric name"),
        );
        Self {
            sent: counter_vec(
                registry,
                "herald_notifications_sent_total",
                "Notifications delivered, by sink",
                &["sink"],
            ),
            failed: counter_vec(
                registry,
                "herald_notifications_failed_total",
                "Delivery attempts that failed, by sink",
                &["sink"],
            ),
            dead_lettered: counter(
                registry,
                "herald_dead_lettered_total",
                "Queue entries this worker gave up and moved to the dead letters",
            ),
            processing,
        }
    }

    /// A notification went out through `sink`.
    pub fn sent(&self, sink: &str) {
        self.sent.with_label_values(&[sink]).inc();
    }

    /// A delivery attempt through `sink` failed.
    pub fn failed(&self, sink: &str) {
        self.failed.with_label_values(&[sink]).inc();
    }

    /// An entry went to the dead letters.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// An event received at `since` is settled.
    pub fn processed(&self, since: Instant) {
        self.processing.observe(since.elapsed().as_secs_f64());
    }
}
