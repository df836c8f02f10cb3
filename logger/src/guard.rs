//! What a request may make the server hold before a handler sees it.
//!
//! Every Herald and health method takes one request message, so this layer
//! reads each call's body whole before tonic does, within `--body-timeout`,
//! and checks its gRPC framing: one frame, declared no larger than
//! `--max-message-bytes`, uncompressed, complete. A body that breaks a rule
//! is refused with a status that says which (RESOURCE_EXHAUSTED for size,
//! DEADLINE_EXCEEDED for time, INVALID_ARGUMENT for framing), and no handler
//! runs; a client that stops sending half way holds its bytes for the
//! timeout at most. Reflection streams (bidirectional) pass untouched.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::{Status, body::Body};

use crate::auth::take_ready;

/// The gRPC frame header: a compressed flag and a 4-byte length.
const HEADER: usize = 5;

/// The limits on request bodies.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest request message (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// How long a body may take to arrive whole (`--body-timeout`).
    pub timeout: Duration,
}

/// The tower layer that reads and checks request bodies.
#[derive(Clone, Copy, Debug)]
pub struct BodyLayer(pub BodyLimits);

impl<S> tower::Layer<S> for BodyLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limits: self.0,
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
        let limits = self.limits;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let compressed = parts.headers.contains_key("grpc-encoding");
            let read = read_message(body, limits.max_message_bytes, compressed);
            let refusal = match tokio::time::timeout(limits.timeout, read).await {
                Ok(Ok(bytes)) => {
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

/// Reads a body that must hold one gRPC frame of at most `max` bytes of
/// message; `compressed` says whether the call named a `grpc-encoding`.
async fn read_message(mut body: Body, max: usize, compressed: bool) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    let mut declared = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if declared.is_none() && buf.len() >= HEADER {
            declared = Some(check_header(&buf[..HEADER], max, compressed)?);
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
        Some(len) if buf.len() == HEADER + len => Ok(buf.freeze()),
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
        read_message(body(chunks), 8, false).await
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
}
