//! What a request may make the server hold before a handler sees it.
//!
//! Every Herald and health method takes one request message, so this layer
//! reads each call's body whole before tonic does, within `--body-timeout`,
//! and checks its gRPC framing: one frame, declared no larger than
//! `--max-message-bytes`, uncompressed, complete. A body that breaks a rule
//! is refused with a status that says which (RESOURCE_EXHAUSTED for size,
//! DEADLINE_EXCEEDED for time, INVALID_ARGUMENT for framing), and no handler
//! runs; a client that stops sending half way holds its bytes for the
//! timeout at most. All the calls being read or served at once may hold at
//! most `--max-pending-request-bytes` of declared messages: past that a call
//! is refused at once (RESOURCE_EXHAUSTED, retry later) instead of adding to
//! what the server holds. A client that goes away while sending ends its
//! call as CANCELLED. Reflection streams (bidirectional) pass untouched.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, body::Body};

use crate::auth::take_ready;

/// The gRPC frame header: a compressed flag and a 4-byte length.
const HEADER: usize = 5;

/// The limits on request bodies.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest request message (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// How long a body may take to arrive whole (`--body-timeout`).
    pub timeout: Duration,
    /// Bytes of declared request messages all calls may hold at once
    /// (`--max-pending-request-bytes`), shared by every listener.
    pub pending: Arc<Semaphore>,
}

impl BodyLimits {
    /// Limits of `max_message_bytes` per message, `timeout` per body and
    /// `pending_bytes` in all (at least one largest message).
    pub fn new(max_message_bytes: usize, timeout: Duration, pending_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            timeout,
            pending: Arc::new(Semaphore::new(pending_bytes.max(max_message_bytes))),
        }
    }
}

/// The tower layer that reads and checks request bodies.
#[derive(Clone, Debug)]
pub struct BodyLayer(pub BodyLimits);

impl<S> tower::Layer<S> for BodyLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limits: self.0.clone(),
        }
    }
}

/// The service of [`BodyLayer`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> tower::Service<http::Request<Body>> for Guard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if request.uri().path().starts_with("/grpc.reflection.") {
            return Box::pin(inner.call(request));
        }
        let limits = self.limits.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let compressed = parts.headers.contains_key("grpc-encoding");
            let read = read_message(body, &limits, compressed);
            let refusal = match tokio::time::timeout(limits.timeout, read).await {
                Ok(Ok((bytes, _held))) => {
                    // The message's share of the pending budget is held until
                    // the call has its answer (a stream: until it starts).
                    let request = http::Request::from_parts(parts, Body::new(full(bytes)));
                    return inner.call(request).await;
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "the request message did not arrive whole within {} (--body-timeout)",
                    humantime::format_duration(limits.timeout)
                )),
            };
            Ok(refusal.into_http())
        })
    }
}

/// A body of exactly `bytes`.
fn full(bytes: Bytes) -> http_body_util::Full<Bytes> {
    http_body_util::Full::new(bytes)
}

/// Reads a body that must hold one gRPC frame within `limits`, with its
/// share of the pending budget; `compressed` says whether the call named a
/// `grpc-encoding`.
async fn read_message(
    mut body: Body,
    limits: &BodyLimits,
    compressed: bool,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Status> {
    let mut buf = BytesMut::new();
    let mut declared = None;
    let mut held = None;
    while let Some(frame) = body.frame().await {
        // A failed read is the client resetting the call or the connection.
        let frame =
            frame.map_err(|_| Status::cancelled("the client stopped sending the request"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if declared.is_none() && buf.len() >= HEADER {
            let len = check_header(&buf[..HEADER], limits.max_message_bytes, compressed)?;
            held = Some(take_pending(&limits.pending, len)?);
            declared = Some(len);
        }
        if let Some(len) = declared
            && buf.len() > HEADER + len
        {
            return Err(Status::invalid_argument(
                "the request body holds more than one message; every method takes one",
            ));
        }
    }
    match declared {
        Some(len) if buf.len() == HEADER + len => Ok((buf.freeze(), held)),
        Some(len) => Err(Status::invalid_argument(format!(
            "the request message is cut short: its frame declares {len} bytes, the body ended after {}",
            buf.len() - HEADER
        ))),
        None if buf.is_empty() => Err(Status::invalid_argument(
            "the request has no message; every method takes one",
        )),
        None => Err(Status::invalid_argument(format!(
            "the request body ended inside a frame header ({} of {HEADER} bytes)",
            buf.len()
        ))),
    }
}

/// `len` bytes of the pending budget, if that many are free now.
fn take_pending(pending: &Arc<Semaphore>, len: usize) -> Result<OwnedSemaphorePermit, Status> {
    u32::try_from(len)
        .ok()
        .and_then(|n| pending.clone().try_acquire_many_owned(n).ok())
        .ok_or_else(|| {
            Status::resource_exhausted(
                "the server is holding as many unfinished requests as it may \
                 (--max-pending-request-bytes); retry shortly",
            )
        })
}

/// The message length a frame header declares, if the frame is acceptable.
fn check_header(mut header: &[u8], max: usize, compressed: bool) -> Result<usize, Status> {
    match header.get_u8() {
        0 => {}
        1 if compressed => {}
        1 => {
            return Err(Status::invalid_argument(
                "the request message is marked compressed, but the call names no grpc-encoding",
            ));
        }
        flag => {
            return Err(Status::invalid_argument(format!(
                "the request frame has compressed-flag {flag}; only 0 and 1 exist"
            )));
        }
    }
    let len = header.get_u32() as usize;
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "the request message is {len} bytes, over the limit of {max} (--max-message-bytes)"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from_static(c)))),
        );
        Body::new(http_body_util::StreamBody::new(stream))
    }

    async fn read(chunks: Vec<&'static [u8]>) -> Result<Bytes, Status> {
        let limits = BodyLimits::new(8, Duration::from_secs(1), 8);
        read_message(body(chunks), &limits, false)
            .await
            .map(|(bytes, _)| bytes)
    }

    #[tokio::test]
    async fn one_whole_frame_passes_in_any_chunks() {
        let got = read(vec![&[0, 0, 0], &[0, 2, 7], &[9]])
            .await
            .expect("whole");
        assert_eq!(&got[..], &[0, 0, 0, 0, 2, 7, 9]);
        let empty = read(vec![&[0, 0, 0, 0, 0]]).await.expect("empty message");
        assert_eq!(empty.len(), HEADER);
    }

    #[tokio::test]
    async fn framing_errors_say_what_is_wrong() {
        for (chunks, code, words) in [
            (vec![], Code::InvalidArgument, "no message"),
            (vec![&[0u8, 0][..]], Code::InvalidArgument, "frame header"),
            (
                vec![&[0, 0, 0, 0, 4, 1][..]],
                Code::InvalidArgument,
                "cut short",
            ),
            (
                vec![&[0, 0, 0, 0, 1, 1, 0][..]],
                Code::InvalidArgument,
                "more than one",
            ),
            (
                vec![&[1, 0, 0, 0, 0][..]],
                Code::InvalidArgument,
                "grpc-encoding",
            ),
            (
                vec![&[7, 0, 0, 0, 0][..]],
                Code::InvalidArgument,
                "compressed-flag 7",
            ),
            (
                vec![&[0, 0, 0, 0, 9][..]],
                Code::ResourceExhausted,
                "--max-message-bytes",
            ),
            (
                vec![&[0, 255, 255, 255, 255][..]],
                Code::ResourceExhausted,
                "4294967295",
            ),
        ] {
            let status = read(chunks).await.expect_err("refused");
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(status.message().contains(words), "{}", status.message());
        }
    }

    #[tokio::test]
    async fn the_pending_budget_is_held_while_a_message_is_and_given_back() {
        let limits = BodyLimits::new(8, Duration::from_secs(1), 10);
        let (_, first) = read_message(
            body(vec![&[0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]]),
            &limits,
            false,
        )
        .await
        .expect("within the budget");
        let refused = read_message(body(vec![&[0, 0, 0, 0, 4, 1, 2, 3, 4]]), &limits, false)
            .await
            .expect_err("over the budget");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("--max-pending-request-bytes"));
        drop(first);
        read_message(body(vec![&[0, 0, 0, 0, 4, 1, 2, 3, 4]]), &limits, false)
            .await
            .expect("given back");
    }

    #[tokio::test]
    async fn a_client_gone_mid_body_is_cancelled() {
        let stream = futures_util::stream::iter(vec![
            Ok(http_body::Frame::data(Bytes::from_static(&[
                0, 0, 0, 0, 4, 1,
            ]))),
            Err(Status::unknown("connection reset")),
        ]);
        let limits = BodyLimits::new(8, Duration::from_secs(1), 8);
        let status = read_message(
            Body::new(http_body_util::StreamBody::new(stream)),
            &limits,
            false,
        )
        .await
        .expect_err("gone");
        assert_eq!(status.code(), Code::Cancelled);
    }
}
