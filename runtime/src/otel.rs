//! OpenTelemetry export of events' spans over OTLP/gRPC, behind the cargo
//! feature `otlp`.
//!
//! A server built with the feature, and started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, sends a span for each step of an event's journey: the logger's
//! `CreateEvent` and `UpdateStatus` of the event, the processor's `deliver`.
//! Their ids are the event's own [`TraceParent`]s (the ones stored with the
//! event and sent along), so what the collector shows is what GetEvent shows.
//! Spans go through a bounded queue to one export task, in batches; when the
//! queue is full, spans are dropped rather than slowing events down.
//!
//! Without the feature, or without the variable, [`record`] does nothing and
//! never builds its span.

use std::time::SystemTime;

use herald::trace::TraceParent;

/// One finished step of an event's journey.
pub struct Step {
    /// What it was: `CreateEvent`, `UpdateStatus`, `deliver`.
    pub name: &'static str,
    /// Its own place in the trace.
    pub context: TraceParent,
    /// The step it followed from (the caller's span, the previous step).
    pub parent: Option<TraceParent>,
    /// When it began.
    pub start: SystemTime,
    /// Attributes, such as `herald.event_id`.
    pub attributes: Vec<(&'static str, String)>,
}

/// Records a step, ended now, if spans are exported; `step` is only called then.
pub fn record(step: impl FnOnce() -> Step) {
    #[cfg(feature = "otlp")]
    export::record(step);
    #[cfg(not(feature = "otlp"))]
    let _ = step;
}

/// Starts exporting spans as `service` if the environment asks for it;
/// [`Exporter::finish`] sends what is left. Needs a Tokio runtime.
pub fn init(service: &'static str) -> anyhow::Result<Option<Exporter>> {
    let asked = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !asked {
        return Ok(None);
    }
    #[cfg(feature = "otlp")]
    return export::init(service).map(Some);
    #[cfg(not(feature = "otlp"))]
    {
        tracing::warn!(
            service,
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP export \
             (build with --features otlp); no spans are sent"
        );
        Ok(None)
    }
}

/// The running export; finish it to send the last spans.
pub struct Exporter {
    #[cfg(feature = "otlp")]
    inner: export::Running,
}

impl Exporter {
    /// Sends the spans still queued (within a few seconds) and stops.
    pub async fn finish(self) {
        #[cfg(feature = "otlp")]
        self.inner.finish().await;
    }
}

#[cfg(feature = "otlp")]
mod export {
    use std::{borrow::Cow, sync::OnceLock, time::Duration};

    use opentelemetry::{
        InstrumentationScope, KeyValue,
        trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::{
        Resource,
        trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
    };
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tracing::{debug, info, warn};

    use super::Step;

    /// Spans waiting for the export task; past that, new ones are dropped.
    const QUEUE: usize = 8_192;
    /// Most spans in one export call.
    const BATCH: usize = 512;
    /// Longest a span waits for company before its batch goes.
    const BATCH_DELAY: Duration = Duration::from_millis(200);
    /// Longest the last export at shutdown may take.
    const FINISH_LIMIT: Duration = Duration::from_secs(5);

    static QUEUED: OnceLock<mpsc::Sender<SpanData>> = OnceLock::new();

    pub(super) struct Running {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        pub(super) async fn finish(self) {
            self.stop.cancel();
            if tokio::time::timeout(FINISH_LIMIT, self.task).await.is_err() {
                warn!("the last spans were not sent in time");
            }
        }
    }

    pub(super) fn init(service: &'static str) -> anyhow::Result<super::Exporter> {
        // The endpoint, headers and timeout come from the standard
        // OTEL_EXPORTER_OTLP_* variables.
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
        exporter.set_resource(&Resource::builder().with_service_name(service).build());
        let (queue, spans) = mpsc::channel(QUEUE);
        if QUEUED.set(queue).is_err() {
            anyhow::bail!("span export started twice");
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(exporter, spans, stop.clone()));
        info!(service, "exporting spans over OTLP");
        Ok(super::Exporter {
            inner: Running { stop, task },
        })
    }

    pub(super) fn record(step: impl FnOnce() -> Step) {
        let Some(queue) = QUEUED.get() else {
            return;
        };
        let step = step();
        // Unsampled traces are not recorded.
        if step.context.flags() & 1 == 0 {
            return;
        }
        if queue.try_send(span_data(step)).is_err() {
            debug!("span queue full; span dropped");
        }
    }

    fn span_data(step: Step) -> SpanData {
        let context = step.context;
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(context.trace_id_bytes()),
                SpanId::from_bytes(context.span_id_bytes()),
                TraceFlags::new(context.flags()),
                false,
                TraceState::default(),
            ),
            parent_span_id: step
                .parent
                .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.span_id_bytes())),
            parent_span_is_remote: step.parent.is_some(),
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(step.name),
            start_time: step.start,
            end_time: std::time::SystemTime::now(),
            attributes: step
                .attributes
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("herald").build(),
        }
    }

    async fn run(
        exporter: opentelemetry_otlp::SpanExporter,
        mut spans: mpsc::Receiver<SpanData>,
        stop: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                span = spans.recv() => span,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, spans.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    _ => break,
                }
            }
            send(&exporter, batch).await;
        }
        // Shutting down: what is queued goes in one last round.
        let mut rest = Vec::new();
        while let Ok(span) = spans.try_recv() {
            rest.push(span);
        }
        for batch in rest.chunks(BATCH) {
            send(&exporter, batch.to_vec()).await;
        }
        let _ = exporter.shutdown();
    }

    async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>) {
        let n = batch.len();
        if let Err(err) = exporter.export(batch).await {
            warn!(error = %err, spans = n, "cannot export spans");
        }
    }
}
