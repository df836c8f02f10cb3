//! The worker's own metrics: per channel its attempts, successes, failures
//! by reason, attempt latency, breaker state and whether it is disabled;
//! dead letters, unrouted events and processing time (the logger's
//! embedded worker has them too). The endpoint that serves them is
//! `herald_runtime::metrics`.

use std::time::{Duration, Instant};

use herald_runtime::metrics::{
    DURATION_BUCKETS, counter, counter_vec, duration_histogram_vec, register,
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    attempts: IntCounterVec,
    sent: IntCounterVec,
    failed: IntCounterVec,
    skipped: IntCounterVec,
    latency: HistogramVec,
    breaker: IntGaugeVec,
    disabled: IntGaugeVec,
    unrouted: IntCounter,
    ordered_waits: IntCounter,
    digests_sent: IntCounter,
    digested_events: IntCounter,
    dead_lettered: IntCounter,
    processing: Histogram,
}

/// The gauges a channel keeps itself, labelled with its name.
#[derive(Clone)]
pub struct ChannelGauges {
    /// The circuit breaker: 0 closed, 1 half-open, 2 open.
    pub breaker: IntGauge,
    /// 1 while the endpoint is disabled (it answered 410 Gone).
    pub disabled: IntGauge,
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &["channel"]).expect("valid metric name"),
    )
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
            attempts: counter_vec(
                registry,
                "herald_channel_attempts_total",
                "Attempts to send an event through a channel",
                &["channel"],
            ),
            sent: counter_vec(
                registry,
                "herald_notifications_sent_total",
                "Notifications a channel took (successful attempts)",
                &["channel"],
            ),
            failed: counter_vec(
                registry,
                "herald_notifications_failed_total",
                "Failed attempts, and events a channel refused without an attempt, by reason",
                &["channel", "reason"],
            ),
            skipped: counter_vec(
                registry,
                "herald_notifications_skipped_total",
                "Events a channel did not send: the recipient opted out, or has no address for it",
                &["channel"],
            ),
            latency: duration_histogram_vec(
                registry,
                "herald_channel_attempt_duration_seconds",
                "How long one attempt through a channel took",
                &["channel"],
            ),
            breaker: int_gauge_vec(
                registry,
                "herald_channel_breaker_state",
                "A webhook's circuit breaker: 0 closed, 1 half-open (probing), 2 open",
            ),
            disabled: int_gauge_vec(
                registry,
                "herald_channel_disabled",
                "1 while a webhook endpoint is disabled (it answered 410 Gone)",
            ),
            unrouted: counter(
                registry,
                "herald_events_unrouted_total",
                "Events no route chose a channel for (marked PROCESSED at once)",
            ),
            ordered_waits: counter(
                registry,
                "herald_ordered_waits_total",
                "Events of an ordered route that waited for their user's earlier events",
            ),
            digests_sent: counter(
                registry,
                "herald_digests_sent_total",
                "Digests sent (each one notification of many events) and settled",
            ),
            digested_events: counter(
                registry,
                "herald_digested_events_total",
                "Events settled by the digests they went out in",
            ),
            dead_lettered: counter(
                registry,
                "herald_dead_lettered_total",
                "Queue entries this worker gave up and moved to the dead letters",
            ),
            processing,
        }
    }

    /// The gauges of channel `name`.
    pub fn channel(&self, name: &str) -> ChannelGauges {
        ChannelGauges {
            breaker: self.breaker.with_label_values(&[name]),
            disabled: self.disabled.with_label_values(&[name]),
        }
    }

    /// An attempt through `channel` took `latency`.
    pub fn attempted(&self, channel: &str, latency: Duration) {
        self.attempts.with_label_values(&[channel]).inc();
        self.latency
            .with_label_values(&[channel])
            .observe(latency.as_secs_f64());
    }

    /// `channel` took a notification.
    pub fn sent(&self, channel: &str) {
        self.sent.with_label_values(&[channel]).inc();
    }

    /// An attempt through `channel` failed (or was refused) for `reason`.
    pub fn failed(&self, channel: &str, reason: &str) {
        self.failed.with_label_values(&[channel, reason]).inc();
    }

    /// `channel` skipped an event (its recipient opted out, or has no
    /// address for it).
    pub fn skipped(&self, channel: &str) {
        self.skipped.with_label_values(&[channel]).inc();
    }

    /// No route chose a channel for an event.
    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// An ordered event waited for its turn.
    pub fn ordered_wait(&self) {
        self.ordered_waits.inc();
    }

    /// A digest of `events` events was sent and settled.
    pub fn digest_sent(&self, events: usize) {
        self.digests_sent.inc();
        self.digested_events.inc_by(events as u64);
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
