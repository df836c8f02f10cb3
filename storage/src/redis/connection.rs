//! The shared connection: to one Redis node, or to a Redis Cluster, behind
//! one type that every command, pipeline and script goes through.
//!
//! On a cluster, redis-rs routes each command by its key's slot and follows
//! MOVED and ASK itself; Herald's part is to never send one command or
//! pipeline over keys of two partitions (they are in two slots).

use std::time::Duration;

use ::redis::{
    Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    io::tcp::TcpSettings,
};

use herald::error::{Error, Result};

/// How long one command may take before the shared connection gives up on it.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a cluster request is retried (after a MOVED, a dead node),
/// waiting 0.1 to 1 s between tries: about 2.5 s in all.
const CLUSTER_RETRIES: u32 = 4;

/// The connection every call shares (cheap to clone: it multiplexes).
#[derive(Clone)]
pub(super) enum Conn {
    /// One Redis node, reconnected on failure.
    Node(ConnectionManager),
    /// A Redis Cluster: a connection per node, requests routed by slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where Herald's Redis is.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One node, by its `redis://` URL.
    Node(String),
    /// A Redis Cluster, by the `redis://` URLs of some of its nodes (seeds).
    Cluster(Vec<String>),
}

/// The shared connection to `target`, and (for one node) the client that
/// makes the blocking readers' own connections. Connections are made on
/// first use, so this works while Redis is down; it fails only on a
/// malformed URL.
pub(super) fn connect(target: &RedisTarget) -> Result<(Conn, Option<Client>)> {
    let invalid = |e: RedisError| Error::Internal(format!("invalid Redis URL: {e}"));
    // Commands are small and pipelined: without TCP_NODELAY, Nagle's
    // algorithm holds them back for the server's delayed ACK.
    let nodelay = TcpSettings::default().set_nodelay(true);
    match target {
        RedisTarget::Node(url) => {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(invalid)?
                .set_tcp_settings(nodelay);
            let client = Client::open(info).map_err(invalid)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(super::redis_error)?;
            Ok((Conn::Node(conn), Some(client)))
        }
        RedisTarget::Cluster(urls) => {
            // A request to a node that is gone is retried while the cluster
            // promotes a replica, a few seconds at most, then UNAVAILABLE
            // (for the caller to retry; redis-rs's default,
            // 16 retries of 1.3 s or more each, would hold a caller for half
            // a minute).
            let client = ClusterClient::builder(urls.iter().map(String::as_str))
                .tcp_settings(nodelay)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(100)
                .max_retry_wait(1_000)
                .retry_wait_formula(100, 2)
                .build()
                .map_err(invalid)?;
            let config = ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            Ok((
                Conn::Cluster(client.get_pending_async_connection_with_config(config)),
                None,
            ))
        }
    }
}
