//! The one place where every gRPC service is registered: EventLogger,
//! Notifier, health (for "" and each service) and reflection (v1 and v1alpha).

use std::{sync::Arc, time::Duration};

use herald::{
    backend::EventStore,
    pb::{event_logger_server::EventLoggerServer, notifier_server::NotifierServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{auth::AuthLayer, notifier::NotifierService, service::EventLoggerService};

/// The names health reports on: the whole server ("") and each service.
pub const HEALTH_SERVICES: [&str; 3] = [
    "",
    <EventLoggerServer<EventLoggerService> as NamedService>::NAME,
    <NotifierServer<NotifierService> as NamedService>::NAME,
];

/// How the server treats calls and its own end.
pub struct ServeOptions {
    /// Checks credentials, scopes and rate limits of every call.
    pub auth: AuthLayer,
    /// Largest request or response message.
    pub max_message_bytes: usize,
    /// Cancelled to stop accepting calls.
    pub stop: CancellationToken,
    /// How long open calls may take to finish after `stop`.
    pub grace: Duration,
}

/// Serves every service on `listener` until `stop` is cancelled, then lets
/// open calls finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    logger: EventLoggerService,
    notifier: NotifierService,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let ServeOptions {
        auth,
        max_message_bytes,
        stop,
        grace,
    } = options;
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
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(auth)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            EventLoggerServer::new(logger)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add_service(
            NotifierServer::new(notifier)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .serve_with_incoming_shutdown(
            // Nagle's algorithm would hold small responses back for the peer's
            // delayed ACK (40 ms tails); the builder's tcp_nodelay only covers
            // listeners tonic binds itself.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.clone().cancelled_owned(),
        );
    tokio::select! {
        result = server => result?,
        () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "calls still open after the grace time; closing them");
        }
    }
    info!("server stopped");
    Ok(())
}

/// Keeps health in step with the store: SERVING while it answers, NOT_SERVING
/// while it does not, and NOT_SERVING from shutdown on.
pub async fn watch_health(
    reporter: HealthReporter,
    store: Arc<dyn EventStore>,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let status = match store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(error = %err, "storage unreachable; health is NOT_SERVING");
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
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        reporter.set_service_status(name, status).await;
    }
}
