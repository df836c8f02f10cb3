//! Dead letters over gRPC: events whose every delivery attempt is lost end
//! up FAILED and listed with their reason; redriving puts them back in the
//! queue (by id or all) and removes their dead letters.

use std::time::Duration;

use common::{Lines, Logger, eventually};
use futures_util::TryStreamExt;
use herald::{EventStatus, pb};
use herald_client::{Client, DeadLetter, Redrive};
use tonic::Code;
use uuid::Uuid;

use crate::common;

/// Every dead letter, following the pages (two a page, to have several).
async fn dead_letters(client: &Client) -> Vec<DeadLetter> {
    client
        .dead_letters(2)
        .try_collect()
        .await
        .expect("list dead letters")
}

fn event_ids(dead: &[DeadLetter]) -> Vec<Uuid> {
    dead.iter().map(|d| d.event.id).collect()
}

#[tokio::test]
async fn failed_events_are_listed_and_redriven() {
    // A sink that loses every attempt: each event fails after two.
    let logger = Logger::start(
        &[
            "--sink",
            "simulated",
            "--loss-ratio",
            "1",
            "--max-deliveries",
            "2",
            "--retry-backoff",
            "1ms",
        ],
        Lines::default().sink(),
    )
    .await;
    let client = logger.client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            client
                .create_event("val", &format!("undeliverable {i}"))
                .await
                .expect("create")
                .id,
        );
    }
    let dead = eventually(Duration::from_secs(10), "three dead letters", || async {
        let dead = dead_letters(&client).await;
        (dead.len() == 3).then_some(dead)
    })
    .await;
    let mut listed = event_ids(&dead);
    listed.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    for d in &dead {
        assert!(
            d.reason.contains("channel simulated: 2 attempts failed"),
            "{}",
            d.reason
        );
        assert_eq!(d.deliveries, 1);
    }
    for id in &ids {
        assert_eq!(
            client.get_event(*id).await.expect("get").status,
            EventStatus::Failed
        );
    }

    // Redrive one: it is PENDING again and its dead letter goes; the sink
    // loses it again, so it comes back as a new dead letter, last.
    let first = dead[0].event.id;
    let results = client
        .redrive(Redrive::Ids(vec![first]))
        .await
        .expect("redrive");
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].as_ref().expect("put back").status,
        EventStatus::Pending
    );
    let again = eventually(Duration::from_secs(10), "failed again", || async {
        let dead = dead_letters(&client).await;
        (dead.len() == 3 && event_ids(&dead)[2] == first).then_some(dead)
    })
    .await;
    assert!(
        !again.iter().any(|d| d.id == dead[0].id),
        "the old dead letter was removed"
    );

    // Redrive all: every event goes back, each with its result.
    let results = client.redrive(Redrive::All).await.expect("redrive all");
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.is_ok()));
    eventually(Duration::from_secs(10), "all failed again", || async {
        (dead_letters(&client).await.len() == 3).then_some(())
    })
    .await;

    // Bad requests are refused, naming the field, and change nothing.
    let mut raw = pb::event_logger_client::EventLoggerClient::new(logger.channel().await);
    for request in [
        pb::RedriveEventsRequest::default(),
        pb::RedriveEventsRequest {
            event_ids: vec![first.to_string()],
            all: true,
        },
    ] {
        let err = raw.redrive_events(request).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("event_ids"), "{}", err.message());
    }
    let item = client
        .redrive(Redrive::Ids(vec![Uuid::nil()]))
        .await
        .expect("per-item results");
    assert_eq!(
        item[0].as_ref().expect_err("unknown").code(),
        Code::NotFound
    );
    let err = raw
        .list_dead_letters(pb::ListDeadLettersRequest {
            page_size: 10,
            page_token: "yesterday".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    assert_eq!(dead_letters(&client).await.len(), 3);
    logger.stop_within(Duration::from_secs(10)).await;
}
