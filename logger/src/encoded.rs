//! Subscribe messages encoded once: the fan-out encodes each logged change
//! to protobuf bytes a single time, and every stream that wants it sends
//! those same bytes ([`Encoded`], shared by reference count), through a
//! codec that writes bytes as they are ([`PassThrough`]).
//!
//! A stream whose position is past the change's own cursor (it read the log
//! further while catching up) appends a second `cursor` field: protobuf
//! readers keep the last value of a field that is not repeated, so the
//! message says that stream's cursor without being encoded again.
//!
//! The Notifier is served by [`NotifierServer`], written here rather than
//! generated, since the generated one would encode every message again for
//! every stream.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes};
use herald::pb;
use prost::Message;
use tonic::{
    Status,
    body::Body,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    server::{Grpc, NamedService, ServerStreamingService},
};

use crate::notifier::{NotifierService, SubscribeStream};

/// The encoding buffer of one Subscribe stream, in bytes.
const STREAM_BUFFER: usize = 1024;

/// The protobuf field number of `SubscribeResponse.cursor`.
const CURSOR_FIELD: u32 = 2;

/// One SubscribeResponse, already encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The message as encoded once for every stream.
    shared: Bytes,
    /// A `cursor` field that overrides the shared one, for one stream.
    cursor: Option<Bytes>,
}

impl Encoded {
    /// `message`, encoded.
    pub fn new(message: &pb::SubscribeResponse) -> Self {
        Self {
            shared: message.encode_to_vec().into(),
            cursor: None,
        }
    }

    /// The same message, saying `cursor` instead of its own.
    pub fn with_cursor(&self, cursor: &str) -> Self {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let mut field = Vec::with_capacity(cursor.len() + 6);
        encode_key(CURSOR_FIELD, WireType::LengthDelimited, &mut field);
        encode_varint(cursor.len() as u64, &mut field);
        field.extend_from_slice(cursor.as_bytes());
        Self {
            shared: self.shared.clone(),
            cursor: Some(field.into()),
        }
    }

    /// Its length on the wire.
    pub fn len(&self) -> usize {
        self.shared.len() + self.cursor.as_ref().map_or(0, Bytes::len)
    }

    /// Whether it has no bytes (a message with every field empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message, decoded back (for a transport that sends it otherwise:
    /// Server-Sent Events).
    pub(crate) fn decode(&self) -> pb::SubscribeResponse {
        let mut bytes = self.shared.to_vec();
        bytes.extend_from_slice(self.cursor.as_deref().unwrap_or_default());
        pb::SubscribeResponse::decode(bytes.as_slice()).expect("encoded by this module")
    }
}

impl From<pb::SubscribeResponse> for Encoded {
    fn from(message: pb::SubscribeResponse) -> Self {
        Self::new(&message)
    }
}

/// Writes [`Encoded`] messages as they are; reads requests with Herald's
/// checked decoder (INVALID_ARGUMENT naming the field).
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough;

/// The encoder of [`PassThrough`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.len());
        buf.put_slice(&item.shared);
        if let Some(cursor) = &item.cursor {
            buf.put_slice(cursor);
        }
        Ok(())
    }

    /// tonic allocates a stream's encoding buffer when the stream opens and
    /// keeps it while it is open: 1 KiB (a few messages; it grows in 1 KiB
    /// steps for more) instead of tonic's 8 KiB is most of what an idle
    /// stream costs. Up to 32 KiB of ready messages still go out together.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER, 32 * 1024)
    }
}

impl Codec for PassThrough {
    type Encode = Encoded;
    type Decode = pb::SubscribeRequest;
    type Encoder = BytesEncoder;
    type Decoder = herald::codec::CheckedDecoder<pb::SubscribeRequest>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        herald::codec::Codec::<pb::SubscribeResponse, pb::SubscribeRequest>::default().decoder()
    }
}

/// Serves `herald.v1.Notifier` with [`PassThrough`].
#[derive(Clone)]
pub struct NotifierServer {
    inner: Arc<NotifierService>,
    max_message_bytes: usize,
}

impl NotifierServer {
    /// The server of `inner`, decoding and encoding messages of at most
    /// `max_message_bytes`.
    pub fn new(inner: Arc<NotifierService>, max_message_bytes: usize) -> Self {
        Self {
            inner,
            max_message_bytes,
        }
    }
}

impl NamedService for NotifierServer {
    const NAME: &'static str = "herald.v1.Notifier";
}

/// The Subscribe method, as tonic's server calls it.
struct Subscribe(Arc<NotifierService>);

impl ServerStreamingService<pb::SubscribeRequest> for Subscribe {
    type Response = Encoded;
    type ResponseStream = SubscribeStream;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<tonic::Response<SubscribeStream>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<pb::SubscribeRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.subscribe(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for NotifierServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (inner, limit) = (self.inner.clone(), self.max_message_bytes);
        Box::pin(async move {
            if request.uri().path() != "/herald.v1.Notifier/Subscribe" {
                return Ok(
                    Status::unimplemented("no such method of herald.v1.Notifier").into_http(),
                );
            }
            let mut grpc =
                Grpc::new(PassThrough).apply_max_message_size_config(Some(limit), Some(limit));
            Ok(grpc.server_streaming(Subscribe(inner), request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use herald::pb::{self, subscribe_response::Kind};

    use super::Encoded;

    #[test]
    fn a_stream_of_its_own_cursor_shares_the_message_and_overrides_the_field() {
        let message = pb::SubscribeResponse {
            kind: Some(Kind::Lagged(pb::Lagged { buffered: 7 })),
            cursor: "2:16:0:1".into(),
            unread_count: None,
        };
        let shared = Encoded::new(&message);
        assert_eq!(shared.decode(), message);
        let own = shared.with_cursor("2:16:5:3.1");
        assert_eq!(
            own.shared.as_ptr(),
            shared.shared.as_ptr(),
            "the same bytes"
        );
        let decoded = own.decode();
        assert_eq!(decoded.cursor, "2:16:5:3.1", "the last cursor field wins");
        assert_eq!(decoded.kind, message.kind);
        assert_eq!(own.len(), own.shared.len() + "2:16:5:3.1".len() + 2);
    }
}
