//! gRPC-Web on the end users' listener: Connect's transport from npm
//! (`examples/grpc-web`) subscribing with a user token, and the text mode
//! with raw base64 frames.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::web::{ORIGIN, setup, token};

/// Runs the gRPC-Web example (Connect's transport, from npm) against
/// `web` as `user`'s token, subscribing to `subscribe_to`; its JSON lines.
fn grpc_web_example(
    web: SocketAddr,
    descriptors: &std::path::Path,
    token: &str,
    subscribe_to: &str,
) -> tokio::process::Child {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grpc-web");
    assert!(
        example
            .join("node_modules/@connectrpc/connect-web")
            .is_dir(),
        "the gRPC-Web example's packages are missing: run npm ci --prefix examples/grpc-web"
    );
    tokio::process::Command::new("node")
        .arg(example.join("subscribe.mjs"))
        .arg(format!("http://{web}"))
        .arg(descriptors)
        .arg(subscribe_to)
        .env("HERALD_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install nodejs)")
}

#[tokio::test]
async fn a_grpc_web_client_from_npm_subscribes_with_a_user_token() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (_keys, logger, web, admin) = setup(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let descriptors = dir.path().join("herald.binpb");
    std::fs::write(&descriptors, herald::pb::FILE_DESCRIPTOR_SET).expect("descriptors");

    let mut node = grpc_web_example(web, &descriptors, &token("ann"), "ann");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut line = async || {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .expect("read")
            .expect("a line");
        serde_json::from_str::<Value>(&line).expect("JSON line")
    };
    assert!(line().await["joined"].is_string(), "the stream opened");
    admin
        .create_event("bob", "not ann's")
        .await
        .expect("create");
    let anns = admin
        .create_event("ann", "over gRPC-Web")
        .await
        .expect("create");
    let got = line().await;
    assert_eq!(got["event_id"], anns.id.to_string(), "{got}");
    assert_eq!(got["description"], "over gRPC-Web");
    assert!(node.wait().await.expect("exit").success());

    // Someone else's notifications: refused, with the gRPC code.
    let mut node = grpc_web_example(web, &descriptors, &token("ann"), "bob");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let refused: Value =
        serde_json::from_str(&lines.next_line().await.expect("read").expect("a line"))
            .expect("JSON");
    assert_eq!(refused["error"], "PermissionDenied", "{refused}");
    assert!(!node.wait().await.expect("exit").success());
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn grpc_web_text_mode_streams_base64_frames() {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use prost::Message as _;
    let (_keys, logger, web, admin) = setup(&[]).await;
    let request = herald::pb::SubscribeRequest {
        user_id: "ann".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(request.len() as u32).to_be_bytes());
    frame.extend_from_slice(&request);
    let body = STANDARD.encode(&frame);

    let stream = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::post("/herald.v1.Notifier/Subscribe")
        .header("host", web.to_string())
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN)
        .header("authorization", format!("Bearer {}", token("ann")))
        .body(http_body_util::Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    let mut body = response.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame within 10 s")
            .expect("the stream goes on")
            .expect("a frame");
        let data = frame.into_data().expect("data");
        let bytes = STANDARD.decode(&data).expect("base64");
        assert_eq!(bytes[0], 0, "a message, not trailers");
        herald::pb::SubscribeResponse::decode(&bytes[5..]).expect("a message")
    };
    let joined = next().await;
    assert!(matches!(
        joined.kind,
        Some(herald::pb::subscribe_response::Kind::Heartbeat(_))
    ));
    let anns = admin
        .create_event("ann", "in text mode")
        .await
        .expect("create");
    let got = next().await;
    let Some(herald::pb::subscribe_response::Kind::Event(event)) = got.kind else {
        panic!("an event: {got:?}");
    };
    assert_eq!(event.event_id, anns.id.to_string());
    logger.stop_within(Duration::from_secs(10)).await;
}
