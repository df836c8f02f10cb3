//! Authentication, authorization and rate limits of every call, as one tower layer.
//!
//! With a keys file, a call must carry `authorization: Bearer <key>` for a
//! known key (else UNAUTHENTICATED) whose scopes cover the method (else
//! PERMISSION_DENIED naming the scope). Health checks and reflection are open
//! to all. The caller's [`Identity`] goes into the request's extensions, where
//! handlers read the client id (an event's `source`). Without a keys file
//! every call is anonymous and allowed (open mode, loopback only unless
//! `--allow-anonymous`).
//!
//! The keys file and end users' tokens, and what each credential may call,
//! are in `auth/keys.rs` ([`KeyRing`]); this file holds the caller's
//! identity, the layer and its failure limit.

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use herald::{
    EventStatus,
    auth::{Access, Scope, access_for},
    domain::StatusChange,
};
use herald_storage::EventStore;
use prometheus::IntCounterVec;
use tonic::Status;

use crate::limits::{AuthFailures, Rate, RateLimiter};

mod keys;
pub use keys::{KeyProblem, KeyRing, KeysError};

/// Who is calling.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The client id of the key; empty for an anonymous caller (open mode).
    pub client_id: String,
    scopes: Vec<Scope>,
    /// The client's own rate limit, if its key sets one.
    rate: Option<Rate>,
    /// For an end user's token: the user it speaks for.
    pub user: Option<String>,
}

impl Identity {
    /// The end user `user`, as a token (or a ticket it bought) proves.
    pub(crate) fn end_user(user: String) -> Self {
        Self {
            user: Some(user),
            ..Self::anonymous(Vec::new())
        }
    }

    /// A caller without credentials, allowed `scopes`.
    fn anonymous(scopes: Vec<Scope>) -> Self {
        Self {
            client_id: String::new(),
            scopes,
            rate: None,
            user: None,
        }
    }

    /// The scopes it holds (none for an end user's token).
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether this identity may use `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// The client id of the caller (an event's `source`); empty in open mode.
pub(crate) fn source_of<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Identity>()
        .map(|identity| identity.client_id.clone())
        .unwrap_or_default()
}

/// The end user whose token made the call, if it was a user token.
pub(crate) fn user_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Identity>()
        .and_then(|identity| identity.user.clone())
}

/// A user token (`caller`) may reach its own user's `what` (inbox,
/// preferences) only; an API key reaches every user's.
pub(crate) fn only_own(caller: Option<&str>, user_id: &str, what: &str) -> Result<(), Status> {
    match caller {
        Some(user) if user != user_id => Err(Status::permission_denied(format!(
            "user tokens may only reach their own {what}"
        ))),
        _ => Ok(()),
    }
}

/// `user_id` is required and must be a user id (else INVALID_ARGUMENT
/// naming `user_id`).
pub(crate) fn require_user_id(user_id: &str) -> Result<(), Status> {
    match herald::domain::check_user_id("user_id", user_id) {
        Some(violation) => Err(herald::Error::InvalidArgument(vec![violation]).into()),
        None => Ok(()),
    }
}

/// Whether the end user `user` (whose token made the call) may make
/// `change`: only to OPENED, only on their own events. An unknown id
/// answers like another user's event, so a token cannot tell which ids
/// exist. The auth layer checked the token; this checks what it may touch,
/// which needs the event.
pub(crate) async fn check_user_change(
    user: &str,
    change: &StatusChange,
    store: &dyn EventStore,
) -> Result<(), Status> {
    if change.status != EventStatus::Opened {
        return Err(Status::permission_denied("user tokens may only set OPENED"));
    }
    let owner = match store.get(change.id).await {
        Ok(event) => Some(event.user_id),
        Err(herald::Error::NotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    if owner.as_deref() != Some(user) {
        return Err(Status::permission_denied(
            "user tokens may only open their own events",
        ));
    }
    Ok(())
}

/// The tower layer that checks every call against a [`KeyRing`].
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<KeyRing>,
    limits: Arc<RateLimiter>,
    failures: Option<FailureLimit>,
}

/// Failed authentications limited per peer address, and their counter:
/// one for the whole logger, shared by the gRPC listener and the console.
#[derive(Clone)]
pub struct FailureLimit {
    peers: Arc<AuthFailures>,
    counted: IntCounterVec,
}

impl FailureLimit {
    /// At most `rate` failures per peer address, counted in `counted` by
    /// outcome (`failed`, `refused`).
    pub fn new(rate: Rate, counted: IntCounterVec) -> Self {
        Self {
            peers: Arc::new(AuthFailures::new(rate)),
            counted,
        }
    }

    /// Refuses `peer` while it has no failure left to make (counted).
    pub fn check(&self, peer: IpAddr) -> Result<(), Status> {
        self.peers.check(peer).inspect_err(|_| {
            self.counted.with_label_values(&["refused"]).inc();
        })
    }

    /// Counts one failed authentication of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        self.peers.failed(peer);
        self.counted.with_label_values(&["failed"]).inc();
    }
}

impl AuthLayer {
    /// A layer checking calls against `keys`, then against their client's rate.
    pub fn new(keys: Arc<KeyRing>, limits: Arc<RateLimiter>) -> Self {
        Self {
            keys,
            limits,
            failures: None,
        }
    }

    /// The same layer, also limiting failed authentications per peer
    /// address (`None`: no limit, as in open mode, where nothing fails).
    pub fn with_failure_limit(mut self, failures: Option<FailureLimit>) -> Self {
        self.failures = failures;
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl AuthLayer {
    /// Who is calling, if allowed: the method's access, then (for a method
    /// that needs a scope) the peer's failures, the credential, and the
    /// caller's rate.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<Identity, Status> {
        self.admit_call(
            request.uri().path(),
            request.headers(),
            peer_ip(request.extensions()),
        )
    }

    /// Who is calling the method at `path` with `headers` from `peer`, if
    /// allowed: [`Self::admit`] for a caller that is not a gRPC call (an
    /// end user's HTTP endpoint acting as that method).
    pub(crate) fn admit_call(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Identity, Status> {
        let access = access_for(path);
        let Some(Access::Needs(_)) = access else {
            return self.keys.check_access(path, access, headers);
        };
        let limited = self.failures.as_ref().zip(peer);
        if let Some((failures, peer)) = limited {
            failures.check(peer)?;
        }
        let identity = self
            .keys
            .check_access(path, access, headers)
            .inspect_err(|status| {
                if let Some((failures, peer)) = limited
                    && status.code() == tonic::Code::Unauthenticated
                {
                    failures.failed(peer);
                }
            })?;
        self.admit_rate(&identity)?;
        Ok(identity)
    }

    /// Whether `identity` may make one more call now (its client's, or its
    /// user's, rate).
    pub(crate) fn admit_rate(&self, identity: &Identity) -> Result<(), Status> {
        let bucket = match &identity.user {
            Some(user) => format!("user:{user}"),
            None => identity.client_id.clone(),
        };
        self.limits.admit(&bucket, identity.rate)
    }

    /// The limit on failed authentications per peer, if any.
    pub(crate) fn failures(&self) -> Option<&FailureLimit> {
        self.failures.as_ref()
    }
}

/// The address a call came from, as tonic's accept loop recorded it
/// (plain TCP, or TCP under TLS).
pub(crate) fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    peer_addr(extensions).map(|addr| addr.ip())
}

/// The address and port a call came from (plain TCP, or TCP under TLS).
pub(crate) fn peer_addr(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })?;
    tcp.remote_addr()
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.layer.admit(&request) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                Box::pin(take_ready(&mut self.inner).call(request))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// The service `poll_ready` made ready, to answer one call, leaving a clone
/// in its place for the next (tower's rule for calls that outlive `call`).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald::auth::hash_key;

    fn ring() -> KeyRing {
        let text = format!(
            r#"{{"keys": [
                {{"client_id": "shop", "key_sha256": "{}", "scopes": ["events:write"]}},
                {{"client_id": "ops", "key_sha256": "{}", "scopes": ["admin"]}}
            ]}}"#,
            hash_key("shop-key"),
            hash_key("ops-key")
        );
        KeyRing::parse(&text).expect("valid keys file")
    }

    fn headers(key: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(key) = key {
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {key}").parse().expect("header"),
            );
        }
        h
    }

    #[test]
    fn keys_and_scopes_decide() {
        let ring = ring();
        let create = "/herald.v1.EventLogger/CreateEvent";
        let get = "/herald.v1.EventLogger/GetEvent";
        assert_eq!(
            ring.check(create, &headers(Some("shop-key")))
                .expect("allowed")
                .client_id,
            "shop"
        );
        let denied = ring
            .check(get, &headers(Some("shop-key")))
            .expect_err("no read scope");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("events:read"));
        assert_eq!(
            ring.check(get, &headers(None)).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            ring.check(get, &headers(Some("nope")))
                .expect_err("wrong")
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            ring.check(get, &headers(Some("ops-key")))
                .expect("admin")
                .client_id,
            "ops"
        );
        assert!(
            ring.check("/grpc.health.v1.Health/Check", &headers(None))
                .is_ok()
        );
        // A method the contract lacks is refused, even to an admin and in open mode.
        for ring in [&ring, &KeyRing::open()] {
            let unknown = ring
                .check("/herald.v1.EventLogger/DropAll", &headers(Some("ops-key")))
                .expect_err("unknown method");
            assert_eq!(unknown.code(), tonic::Code::Unimplemented);
        }
    }

    #[test]
    fn bad_keys_files_say_what_is_wrong() {
        let cases = [
            ("[]", "\"keys\" array"),
            (
                r#"{"keys": [{"key_sha256": "00", "scopes": []}]}"#,
                "client_id",
            ),
            (
                r#"{"keys": [{"client_id": "a", "key_sha256": "00", "scopes": []}]}"#,
                "64 hex",
            ),
            (r#"{"keys": []}"#, "no keys"),
        ];
        for (text, problem) in cases {
            let err = KeyRing::parse(text).err().expect("invalid").to_string();
            assert!(err.contains(problem), "{text}: {err}");
        }
        let bad_scope = format!(
            r#"{{"keys": [{{"client_id": "a", "key_sha256": "{}", "scopes": ["events:fly"]}}]}}"#,
            hash_key("k")
        );
        let err = KeyRing::parse(&bad_scope).err().expect("invalid");
        assert!(
            matches!(&err, KeysError::Entry { problem: KeyProblem::UnknownScope(s), .. } if s == "\"events:fly\""),
            "{err:?}"
        );
        assert!(err.to_string().contains("unknown scope"), "{err}");
    }
}
