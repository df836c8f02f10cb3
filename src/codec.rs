//! The protobuf codec of Herald's generated services and clients: prost's,
//! except that bytes which do not decode as the expected message are the
//! sender's bad input, INVALID_ARGUMENT naming the field where prost names
//! one, never INTERNAL (which Herald keeps for its own bugs).
//!
//! A message nested past prost's recursion limit can only be a payload
//! (`google.protobuf.Struct` is the one recursive type in the contract), so
//! that error names `payload` and the documented depth limit.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::{
    domain::{FieldViolation, MAX_PAYLOAD_DEPTH},
    error::{Error, truncate},
};

/// The codec named in the generated code (`codec_path`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// prost's decoder, with its errors made INVALID_ARGUMENT.
#[derive(Debug)]
pub struct CheckedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|status| undecodable(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The well-known types whose inner fields mean nothing to a caller: a path
/// stops at the Herald field that holds one.
const WELL_KNOWN: [&str; 5] = ["Struct", "Value", "ListValue", "Timestamp", "Duration"];

/// The status for a message that did not decode, from prost's error text:
/// `failed to decode Protobuf message: Inner.field: Outer.field: description`
/// (innermost first).
pub fn undecodable(error: &str) -> Status {
    let rest = error
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(error);
    let mut path = Vec::new();
    let mut description = rest;
    while let Some((head, tail)) = description.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        if message.is_empty() || !message.chars().all(|c| c.is_ascii_alphanumeric()) {
            break;
        }
        path.push((message, field));
        description = tail;
    }
    // Outermost first, up to the first well-known type.
    let field = path
        .iter()
        .rev()
        .take_while(|(message, _)| !WELL_KNOWN.contains(message))
        .map(|(_, field)| *field)
        .collect::<Vec<_>>()
        .join(".");
    let violation = if description.contains("recursion limit") {
        let field = if field.is_empty() {
            "payload".into()
        } else {
            field
        };
        FieldViolation::new(
            field,
            format!("must be nested at most {MAX_PAYLOAD_DEPTH} deep"),
        )
    } else if field.is_empty() {
        return Status::invalid_argument(format!(
            "message does not decode as protobuf: {}",
            truncate(description, 160)
        ));
    } else {
        FieldViolation::new(field, format!("does not decode: {description}"))
    };
    Error::InvalidArgument(vec![violation]).into()
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tonic::Code;

    use super::*;
    use crate::pb;

    fn decode_error<M: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> Status {
        let err = M::decode(bytes).expect_err("does not decode");
        undecodable(&err.to_string())
    }

    fn violation(status: &Status) -> (String, String) {
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a BadRequest");
        let v = &bad.field_violations[0];
        (v.field.clone(), v.description.clone())
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        // Field 1 (user_id), length 2, bytes that are not UTF-8.
        let status = decode_error::<pb::CreateEventRequest>(&[0x0a, 0x02, 0xff, 0xfe]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let (field, description) = violation(&status);
        assert_eq!(field, "user_id");
        assert!(description.contains("UTF-8"), "{description}");
    }

    #[test]
    fn nested_fields_are_named_from_the_outside_in() {
        // CreateEventsRequest.requests[0].description with bad UTF-8.
        let inner = [0x12, 0x01, 0xff];
        let mut bytes = vec![0x0a, inner.len() as u8];
        bytes.extend(inner);
        let status = decode_error::<pb::CreateEventsRequest>(&bytes);
        assert_eq!(violation(&status).0, "requests.description");
    }

    #[test]
    fn garbage_is_invalid_argument_without_a_field() {
        let status = decode_error::<pb::GetStatsRequest>(&[0xff, 0xff, 0xff]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("message does not decode"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_payload_past_the_recursion_limit_names_payload() {
        let mut value = prost_types::Value { kind: None };
        for _ in 0..60 {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("a".to_owned(), value);
            value = prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                    fields,
                })),
            };
        }
        let Some(prost_types::value::Kind::StructValue(payload)) = value.kind else {
            unreachable!("built as a struct")
        };
        let request = pb::CreateEventRequest {
            payload: Some(payload),
            ..Default::default()
        };
        let status = decode_error::<pb::CreateEventRequest>(&request.encode_to_vec());
        assert_eq!(status.code(), Code::InvalidArgument);
        let (field, description) = violation(&status);
        assert_eq!(field, "payload");
        assert!(description.contains("nested at most 8"), "{description}");
    }
}
