//! Behavioural tests of the backends: every check runs on memory, on a
//! private redis-server and on a private Redis Cluster, and all must behave
//! the same.
//!
//! # Layout
//!
//! A module per concern: `store` (creates, status changes, idempotency,
//! counts), `lists` (ListEvents' queries and pages), `inbox` (each user's
//! notifications and unread count), `recipients` (contact data and
//! preferences), `schedule` (scheduled events, their release and
//! cancellation), `ordering` (each user's first queued event, entries kept
//! while they wait), `digests` (membership, sealing, taking), `queue` (the work
//! queue, its consumers and dead letters), `feed` (the notification log),
//! `retention`, `attempts` (the delivery log), and `redis_storage` (what
//! Redis alone stores and how: layout, transactions, record size, cluster,
//! replicas). This file holds the helpers they share and
//! [`backend_tests!`], which runs each shared test on every backend.

use std::{sync::Arc, time::Duration};

use herald::{
    Error, EventStatus, NewEvent,
    cursor::{Cursor, PartitionEntry},
    domain::{DeliveryAttempt, EventInput, MAX_ATTEMPTS_KEPT, Rules, StatusChange, Statuses},
    partition::Partitions,
    pb,
    query::{ListQuery, page_of},
    trace::TraceParent,
};
use herald_storage::{
    self as storage, Backend, BackendTarget, ConsumerOptions,
    testing::{RedisCluster, RedisServer, skip_redis_tests},
};
use uuid::Uuid;

mod attempts;
mod digests;
mod feed;
mod inbox;
mod lists;
mod ordering;
mod queue;
mod recipients;
mod redis_storage;
mod retention;
mod schedule;
mod store;

fn consumer_config(name: &str, claim_idle_ms: u64) -> ConsumerOptions {
    ConsumerOptions {
        name: name.into(),
        claim_idle: Duration::from_millis(claim_idle_ms),
        block: Duration::from_millis(100),
    }
}

fn new_event(user: &str, description: &str) -> NewEvent {
    NewEvent::new(user, description).expect("valid event")
}

/// An event of `user` with the idempotency key `request_id`.
fn keyed_event(user: &str, request_id: &str) -> NewEvent {
    let input = EventInput {
        user_id: user.into(),
        description: format!("{request_id} for {user}"),
        request_id: request_id.into(),
        ..EventInput::default()
    };
    NewEvent::validate(input, &Rules::default()).expect("valid")
}

/// Every change after `cursor` (see [`storage::NotificationFeed::read_after`]).
async fn read_after(
    b: &Backend,
    cursor: &Cursor,
    max: usize,
    block: Duration,
) -> Vec<storage::Notification> {
    b.feed
        .read_after(cursor, max, block, Statuses::ALL)
        .await
        .expect("read")
        .notifications
}

/// `events` stored in one batch, every one of them.
async fn store_all(b: &Backend, events: Vec<NewEvent>) -> Vec<herald::Event> {
    b.store
        .create_many(events)
        .await
        .expect("create_many")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("every event stored")
}

fn full_event(request_id: &str) -> NewEvent {
    let input = EventInput {
        user_id: "alice".into(),
        description: "viewed the pricing page".into(),
        category: "page interaction".into(),
        event_type: "pageview".into(),
        session_id: "session-1".into(),
        payload: serde_json::json!({"host": "example.com", "path": "/pricing", "n": 1.5, "tags": ["a", 2]})
            .as_object()
            .cloned(),
        occurred_at: Some(std::time::SystemTime::now() - Duration::from_secs(30)),
        request_id: request_id.into(),
        ..EventInput::default()
    };
    NewEvent::validate(input, &Rules::default()).expect("valid")
}

fn query(edit: impl FnOnce(&mut pb::ListEventsRequest)) -> ListQuery {
    let mut request = pb::ListEventsRequest::default();
    edit(&mut request);
    ListQuery::parse(request, &herald::query::PageTokens::new([0; 32])).expect("valid query")
}

async fn all_pages(b: &Backend, mut q: ListQuery) -> Vec<herald::Event> {
    let mut out = Vec::new();
    loop {
        let page = b.store.list(&q).await.expect("list");
        assert!(page.events.len() <= q.page_size);
        out.extend(page.events);
        match page.next {
            Some(position) => q.after = Some(position),
            None => return out,
        }
    }
}

/// An attempt of `event` through `channel` that succeeded or failed.
fn attempt(event: Uuid, channel: &str, succeeded: bool) -> DeliveryAttempt {
    DeliveryAttempt {
        event_id: event,
        channel: channel.into(),
        kind: herald::domain::ChannelKind::Webhook,
        target: format!("http://127.0.0.1:9/{channel}"),
        attempted_at: herald::domain::now(),
        latency: Duration::from_micros(1_234),
        succeeded,
        http_status: Some(if succeeded { 204 } else { 503 }),
        error: if succeeded {
            String::new()
        } else {
            "HTTP 503".into()
        },
        skipped: false,
        digest_id: None,
    }
}

/// Each test on memory, a Redis and a Redis Cluster of three masters; the
/// tests after `opening:` take a configuration and open their backend with
/// options of their own (memory and one Redis).
macro_rules! backend_tests {
    ($($module:ident::$name:ident),* $(,)? ; opening: $($omodule:ident::$opening:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$module::$name(storage::open(&BackendTarget::Memory).expect("memory")).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $opening() {
                    super::$omodule::$opening(BackendTarget::Memory).await;
                }
            )*
        }

        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if skip_redis_tests() {
                        return;
                    }
                    let server = RedisServer::start();
                    super::$module::$name(storage::open(&redis_config(&server)).expect("redis")).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $opening() {
                    if skip_redis_tests() {
                        return;
                    }
                    let server = RedisServer::start();
                    super::$omodule::$opening(redis_config(&server)).await;
                }
            )*
        }

        mod cluster {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if skip_redis_tests() {
                        return;
                    }
                    let cluster = RedisCluster::start(3, 0);
                    let config = BackendTarget::RedisCluster { urls: cluster.urls(), prefix: "test".into() };
                    super::$module::$name(storage::open(&config).expect("cluster")).await;
                }
            )*
        }
    };
}

/// The backend of `server` under the prefix `test`.
fn redis_config(server: &RedisServer) -> BackendTarget {
    BackendTarget::Redis {
        url: server.url(),
        prefix: "test".into(),
    }
}

backend_tests!(
    store::create_then_get,
    store::status_transitions,
    queue::queue_delivers_once_and_acks,
    queue::idle_entries_are_reclaimed_and_counted,
    queue::restarted_consumer_drains_its_own_pending_first,
    queue::dead_letter_acknowledges,
    queue::redrive_requeues,
    feed::feed_logs_every_change_in_order,
    feed::blocked_feed_read_wakes_on_write,
    queue::concurrent_creates_are_all_queued,
    store::batches_keep_each_items_outcome,
    store::concurrent_status_changes_all_apply,
    store::racing_status_changes_apply_one_each,
    store::every_field_round_trips,
    store::repeated_request_ids_return_the_first_event,
    store::request_ids_are_scoped_per_client_and_user,
    lists::list_queries_follow_the_reference_order,
    lists::pages_stay_stable_while_events_arrive,
    lists::a_tie_group_pages_in_id_order_each_event_once,
    lists::many_settled_events_page_in_order_and_are_counted,
    retention::retention_walks_many_settled_events,
    store::status_counts_follow_every_write,
    retention::retention_removes_old_settled_events_only,
    queue::queue_trim_keeps_unacknowledged_work,
    queue::no_busy_partition_starves_the_others,
    attempts::delivery_attempts_are_kept_and_mark_channels,
    inbox::the_inbox_and_its_unread_count_follow_status_changes,
    recipients::recipients_keep_contact_data_and_preferences_apart,
    recipients::opt_outs_are_added_once_and_never_to_an_erased_record,
    schedule::scheduled_events_wait_then_queue_once_in_due_order,
    schedule::a_scheduled_event_is_cancelled_or_queued_never_both,
    schedule::a_partitions_lease_keeps_other_movers_out,
    ordering::first_queued_follows_each_users_pending_events,
    ordering::a_touched_entry_is_kept_from_other_consumers,
    digests::each_event_joins_one_digest_taken_once_due,
    digests::the_event_that_fills_a_digest_seals_it;
    opening:
    store::request_ids_expire_after_the_window,
    feed::feed_history_is_bounded_and_says_what_was_trimmed,
);
