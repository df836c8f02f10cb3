//! The logger's Prometheus metrics: every call's duration by method and
//! code from one tower layer ([`RpcMetricsLayer`]), the event counts the
//! handlers keep ([`EventMetrics`]), and the gauges read at each scrape
//! (events per status, open Subscribe streams, the queue's sizes, uptime).

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use herald::EventStatus;
use herald_processor::metrics::WorkerMetrics;
use herald_runtime::metrics::{
    QueueGauges, Refresh, Uptime, counter, counter_vec, duration_histogram_vec, register,
};
use herald_storage::{EventStore, WorkQueue};
use http_body::Frame;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use prost::Message;
use tonic::Code;

use crate::limits::ActiveStreams;

/// Most distinct values a label fed by clients (category, type) takes;
/// further ones are counted under [`OTHER`], so clients cannot grow the
/// metrics without bound.
const MAX_LABEL_VALUES: usize = 100;
/// The label value of everything past `MAX_LABEL_VALUES`.
pub const OTHER: &str = "_other";

/// Every metric of one logger, in its own registry.
pub struct LoggerMetrics {
    /// Where they all are.
    pub registry: Registry,
    /// Counted by the EventLogger handlers.
    pub events: EventMetrics,
    /// The layer that times every call.
    pub rpc: RpcMetricsLayer,
    /// The embedded worker's, if it runs.
    pub worker: WorkerMetrics,
    /// Failed authentications on the public listener, by `outcome`:
    /// `failed` (a wrong or missing credential) or `refused` (the peer had
    /// failed too often; its credential was not looked at).
    pub auth_failures: IntCounterVec,
    /// 1 while a partition takes writes, 0 while it does not (its Redis
    /// master is gone, or has too few replicas), by `partition`.
    pub partitions: IntGaugeVec,
    uptime: Uptime,
    queue: QueueGauges,
    statuses: IntGaugeVec,
    subscribers: prometheus::IntGauge,
    subscriber_bytes: prometheus::IntGauge,
}

impl LoggerMetrics {
    /// Registers every metric of a logger in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let statuses = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("herald_events", "Events stored, by status"),
                &["status"],
            )
            .expect("valid metric"),
        );
        let events = EventMetrics::register(&registry);
        Self {
            rpc: RpcMetricsLayer::register(&registry, Some(events.clone())),
            events,
            worker: WorkerMetrics::register(&registry),
            auth_failures: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "herald_auth_failures_total",
                        "Failed authentications on the gRPC listener, by outcome (failed, refused)",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            partitions: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "herald_partition_writable",
                        "1 while a partition takes writes, 0 while its Redis master is gone or \
                         has fewer replicas than --redis-wait-replicas asks for",
                    ),
                    &["partition"],
                )
                .expect("valid metric"),
            ),
            uptime: Uptime::register(&registry),
            queue: QueueGauges::register(&registry),
            statuses,
            subscribers: herald_runtime::metrics::int_gauge(
                &registry,
                "herald_subscribers_active",
                "Subscribe streams open on this logger",
            ),
            subscriber_bytes: herald_runtime::metrics::int_gauge(
                &registry,
                "herald_subscriber_buffered_bytes",
                "Bytes (encoded messages) waiting in the Subscribe queues of this logger",
            ),
            registry,
        }
    }

    /// The work before each scrape: the gauges read from the store, the
    /// queue and the notifier.
    pub fn refresh(
        &self,
        store: Arc<dyn EventStore>,
        queue: Arc<dyn WorkQueue>,
        streams: ActiveStreams,
    ) -> Refresh {
        let (uptime, gauges, statuses) = (
            self.uptime.clone(),
            self.queue.clone(),
            self.statuses.clone(),
        );
        let subscribers = (self.subscribers.clone(), self.subscriber_bytes.clone());
        Arc::new(move || {
            let (uptime, gauges, statuses, (subscribers, subscriber_bytes)) = (
                uptime.clone(),
                gauges.clone(),
                statuses.clone(),
                subscribers.clone(),
            );
            let (store, queue, streams) = (store.clone(), queue.clone(), streams.clone());
            Box::pin(async move {
                uptime.refresh();
                subscribers.set(i64::try_from(streams.count()).unwrap_or(i64::MAX));
                subscriber_bytes.set(i64::try_from(streams.buffered_bytes()).unwrap_or(i64::MAX));
                if let Ok(mut counts) = store.status_counts().await {
                    for status in EventStatus::ALL {
                        let n = *counts.slot(status);
                        statuses
                            .with_label_values(&[status.as_str()])
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                }
                gauges.refresh(queue.as_ref()).await;
            })
        })
    }
}

impl Default for LoggerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The counts the EventLogger handlers keep as they write.
#[derive(Clone)]
pub struct EventMetrics {
    created: IntCounterVec,
    rejected: IntCounterVec,
    status_updates: IntCounterVec,
    /// Queue entries written (creations and redrives).
    pub published: IntCounter,
    /// Writes that failed (storage unreachable or broken).
    pub publish_failures: IntCounter,
    /// How late scheduled events were queued, past their deliver_at.
    schedule_lateness: Histogram,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl EventMetrics {
    /// Registers the event counters in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            created: counter_vec(
                registry,
                "herald_events_created_total",
                "Events created, by category and type (empty: none; _other: past the first 100 values)",
                &["category", "type"],
            ),
            rejected: counter_vec(
                registry,
                "herald_events_rejected_total",
                "CreateEvent calls and CreateEvents items refused, by gRPC code (a CreateEvents call refused whole counts once)",
                &["reason"],
            ),
            status_updates: counter_vec(
                registry,
                "herald_status_updates_total",
                "Status changes applied, by new status",
                &["status"],
            ),
            published: counter(
                registry,
                "herald_events_published_total",
                "Entries written to the work queue (new events and redrives)",
            ),
            publish_failures: counter(
                registry,
                "herald_publish_failures_total",
                "Writes (creations, status changes) that failed because storage was unreachable or broken",
            ),
            schedule_lateness: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "herald_schedule_lateness_seconds",
                        "How long after its deliver_at each scheduled event was queued, by this logger",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0]),
                )
                .expect("valid metric"),
            ),
            seen: Arc::default(),
        }
    }

    /// An event was created with this category and type.
    pub fn created(&self, category: &str, event_type: &str) {
        let labels = [self.bounded(category), self.bounded(event_type)];
        self.created.with_label_values(&labels).inc();
    }

    /// An event's status changed to `status`.
    pub fn status_updated(&self, status: EventStatus) {
        self.status_updates
            .with_label_values(&[status.as_str()])
            .inc();
    }

    /// A scheduled event was queued `late` past its deliver_at.
    pub fn scheduled_released(&self, late: std::time::Duration) {
        self.schedule_lateness.observe(late.as_secs_f64());
        self.status_updated(EventStatus::Pending);
        self.published.inc();
    }

    /// An event (or a whole create call) was refused with `code`.
    pub fn rejected(&self, code: Code) {
        self.rejected.with_label_values(&[code_label(code)]).inc();
    }

    /// `value` as a label: itself while few values were seen, else [`OTHER`]
    /// (none, the empty label, is not a value).
    fn bounded<'a>(&self, value: &'a str) -> &'a str {
        if value.is_empty() {
            return value;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value;
        }
        if seen.len() < MAX_LABEL_VALUES {
            seen.insert(value.to_owned());
            return value;
        }
        OTHER
    }
}

/// The label of a gRPC code, as other gRPC servers' metrics spell it.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Whether a call that ended with `code` was refused (the caller's fault or
/// a limit) rather than failed on the server's side.
fn is_refusal(code: Code) -> bool {
    !matches!(
        code,
        Code::Ok
            | Code::Unavailable
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// Times every call, by method and code, into
/// `herald_rpc_duration_seconds`; for a streaming call, the whole stream.
/// Refused creations are also counted as rejected events.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    inner: Arc<RpcInner>,
}

struct RpcInner {
    duration: HistogramVec,
    events: Option<EventMetrics>,
    /// Every method this server serves, as `package.Service/Method`.
    known: HashSet<Arc<str>>,
    /// The label of every other path.
    unknown: Arc<str>,
}

/// The label of a call to a path no service has, so that made-up paths
/// cannot grow the metrics.
const UNKNOWN_METHOD: &str = "unknown";

impl RpcMetricsLayer {
    /// Registers the call histogram in `registry`; refused CreateEvent(s)
    /// calls are also counted in `events`, if given.
    pub fn register(registry: &Registry, events: Option<EventMetrics>) -> Self {
        let mut known = HashSet::new();
        for set in [
            herald::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(files) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in files.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(Arc::from(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        )));
                    }
                }
            }
        }
        Self {
            inner: Arc::new(RpcInner {
                duration: duration_histogram_vec(
                    registry,
                    "herald_rpc_duration_seconds",
                    "gRPC calls served, by method and code: the time to the end of the response (of the stream, for Subscribe)",
                    &["method", "code"],
                ),
                events,
                known,
                unknown: Arc::from(UNKNOWN_METHOD),
            }),
        }
    }
}

impl RpcInner {
    /// The method label of `path`, shared rather than copied per call.
    fn method(&self, path: &str) -> Arc<str> {
        let name = path.trim_start_matches('/');
        self.known.get(name).unwrap_or(&self.unknown).clone()
    }

    fn record(&self, method: &str, code: Code, since: Instant) {
        self.duration
            .with_label_values(&[method, code_label(code)])
            .observe(since.elapsed().as_secs_f64());
        if let Some(events) = &self.events
            && is_refusal(code)
            && method.starts_with("herald.v1.EventLogger/CreateEvent")
        {
            events.rejected(code);
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            metrics: self.inner.clone(),
        }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<RpcInner>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            method: self.metrics.method(request.uri().path()),
            since: Instant::now(),
            metrics: self.metrics.clone(),
        };
        let mut ready = crate::auth::take_ready(&mut self.inner);
        Box::pin(async move {
            let response = ready.call(request).await?;
            // A trailers-only response (every error, refusals by the auth
            // layer too) carries its status in the headers.
            if let Some(code) = grpc_status(response.headers()) {
                call.end(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = tonic::body::Body::new(Observed {
                body,
                call: Some(call),
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// One call being timed.
struct Call {
    method: Arc<str>,
    since: Instant,
    metrics: Arc<RpcInner>,
}

impl Call {
    fn end(self, code: Code) {
        self.metrics.record(&self.method, code, self.since);
    }
}

/// A response body that ends its call's timing at the trailers (or when the
/// client goes away first: CANCELLED).
struct Observed {
    body: tonic::body::Body,
    call: Option<Call>,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = self.call.take()
        {
            call.end(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.end(Code::Cancelled);
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_counts_take_the_first_values_and_count_the_rest_as_other() {
        let registry = Registry::new();
        let metrics = EventMetrics::register(&registry);
        for i in 0..MAX_LABEL_VALUES {
            metrics.created(&format!("category-{i}"), "");
        }
        metrics.created("one-too-many", "");
        metrics.created("category-7", "");
        // None (the empty label) is not a value: it stays itself past the limit.
        metrics.created("", "");
        let count = |category: &str| metrics.created.with_label_values(&[category, ""]).get();
        assert_eq!(count("category-0"), 1);
        assert_eq!(count("category-7"), 2);
        assert_eq!(count(OTHER), 1);
        assert_eq!(count("one-too-many"), 0);
        assert_eq!(count(""), 1);
    }
}
