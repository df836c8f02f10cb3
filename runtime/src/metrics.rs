//! Prometheus metrics shared by every Herald server binary: the `/metrics`
//! HTTP endpoint, the process's uptime and (feature `storage`) the work
//! queue's sizes.
//!
//! Each server keeps its metrics in a [`Registry`] of its own (no global
//! state), so several servers in one process, as in the tests, never mix
//! their counts. Gauges that mirror outside state (queue sizes, events per
//! status) are read when a scrape comes, with a time limit.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

#[cfg(feature = "storage")]
use herald_storage::WorkQueue;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Connections to `/metrics` served at once; more are closed at once (a
/// scraper needs one).
const MAX_CONNECTIONS: usize = 16;
/// Longest a scrape waits for the gauges read from outside (Redis).
const REFRESH_LIMIT: Duration = Duration::from_secs(2);

/// Buckets (seconds) of the duration histograms: 0.5 ms to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Work done before each scrape: reading the gauges that mirror outside state.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Registers `metric` in `registry`; a name used twice is a bug, reported as such.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    if let Err(err) = registry.register(Box::new(metric.clone())) {
        warn!(error = %err, "metric not registered");
    }
    metric
}

/// A counter family with `labels`.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let opts = Opts::new(name, help);
    register(
        registry,
        IntCounterVec::new(opts, labels).expect("valid metric name and labels"),
    )
}

/// A counter.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

/// A gauge of whole numbers.
pub fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric name"),
    )
}

/// A histogram of durations in seconds, with `labels`.
pub fn duration_histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric name and labels"),
    )
}

/// What every Herald process reports about itself: when it started, how long ago.
#[derive(Clone)]
pub struct Uptime {
    clock: Instant,
    uptime: Gauge,
}

impl Uptime {
    /// Registers `herald_uptime_seconds` and `herald_start_time_seconds`, from now.
    pub fn register(registry: &Registry) -> Self {
        let start = register(
            registry,
            Gauge::new(
                "herald_start_time_seconds",
                "When this process started (Unix time)",
            )
            .expect("valid metric name"),
        );
        start.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        let uptime = register(
            registry,
            Gauge::new(
                "herald_uptime_seconds",
                "Seconds since this process started",
            )
            .expect("valid metric name"),
        );
        Self {
            clock: Instant::now(),
            uptime,
        }
    }

    /// Sets the uptime gauge to now.
    pub fn refresh(&self) {
        self.uptime.set(self.clock.elapsed().as_secs_f64());
    }
}

/// The work queue's sizes, read at each scrape (feature `storage`).
#[cfg(feature = "storage")]
#[derive(Clone)]
pub struct QueueGauges {
    length: IntGauge,
    pending: IntGauge,
    lag: IntGauge,
    dead_letters: IntGauge,
}

#[cfg(feature = "storage")]
impl QueueGauges {
    /// Registers the queue gauges.
    pub fn register(registry: &Registry) -> Self {
        Self {
            length: int_gauge(
                registry,
                "herald_queue_length",
                "Entries in the work queue stream (acknowledged ones not yet trimmed included)",
            ),
            pending: int_gauge(
                registry,
                "herald_queue_pending",
                "Entries delivered to a processor and not yet acknowledged (the consumer group's PEL)",
            ),
            lag: int_gauge(
                registry,
                "herald_queue_lag",
                "Entries not yet delivered to any processor",
            ),
            dead_letters: int_gauge(
                registry,
                "herald_dead_letters",
                "Dead letters kept (events given up after too many delivery attempts)",
            ),
        }
    }

    /// Reads the sizes from `queue`; on failure the gauges keep their last values.
    pub async fn refresh(&self, queue: &dyn WorkQueue) {
        match queue.stats().await {
            Ok(stats) => {
                let set = |g: &IntGauge, n: u64| g.set(i64::try_from(n).unwrap_or(i64::MAX));
                set(&self.length, stats.length);
                set(&self.pending, stats.pending);
                if let Some(lag) = stats.lag {
                    set(&self.lag, lag);
                }
                set(&self.dead_letters, stats.dead_letters);
            }
            Err(err) => debug!(error = %err, "cannot read the queue's sizes for metrics"),
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until
/// `shutdown` is cancelled, running `refresh` before each scrape.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    refresh: Refresh,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics on /metrics");
    }
    // On loopback, only loopback names: a page elsewhere could otherwise
    // read the counts (and category and type names) through DNS rebinding.
    let loopback = listener
        .local_addr()
        .is_ok_and(|addr| addr.ip().is_loopback());
    let registry = Arc::new(registry);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (registry, refresh) = (registry.clone(), refresh.clone());
        async move { Ok::<_, Infallible>(answer(&request, loopback, &registry, &refresh).await) }
    });
    let limits = crate::http::Limits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: Duration::from_secs(10),
    };
    crate::http::serve(listener, service, limits, "metrics", shutdown).await;
}

async fn answer(
    request: &Request<Incoming>,
    loopback: bool,
    registry: &Registry,
    refresh: &Refresh,
) -> Response<Full<bytes::Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if loopback && !crate::http::loopback_host(host) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            b"metrics on a loopback address answer only at a loopback address or localhost\n"
                .to_vec(),
        );
    }
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found: metrics are on /metrics\n".to_vec(),
        );
    }
    if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"use GET\n".to_vec(),
        );
    }
    if tokio::time::timeout(REFRESH_LIMIT, refresh())
        .await
        .is_err()
    {
        debug!("metrics refresh timed out; serving the last values");
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => reply(StatusCode::OK, encoder.format_type(), body),
        Err(err) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode metrics: {err}\n").into_bytes(),
        ),
    }
}
