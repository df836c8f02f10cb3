//! Calls in flight on every listener, from the request to the end of its
//! response body, so that shutdown can stop waiting once every call has
//! ended: hyper's graceful close otherwise waits for each connection's
//! answer to the PING after its GOAWAY, which a client that stopped reading
//! never gives, and the logger would sit out the whole `--shutdown-grace`.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use http_body::Frame;
use tokio::sync::Notify;

/// The count of calls in flight; clones share it.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Count>);

#[derive(Default)]
struct Count {
    calls: AtomicUsize,
    /// Notified when `calls` falls to zero.
    idle: Notify,
}

impl InFlight {
    /// Returns once no call is in flight (at once if none is).
    pub async fn idle(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.0.calls.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn enter(&self) -> Call {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        Call(self.clone())
    }
}

/// One call, counted until dropped.
struct Call(InFlight);

impl Drop for Call {
    fn drop(&mut self) {
        if self.0.0.calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.idle.notify_waiters();
        }
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            calls: self.clone(),
        }
    }
}

/// The service of the [`InFlight`] layer.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    calls: InFlight,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
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
        let call = self.calls.enter();
        let mut ready = crate::auth::take_ready(&mut self.inner);
        Box::pin(async move {
            let response = ready.call(request).await?;
            let (parts, body) = response.into_parts();
            let body = tonic::body::Body::new(Tracked { body, _call: call });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body that keeps its call counted until it is dropped (sent
/// whole, or given up when the client went away).
struct Tracked {
    body: tonic::body::Body,
    _call: Call,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_comes_when_the_last_call_ends() {
        let calls = InFlight::default();
        calls.idle().await;
        let (a, b) = (calls.enter(), calls.enter());
        let waiter = tokio::spawn({
            let calls = calls.clone();
            async move { calls.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one call is still in flight");
        drop(b);
        waiter.await.expect("idle once both ended");
    }
}
