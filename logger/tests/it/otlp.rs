//! With the `otlp` feature: the real logger binary sends the spans of an
//! event's journey to an OTLP collector (a real gRPC server here), with the
//! ids the event itself carries. Run with `--features otlp` (or
//! `--all-features`, as the README's test command does).

#![cfg(feature = "otlp")]

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use herald::{pb, trace::TraceParent};
use herald_storage::testing::free_port;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
};

use crate::common;

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    event_id: String,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let mut got = self.0.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Received {
                    service: service.clone(),
                    event_id: span
                        .attributes
                        .iter()
                        .find(|a| a.key == "herald.event_id")
                        .map(|a| text(&a.value))
                        .unwrap_or_default(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_events_journey_reaches_the_collector_as_one_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_herald-logger"))
        .env("HERALD_CONSOLE_LISTEN", "off")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", "off"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run herald-logger");
    let _logger = Running(child);
    let client = common::eventually(Duration::from_secs(10), "the logger", || async {
        herald_client::Client::connect(url.clone()).await.ok()
    })
    .await;

    let caller = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .expect("valid");
    let mut raw = pb::event_logger_client::EventLoggerClient::connect(url.clone())
        .await
        .expect("connect");
    let request = pb::CreateEventRequest {
        user_id: "otto".into(),
        description: "followed".into(),
        ..Default::default()
    };
    let created = raw
        .create_event(common::traced(request, &caller))
        .await
        .expect("create")
        .into_inner()
        .event
        .expect("event");
    let created_span = TraceParent::parse(&created.traceparent).expect("traceparent");

    // The embedded worker delivers and settles it; the spans follow in batches.
    let spans = common::eventually(Duration::from_secs(15), "three spans", || async {
        let got: Vec<Received> = collector
            .0
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.event_id == created.event_id)
            .cloned()
            .collect();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
            .clone()
    };
    let (create, deliver, update) = (find("CreateEvent"), find("deliver"), find("UpdateStatus"));
    for span in [&create, &deliver, &update] {
        assert_eq!(span.trace_id, caller.trace_id(), "{span:?}");
        assert_eq!(span.service, "herald-logger", "{span:?}");
    }
    assert_eq!(
        create.parent_span_id,
        caller.span_id(),
        "under the caller's span"
    );
    assert_eq!(
        create.span_id,
        created_span.span_id(),
        "the id the event shows"
    );
    assert_eq!(deliver.parent_span_id, create.span_id);
    assert_eq!(update.parent_span_id, deliver.span_id);
    let processed = client
        .get_event(created.event_id.parse().expect("uuid"))
        .await
        .expect("get");
    assert_eq!(
        processed.traceparent.map(|t| t.span_id()),
        Some(deliver.span_id),
        "the processed event shows the delivery's span"
    );
}
