//! The one place where every gRPC service is registered: EventLogger,
//! Notifier, Inbox, Recipients, health (for "" and each service) and
//! reflection (v1 and v1alpha); and the end users' listener's (Notifier,
//! Inbox and Recipients, over gRPC-Web too).

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use herald::pb::{
    event_logger_server::EventLoggerServer, inbox_server::InboxServer,
    recipients_server::RecipientsServer,
};
use herald_storage::EventStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    auth::AuthLayer,
    encoded::NotifierServer,
    guard::{BodyLayer, BodyLimits},
    in_flight::InFlight,
    inbox::InboxService,
    metrics::RpcMetricsLayer,
    recipients::RecipientsService,
    service::EventLoggerService,
    web::Shared,
};

/// How long the last answers get to leave once every call has ended on
/// shutdown, before the connections close.
const FLUSH: Duration = Duration::from_millis(250);

/// The names health reports on: the whole server ("") and each service.
pub const HEALTH_SERVICES: [&str; 5] = [
    "",
    <EventLoggerServer<EventLoggerService> as NamedService>::NAME,
    <NotifierServer as NamedService>::NAME,
    <InboxServer<InboxService> as NamedService>::NAME,
    <RecipientsServer<RecipientsService> as NamedService>::NAME,
];

/// How the server treats calls and its own end.
pub struct ServeOptions {
    /// Checks credentials, scopes and rate limits of every call.
    pub auth: AuthLayer,
    /// Times every call on the public listener (refusals by `auth` included).
    pub metrics: RpcMetricsLayer,
    /// TLS (and client certificates) on the public listener; `None`: plain HTTP/2.
    pub tls: Option<ServerTlsConfig>,
    /// The end users' listener (`--web-listen`), if any.
    pub web: Option<WebListener>,
    /// Loopback listeners, always plain HTTP/2, for callers inside this
    /// process (the embedded worker, the console), each with its own layer
    /// (the worker's admits only the worker's key).
    pub internal: Vec<(TcpListener, AuthLayer)>,
    /// Largest request or response message, and how long a request's body
    /// may take to arrive.
    pub body: BodyLimits,
    /// What one HTTP/2 connection may hold.
    pub http2: Http2Options,
    /// Cancelled to stop accepting calls.
    pub stop: CancellationToken,
    /// How long open calls may take to finish after `stop`.
    pub grace: Duration,
}

/// The end users' listener: gRPC-Web (and gRPC) for the Notifier and the
/// HTTP endpoints of [`crate::web`], HTTP/1.1 and HTTP/2, with TLS if the
/// gRPC listener has it (browsers present no client certificates, so none
/// is asked for).
pub struct WebListener {
    /// Where it listens.
    pub listener: TcpListener,
    /// Its endpoints, and the credentials they check (for gRPC-Web too).
    pub web: Arc<crate::web::Web>,
    /// TLS, without client certificates; `None`: plain HTTP.
    pub tls: Option<ServerTlsConfig>,
}

/// What one HTTP/2 connection may hold, and how a silent peer is found.
#[derive(Clone, Copy, Debug)]
pub struct Http2Options {
    /// Streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest header list (metadata) of one request, in bytes.
    pub max_header_list_size: u32,
    /// Time between keepalive pings.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// The services one listener serves, and how; cheap to clone.
#[derive(Clone)]
struct Services<H> {
    logger: Arc<EventLoggerService>,
    shared: Shared,
    health: H,
    body: BodyLimits,
    http2: Http2Options,
}

/// Serves every service on `listener` (and the internal listener, if any)
/// until `stop` is cancelled, then lets open calls finish for at most `grace`.
pub async fn serve<H>(
    listener: TcpListener,
    logger: EventLoggerService,
    shared: Shared,
    health: tonic_health::pb::health_server::HealthServer<H>,
    options: ServeOptions,
) -> anyhow::Result<()>
where
    H: tonic_health::pb::health_server::Health,
{
    let ServeOptions {
        auth,
        metrics,
        tls,
        web,
        internal,
        body,
        http2,
        stop,
        grace,
    } = options;
    let services = Services {
        logger: Arc::new(logger),
        shared,
        health,
        body,
        http2,
    };
    let calls = InFlight::default();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("--tls-cert, --tls-key or --tls-client-ca")?;
    }
    let web_layers = (calls.clone(), Some(metrics.clone()));
    let web = async {
        match web {
            Some(web) => serve_web(web, web_layers, &services, stop.clone()).await,
            None => Ok(()),
        }
    };
    let public = serve_on(
        builder,
        listener,
        (calls.clone(), Some(metrics), auth),
        services.clone(),
        stop.clone(),
    );
    let internal =
        futures_util::future::try_join_all(internal.into_iter().map(|(listener, auth)| {
            let layers = (calls.clone(), None, auth);
            serve_on(
                Server::builder(),
                listener,
                layers,
                services.clone(),
                stop.clone(),
            )
        }));
    tokio::select! {
        result = async { tokio::try_join!(public, internal, web) } => { result?; }
        () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "calls still open after the grace time; closing them");
        }
        // Every call has ended, but hyper still waits for each connection's
        // answer to its last PING, which a client that stopped reading never
        // sends: give the last answers time to leave, then close.
        () = async { stop.cancelled().await; calls.idle().await; tokio::time::sleep(FLUSH).await } => {
            info!("every call ended; closing the connections");
        }
    }
    info!("server stopped");
    Ok(())
}

/// Serves `services` on `listener` through `builder` (which may hold TLS)
/// and `layers` (the count of calls in flight outermost, then metrics, if
/// any, then auth, then the body guard) until `stop` is cancelled and the
/// open calls have ended.
async fn serve_on<H>(
    builder: Server,
    listener: TcpListener,
    (calls, metrics, auth): (InFlight, Option<RpcMetricsLayer>, AuthLayer),
    services: Services<tonic_health::pb::health_server::HealthServer<H>>,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    H: tonic_health::pb::health_server::Health,
{
    let Services {
        logger,
        shared,
        health,
        body,
        http2,
    } = services;
    let max_message_bytes = body.max_message_bytes;
    let body = BodyLayer(body);
    // Both reflection versions describe every service, each other included, and
    // google.rpc's error details, so grpcurl can decode BadRequest violations.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(herald::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    http2
        .apply(builder)
        .layer(calls)
        .layer(tower::util::option_layer(metrics))
        .layer(auth)
        .layer(body)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            EventLoggerServer::from_arc(logger)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add_service(NotifierServer::new(shared.notifier, max_message_bytes))
        .add_service(inbox_server(shared.inbox, max_message_bytes))
        .add_service(recipients_server(shared.recipients, max_message_bytes))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves the end users' listener ([`crate::web`]): its gRPC services
/// behind tonic-web and the same layers as [`serve_on`], beside its HTTP
/// endpoints, over HTTP/1.1 and HTTP/2, until `stop` is cancelled.
async fn serve_web<H>(
    web: WebListener,
    (calls, metrics): (InFlight, Option<RpcMetricsLayer>),
    services: &Services<H>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let max_message_bytes = services.body.max_message_bytes;
    let grpc = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(calls)
        .layer(tower::util::option_layer(metrics))
        .layer(web.web.auth().clone())
        .layer(BodyLayer(services.body.clone()))
        .service(
            Routes::new(NotifierServer::new(
                services.shared.notifier.clone(),
                max_message_bytes,
            ))
            .add_service(inbox_server(
                services.shared.inbox.clone(),
                max_message_bytes,
            ))
            .add_service(recipients_server(
                services.shared.recipients.clone(),
                max_message_bytes,
            ))
            .prepare(),
        );
    let mut builder = Server::builder();
    if let Some(tls) = web.tls {
        builder = builder
            .tls_config(tls)
            .context("--tls-cert or --tls-key (for --web-listen)")?;
    }
    services
        .http2
        .apply(builder.accept_http1(true))
        .add_routes(Routes::from(crate::web::router(web.web, grpc)))
        .serve_with_incoming_shutdown(incoming(web.listener), stop.cancelled_owned())
        .await?;
    Ok(())
}

impl Http2Options {
    /// `builder` holding these settings.
    fn apply(self, builder: Server) -> Server {
        builder
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_size)
    }
}

/// The connections `listener` accepts, without Nagle's algorithm: it
/// would hold small responses back for the peer's delayed ACK (40 ms
/// tails), and the builder's tcp_nodelay only covers listeners tonic binds
/// itself.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The Inbox's server, with messages of at most `max_message_bytes`.
fn inbox_server(inbox: Arc<InboxService>, max_message_bytes: usize) -> InboxServer<InboxService> {
    InboxServer::from_arc(inbox)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The Recipients' server, with messages of at most `max_message_bytes`.
fn recipients_server(
    recipients: Arc<RecipientsService>,
    max_message_bytes: usize,
) -> RecipientsServer<RecipientsService> {
    RecipientsServer::from_arc(recipients)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The health service that says whether every partition takes writes.
pub const PARTITIONS_HEALTH: &str = "herald.partitions";

/// Keeps health in step with the store (at `location`, named in the
/// warnings): SERVING while it answers, NOT_SERVING while it does not, and
/// NOT_SERVING from shutdown on. [`PARTITIONS_HEALTH`] is SERVING while
/// every partition takes writes, NOT_SERVING while some do not (their
/// Redis master is gone, or has too few replicas), which `writable` says
/// per partition; the logger serves the other partitions meanwhile.
pub async fn watch_health(
    reporter: HealthReporter,
    store: Arc<dyn EventStore>,
    location: String,
    writable: prometheus::IntGaugeVec,
    shutdown: CancellationToken,
) {
    let mut last = None;
    let mut partitions = PartitionHealth::default();
    loop {
        partitions.check(&reporter, store.as_ref(), &writable).await;
        let status = match store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(storage = %location, error = %err, "storage unreachable; health is NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            if last.is_some() && status == ServingStatus::Serving {
                info!("storage reachable again; health is SERVING");
            }
            set_all(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(PARTITIONS_HEALTH, ServingStatus::NotServing)
        .await;
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// What the partitions' health was last seen as.
#[derive(Default)]
struct PartitionHealth {
    /// The partitions last seen unwritable; `None` before the first look.
    down: Option<Vec<String>>,
}

impl PartitionHealth {
    /// Looks at which partitions take writes, and says so (health,
    /// gauges, a line when it changes).
    async fn check(
        &mut self,
        reporter: &HealthReporter,
        store: &dyn EventStore,
        writable: &prometheus::IntGaugeVec,
    ) {
        let unwritable = store.unwritable_partitions().await;
        for p in store.partitions().all() {
            // A store that does not answer at all takes no writes anywhere.
            let up = unwritable
                .as_ref()
                .is_ok_and(|down| !down.iter().any(|(q, _)| *q == p));
            writable
                .with_label_values(&[&p.to_string()])
                .set(i64::from(up));
        }
        let Ok(unwritable) = unwritable else {
            // The overall health says why.
            reporter
                .set_service_status(PARTITIONS_HEALTH, ServingStatus::NotServing)
                .await;
            self.down = None;
            return;
        };
        let down: Vec<String> = unwritable.iter().map(|(p, _)| p.to_string()).collect();
        if self.down.as_ref() == Some(&down) {
            return;
        }
        let status = if down.is_empty() {
            if self.down.as_ref().is_some_and(|d| !d.is_empty()) {
                info!("every partition takes writes again");
            }
            ServingStatus::Serving
        } else {
            let why: Vec<String> = unwritable
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect();
            warn!(partitions = %down.join(","), why = %why.join("; "), "some partitions take no writes; health of herald.partitions is NOT_SERVING");
            ServingStatus::NotServing
        };
        reporter.set_service_status(PARTITIONS_HEALTH, status).await;
        self.down = Some(down);
    }
}
