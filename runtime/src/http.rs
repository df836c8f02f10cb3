//! The small HTTP/1.1 servers beside gRPC (`/metrics`, the logger's console):
//! their `--*-listen` flags (an address, or `off`), binding, and one accept
//! loop that bounds what clients can hold (connections at once, time to send
//! a request's head).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long the accept loop waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Where a side server listens; `None` for nowhere (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

/// Reads a `--*-listen` flag: an address, or `off`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    match text.trim() {
        "off" | "" => Ok(Listen(None)),
        addr => addr
            .parse()
            .map(|a| Listen(Some(a)))
            .map_err(|e| format!("{e} (expected an address like 127.0.0.1:9464, or off)")),
    }
}

/// Binds `addr` (`None`: nothing to bind); the error names `flag`.
pub async fn bind(addr: Option<SocketAddr>, flag: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("cannot listen on {addr} ({flag}; `off` serves nothing)")),
    }
}

/// The address a request of [`serve`] came from, in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// What the clients of one side server may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
    /// Longest a client may take to send a request's head.
    pub header_timeout: Duration,
}

/// Serves HTTP/1.1 on `listener` with `service` until `shutdown` is
/// cancelled; open connections are dropped then. `what` names the server in
/// the debug log.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    what: &'static str,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: wait a little rather
                    // than spin on an error that will not clear at once.
                    debug!(error = %err, what, "accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        // Reap finished connections; past the limit, refuse the new one.
        while connections.try_join_next().is_some() {}
        if connections.len() >= limits.max_connections {
            debug!(what, "too many connections; closing a new one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        // Every request carries the address it came from.
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            service.call(request)
        });
        connections.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                debug!(error = %err, what, "connection ended with an error");
            }
        });
    }
}

/// Whether `host` (a Host header) names a loopback address or localhost.
/// A page on another site can reach a server on loopback through a DNS
/// name of its own that it rebinds to 127.0.0.1 (DNS rebinding), but it
/// cannot make the browser send a loopback address or `localhost` as the
/// Host: servers on loopback answer only those.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest.split_once(']').is_some_and(|(ip, _)| {
                ip.parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
            });
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_addresses_and_localhost_are_local_hosts() {
        for host in [
            "127.0.0.1:8088",
            "127.1.2.3",
            "localhost:8088",
            "LOCALHOST",
            "[::1]:8088",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8088",
            "",
            "127.0.0.1.evil.example",
            "[::1",
            "localhost.evil",
            "10.0.0.2",
            "0.0.0.0:8088",
            "[fe80::1]:8088",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
