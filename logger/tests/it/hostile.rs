//! A hostile but fair client against a real logger over real sockets:
//! random and mutated messages at every method (on both backends), broken
//! frames, bodies that never finish, and the bounds every answer keeps; the
//! raw HTTP/2 client (`Raw`) that `slow_subscribers` uses too.
//!
//! The random messages come from proptest with a fixed seed, so CI runs the
//! same cases every time; `HERALD_FUZZ_CASES` sets how many (default 1,500
//! per backend) for longer local runs, `HERALD_FUZZ_SEED` another seed.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Lines, Logger, Scrape, eventually};
use herald::{
    domain::json_to_struct,
    pb::{self, Rpc},
};
use herald_storage::testing::{RedisServer, skip_redis_tests};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use prost::Message;
use tokio::net::TcpStream;

use crate::common;

/// Most bytes of metadata (header and trailer names and values) any error
/// answer may carry.
const MAX_ERROR_METADATA: usize = 4096;

/// A raw HTTP/2 connection that sends whatever bytes a test likes as a
/// call's body.
pub(crate) struct Raw {
    addr: SocketAddr,
    send: h2::client::SendRequest<Bytes>,
    /// Sent as `authorization: Bearer` with every call, if any.
    key: Option<String>,
}

/// What the server answered to one raw call.
#[derive(Debug)]
struct Answer {
    /// grpc-status; 0 also for a stream that started (Subscribe).
    code: i32,
    message: String,
    /// Bytes of header and trailer names and values.
    metadata: usize,
    /// The response body (gRPC frames), for unary calls.
    body: Bytes,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            addr,
            send,
            key: None,
        }
    }

    /// [`Raw::connect`], every call carrying `key`.
    pub(crate) async fn connect_with_key(addr: SocketAddr, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..Self::connect(addr).await
        }
    }

    /// Starts a call to `path`: its headers are sent, the body is the caller's.
    async fn start(&mut self, path: &str) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let mut request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request.body(()).expect("request");
        let mut send = self.send.clone().ready().await.expect("connection ready");
        send.send_request(request, false).expect("send headers")
    }

    /// Starts a CreateEvent whose frame declares `declared` bytes but whose
    /// body holds only `sent` of them, and never ends.
    async fn start_unfinished(
        &mut self,
        declared: u32,
        sent: usize,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let (response, mut stream) = self.start(Rpc::CreateEvent.path()).await;
        let mut head = BytesMut::new();
        head.put_u8(0);
        head.put_u32(declared);
        head.extend_from_slice(&vec![b'x'; sent]);
        stream.send_data(head.freeze(), false).expect("send part");
        (response, stream)
    }

    /// Opens a Subscribe stream of every user's new (PENDING) events, which
    /// nobody reads until the caller does.
    pub(crate) async fn subscribe_to_new_events(
        &mut self,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let (response, mut stream) = self.start(Rpc::Subscribe.path()).await;
        let request = pb::SubscribeRequest {
            statuses: vec![pb::EventStatus::Pending as i32],
            ..Default::default()
        };
        stream
            .send_data(frame(&request.encode_to_vec()), true)
            .expect("subscribe");
        (response, stream)
    }

    /// Opens a Subscribe stream of every change after `cursor`, which
    /// nobody reads until the caller does.
    pub(crate) async fn subscribe_after(
        &mut self,
        cursor: &str,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let (response, mut stream) = self.start(Rpc::Subscribe.path()).await;
        let request = pb::SubscribeRequest {
            statuses: [
                pb::EventStatus::Pending,
                pb::EventStatus::Processed,
                pb::EventStatus::Opened,
                pb::EventStatus::Failed,
            ]
            .map(|s| s as i32)
            .to_vec(),
            after_cursor: cursor.to_owned(),
            ..Default::default()
        };
        stream
            .send_data(frame(&request.encode_to_vec()), true)
            .expect("subscribe");
        (response, stream)
    }

    /// Calls `path` with exactly `body` and reads the answer (of a stream,
    /// its first message).
    async fn call(&mut self, path: &str, body: Bytes) -> Answer {
        let (response, mut stream) = self.start(path).await;
        stream.send_data(body, true).expect("send body");
        answer(response, path.ends_with("/Subscribe")).await
    }
}

fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// Reads an answer: a trailers-only error, a unary response with its
/// trailers, or (`streaming`) the first message of a stream, which is then
/// dropped.
async fn answer(response: h2::client::ResponseFuture, streaming: bool) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("an answer in time")
        .expect("a response");
    let (parts, mut body) = response.into_parts();
    let mut metadata = header_bytes(&parts.headers);
    let status = |headers: &http::HeaderMap| {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decoded)
            .unwrap_or_default();
        code.map(|code| (code, message))
    };
    if let Some((code, message)) = status(&parts.headers) {
        return Answer {
            code,
            message,
            metadata,
            body: Bytes::new(),
        };
    }
    let mut data = BytesMut::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), body.data()).await {
            Ok(Some(chunk)) => {
                let chunk = chunk.expect("body data");
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
                if streaming {
                    return Answer {
                        code: 0,
                        message: String::new(),
                        metadata,
                        body: data.freeze(),
                    };
                }
            }
            Ok(None) => break,
            // A stream that stays open (Subscribe) started well.
            Err(_) => {
                return Answer {
                    code: 0,
                    message: String::new(),
                    metadata,
                    body: data.freeze(),
                };
            }
        }
    }
    let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
        .await
        .expect("trailers in time")
        .expect("trailers")
        .unwrap_or_default();
    metadata += header_bytes(&trailers);
    let (code, message) = status(&trailers).expect("a grpc-status");
    Answer {
        code,
        message,
        metadata,
        body: data.freeze(),
    }
}

/// A grpc-message header's text (percent-encoded on the wire).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` as one gRPC frame.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The message of the first frame of a unary answer.
pub(crate) fn first_message(body: &Bytes) -> &[u8] {
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    &body[5..5 + len]
}

/// A valid request of each method (the match is exhaustive: a new RPC gets
/// fuzzed once it has a case here); every one holds the string `fuzz`,
/// which the invalid-UTF-8 fault overwrites.
fn valid_message(method: Rpc, ids: &[String]) -> Vec<u8> {
    let create = || pb::CreateEventRequest {
        user_id: "fuzz".into(),
        description: "a fuzzed event".into(),
        category: "cat".into(),
        payload: Some(json_to_struct(
            serde_json::json!({"n": 1.5, "list": [1, "two", {"three": true}]})
                .as_object()
                .expect("object"),
        )),
        ..Default::default()
    };
    let change = |id: &String| pb::UpdateStatusRequest {
        event_id: id.clone(),
        status: pb::EventStatus::Processed as i32,
        traceparent: String::new(),
    };
    match method {
        Rpc::CreateEvent => create().encode_to_vec(),
        Rpc::CreateEvents => pb::CreateEventsRequest {
            requests: vec![create(), create()],
        }
        .encode_to_vec(),
        Rpc::GetEvent => pb::GetEventRequest {
            event_id: ids[0].clone(),
        }
        .encode_to_vec(),
        Rpc::ListEvents => pb::ListEventsRequest {
            user_id: "fuzz".into(),
            page_size: 5,
            ..Default::default()
        }
        .encode_to_vec(),
        Rpc::UpdateStatus => change(&ids[1]).encode_to_vec(),
        Rpc::BatchUpdateStatus => pb::BatchUpdateStatusRequest {
            requests: ids.iter().map(change).collect(),
            ..Default::default()
        }
        .encode_to_vec(),
        // GetStats has no fields: the fault has something to work on anyway.
        Rpc::GetStats => b"fuzz".to_vec(),
        Rpc::ListDeadLetters => pb::ListDeadLettersRequest {
            page_size: 5,
            page_token: "fuzz".into(),
        }
        .encode_to_vec(),
        Rpc::RedriveEvents => pb::RedriveEventsRequest {
            event_ids: vec![ids[2].clone(), "fuzz".into()],
            all: false,
        }
        .encode_to_vec(),
        Rpc::Subscribe => pb::SubscribeRequest {
            user_id: "fuzz".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Rpc::ListDeliveryAttempts => pb::ListDeliveryAttemptsRequest {
            event_id: ids[0].clone(),
        }
        .encode_to_vec(),
        Rpc::CancelEvent => pb::CancelEventRequest {
            event_id: ids[2].clone(),
        }
        .encode_to_vec(),
        Rpc::ListInbox => pb::ListInboxRequest {
            user_id: "fuzz".into(),
            unread_only: true,
            page_size: 5,
            page_token: String::new(),
        }
        .encode_to_vec(),
        Rpc::GetUnreadCount => pb::GetUnreadCountRequest {
            user_id: "fuzz".into(),
        }
        .encode_to_vec(),
        Rpc::MarkRead => pb::MarkReadRequest {
            user_id: "fuzz".into(),
            event_ids: vec![ids[0].clone()],
            all: false,
        }
        .encode_to_vec(),
        Rpc::PutRecipient => pb::PutRecipientRequest {
            recipient: Some(fuzz_recipient()),
        }
        .encode_to_vec(),
        Rpc::PutRecipients => pb::PutRecipientsRequest {
            recipients: vec![fuzz_recipient(), fuzz_recipient()],
        }
        .encode_to_vec(),
        Rpc::GetRecipient => pb::GetRecipientRequest {
            user_id: "fuzz".into(),
        }
        .encode_to_vec(),
        Rpc::DeleteRecipient => pb::DeleteRecipientRequest {
            user_id: "fuzz".into(),
        }
        .encode_to_vec(),
        Rpc::GetPreferences => pb::GetPreferencesRequest {
            user_id: "fuzz".into(),
        }
        .encode_to_vec(),
        Rpc::SetPreferences => pb::SetPreferencesRequest {
            user_id: "fuzz".into(),
            preferences: fuzz_recipient().preferences,
        }
        .encode_to_vec(),
    }
}

/// A recipient with every field set, for the fuzz to corrupt.
fn fuzz_recipient() -> pb::Recipient {
    pb::Recipient {
        user_id: "fuzz".into(),
        email: "fuzz@example.com".into(),
        name: "Fuzz".into(),
        locale: "en-GB".into(),
        time_zone: "Europe/London".into(),
        attributes: Some(prost_types::Struct::default()),
        preferences: Some(pb::Preferences {
            opt_outs: vec![pb::OptOut {
                channel: "email".into(),
                category: "marketing".into(),
                r#type: String::new(),
            }],
        }),
        updated_at: None,
    }
}

/// A CreateEventRequest whose payload nests `depth` objects.
fn deep_payload(depth: usize) -> Vec<u8> {
    let mut value = prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(1.0)),
    };
    for _ in 0..depth {
        value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                fields: [("a".to_owned(), value)].into(),
            })),
        };
    }
    let Some(prost_types::value::Kind::StructValue(payload)) = value.kind else {
        unreachable!("built as a struct")
    };
    pb::CreateEventRequest {
        user_id: "fuzz".into(),
        description: "deep".into(),
        payload: Some(payload),
        ..Default::default()
    }
    .encode_to_vec()
}

/// How a case spoils a valid message (or its frame).
#[derive(Clone, Debug)]
enum Fault {
    None,
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Random(Vec<u8>),
    WireType(usize, u8),
    BadUtf8,
    DeepPayload(usize),
    /// The frame declares this many bytes more than the body holds.
    FrameLonger(u32),
    CompressedFlag(u8),
    TwoFrames,
    EmptyBody,
    /// Only the first 1 to 4 bytes of a frame header.
    HeaderOnly(usize),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        1 => Just(Fault::None),
        3 => any::<usize>().prop_map(Fault::Truncate),
        4 => prop::collection::vec((any::<usize>(), 1u8..), 1..6).prop_map(Fault::Flip),
        2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Fault::Random),
        2 => (any::<usize>(), 0u8..8).prop_map(|(at, wire)| Fault::WireType(at, wire)),
        1 => Just(Fault::BadUtf8),
        1 => (9usize..120).prop_map(Fault::DeepPayload),
        1 => (1u32..3_000_000).prop_map(Fault::FrameLonger),
        1 => (1u8..).prop_map(Fault::CompressedFlag),
        1 => Just(Fault::TwoFrames),
        1 => Just(Fault::EmptyBody),
        1 => (1usize..5).prop_map(Fault::HeaderOnly),
    ]
}

/// The body a case sends.
fn body_of(method: Rpc, fault: &Fault, ids: &[String]) -> Bytes {
    let mut message = valid_message(method, ids);
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match fault {
        Fault::None => {}
        Fault::Truncate(i) => message.truncate(at(*i, message.len())),
        Fault::Flip(flips) => {
            for (i, mask) in flips {
                let i = at(*i, message.len());
                if let Some(byte) = message.get_mut(i) {
                    *byte ^= mask;
                }
            }
        }
        Fault::Random(bytes) => message = bytes.clone(),
        Fault::WireType(i, wire) => {
            let i = at(*i, message.len());
            if let Some(byte) = message.get_mut(i) {
                *byte = (*byte & !0b111) | wire;
            }
        }
        Fault::BadUtf8 => {
            if let Some(i) = message.windows(4).position(|w| w == b"fuzz") {
                message[i..i + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
            }
        }
        Fault::DeepPayload(depth) => message = deep_payload(*depth),
        Fault::FrameLonger(more) => {
            let mut out = BytesMut::new();
            out.put_u8(0);
            out.put_u32(message.len() as u32 + more);
            out.put_slice(&message);
            return out.freeze();
        }
        Fault::CompressedFlag(flag) => {
            let mut out = BytesMut::from(&frame(&message)[..]);
            out[0] = *flag;
            return out.freeze();
        }
        Fault::TwoFrames => {
            let mut out = BytesMut::from(&frame(&message)[..]);
            out.extend_from_slice(&frame(&message));
            return out.freeze();
        }
        Fault::EmptyBody => return Bytes::new(),
        Fault::HeaderOnly(n) => return frame(&message).slice(..*n),
    }
    frame(&message)
}

/// The cases: a method and a fault each, from a fixed seed.
fn cases() -> Vec<(Rpc, Fault)> {
    let n: usize = std::env::var("HERALD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let seed: u64 = std::env::var("HERALD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x4845_5241_4c44);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = (0..Rpc::ALL.len(), fault());
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .map(|(method, fault)| (Rpc::ALL[method], fault))
        .collect()
}

/// Throws every case at the logger at `addr` and checks each answer and,
/// afterwards, the logger.
async fn fuzz(logger: &Logger) {
    let client = logger.client().await;
    let mut created = HashSet::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let event = client
            .create_event("fuzz", &format!("seed {i}"))
            .await
            .expect("seed event");
        created.insert(event.id.to_string());
        ids.push(event.id.to_string());
    }
    let mut raw = Raw::connect(logger.addr).await;
    let mut codes = std::collections::BTreeMap::new();
    for (i, (method, fault)) in cases().into_iter().enumerate() {
        let body = body_of(method, &fault, &ids);
        let answer = raw.call(method.path(), body).await;
        let case = format!("case {i}: {} with {fault:?}: {answer:?}", method.path());
        assert!(
            ![2, 13].contains(&answer.code),
            "no UNKNOWN or INTERNAL: {case}"
        );
        assert!(
            answer.code == 0 || answer.metadata <= MAX_ERROR_METADATA,
            "small errors: {case}"
        );
        *codes.entry(answer.code).or_insert(0) += 1;
        // What a successful create stored, to count against the store.
        let creates = matches!(method, Rpc::CreateEvent | Rpc::CreateEvents);
        if answer.code == 0 && creates && !answer.body.is_empty() {
            let message = first_message(&answer.body);
            if method == Rpc::CreateEvent {
                let response = pb::CreateEventResponse::decode(message).expect("response");
                created.extend(response.event.map(|e| e.event_id));
            } else {
                let response = pb::CreateEventsResponse::decode(message).expect("response");
                for result in response.results {
                    if let Some(pb::create_event_result::Result::Event(e)) = result.result {
                        created.insert(e.event_id);
                    }
                }
            }
        }
    }
    eprintln!("answers by grpc-status: {codes:?}");
    assert!(codes.get(&3).copied().unwrap_or(0) > 100, "{codes:?}");
    // Still healthy, still serving, and no refused call stored anything.
    assert_eq!(
        client.health("").await.expect("health"),
        herald_client::Health::Serving
    );
    let stats = client.stats().await.expect("stats");
    assert_eq!(
        stats.total_events as usize,
        created.len(),
        "only answered creates are stored"
    );
    client
        .create_event("fuzz", "still fine")
        .await
        .expect("a valid call after the storm");
    let metrics = Scrape::of(logger.metrics_addr).await;
    assert!(
        !metrics.0.contains("code=\"Internal\"") && !metrics.0.contains("code=\"Unknown\""),
        "no call counted as INTERNAL or UNKNOWN"
    );
}

#[tokio::test]
async fn random_and_mutated_messages_get_clear_small_errors_in_memory() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    fuzz(&logger).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn random_and_mutated_messages_get_clear_small_errors_on_redis() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let logger = Logger::start(&["--redis-url", &redis.url()], Lines::default().sink()).await;
    fuzz(&logger).await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn bodies_that_never_finish_are_dropped_after_the_deadline() {
    let logger = Logger::start(&["--body-timeout", "1s"], Lines::default().sink()).await;
    let mut raw = Raw::connect(logger.addr).await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for _ in 0..50 {
        // Declares 900 KB, sends 100 KB, never ends.
        calls.push(raw.start_unfinished(900_000, 100_000).await);
    }
    for (response, _stream) in calls {
        let answer = answer(response, false).await;
        assert_eq!(answer.code, 4, "DEADLINE_EXCEEDED: {answer:?}");
        assert!(answer.message.contains("--body-timeout"), "{answer:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // The connection and the server are fine afterwards.
    let answer = raw
        .call(
            Rpc::GetStats.path(),
            frame(&pb::GetStatsRequest {}.encode_to_vec()),
        )
        .await;
    assert_eq!(answer.code, 0, "{answer:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn unfinished_bodies_share_one_budget_and_gone_clients_are_cancelled() {
    let logger = Logger::start(
        &[
            "--body-timeout",
            "2s",
            "--max-pending-request-bytes",
            "2000000",
        ],
        Lines::default().sink(),
    )
    .await;
    let mut raw = Raw::connect(logger.addr).await;
    // Each declares 900 KB and sends 100 KB: two fit in the budget, the
    // rest are refused at once instead of held.
    let mut calls = Vec::new();
    for _ in 0..6 {
        calls.push(raw.start_unfinished(900_000, 100_000).await);
    }
    let mut codes = Vec::new();
    for (response, _stream) in calls {
        codes.push(answer(response, false).await.code);
    }
    codes.sort();
    assert_eq!(
        codes,
        [4, 4, 8, 8, 8, 8],
        "2 DEADLINE_EXCEEDED, 4 RESOURCE_EXHAUSTED"
    );
    // The budget is whole again: a client that sends half a body and then
    // resets the call frees its share, and counts as Cancelled, not as a bug.
    let (_response, mut stream) = raw.start_unfinished(900_000, 1000).await;
    stream.send_reset(h2::Reason::CANCEL);
    let answer = raw
        .call(
            Rpc::GetStats.path(),
            frame(&pb::GetStatsRequest {}.encode_to_vec()),
        )
        .await;
    assert_eq!(answer.code, 0, "{answer:?}");
    eventually(Duration::from_secs(5), "the reset call counted", || async {
        let page = Scrape::of(logger.metrics_addr).await;
        assert!(
            !page.0.contains("code=\"Internal\"") && !page.0.contains("code=\"Unknown\""),
            "{}",
            page.0
        );
        page.0.contains("code=\"Canceled\"").then_some(())
    })
    .await;
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_naming_the_limit() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let mut raw = Raw::connect(logger.addr).await;
    // Refused from the frame header alone: nothing of it is read.
    let mut header = BytesMut::new();
    header.put_u8(0);
    header.put_u32(2 * 1024 * 1024);
    let answer = raw.call(Rpc::CreateEvent.path(), header.freeze()).await;
    assert_eq!(answer.code, 8, "{answer:?}");
    assert!(answer.message.contains("--max-message-bytes"), "{answer:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn long_bad_values_are_quoted_short() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let mut raw = Raw::connect(logger.addr).await;
    let long = "z".repeat(500_000);
    for (method, message) in [
        (
            Rpc::GetEvent,
            pb::GetEventRequest {
                event_id: long.clone(),
            }
            .encode_to_vec(),
        ),
        (
            Rpc::Subscribe,
            pb::SubscribeRequest {
                after_cursor: long.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Rpc::ListEvents,
            pb::ListEventsRequest {
                order_by: long.clone(),
                page_token: long.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ] {
        let answer = raw.call(method.path(), frame(&message)).await;
        assert_eq!(answer.code, 3, "{answer:?}");
        assert!(answer.metadata <= MAX_ERROR_METADATA, "{answer:?}");
        assert!(answer.message.contains("500000 bytes"), "{answer:?}");
    }
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_batch_of_bad_ids_still_answers_and_applies_the_good_change() {
    let logger = Logger::start(&[], Lines::default().sink()).await;
    let client = logger.client().await;
    let event = client.create_event("ada", "paid").await.expect("created");
    let mut requests = vec![pb::UpdateStatusRequest {
        event_id: event.id.to_string(),
        status: pb::EventStatus::Processed as i32,
        traceparent: String::new(),
    }];
    requests.extend((0..999).map(|i| pb::UpdateStatusRequest {
        event_id: format!("{i}{}", "x".repeat(1000)),
        status: pb::EventStatus::Processed as i32,
        traceparent: String::new(),
    }));
    let mut logger_client = pb::event_logger_client::EventLoggerClient::new(logger.channel().await);
    let response = logger_client
        .batch_update_status(pb::BatchUpdateStatusRequest {
            requests,
            ..Default::default()
        })
        .await
        .expect("the batch is answered")
        .into_inner();
    assert_eq!(response.results.len(), 1000);
    assert!(response.encoded_len() <= 1024 * 1024);
    for result in &response.results[1..] {
        let Some(pb::update_status_result::Result::Error(status)) = &result.result else {
            panic!("an error per bad id: {result:?}")
        };
        assert_eq!(status.code, 3);
        assert!(status.encoded_len() <= herald::error::MAX_ERROR_BYTES);
    }
    let now = client.get_event(event.id).await.expect("event");
    assert_eq!(now.status, herald::EventStatus::Processed);
    logger.stop_within(Duration::from_secs(10)).await;
}
