//! `herald-client`: the Rust client of Herald's gRPC API, used by other services,
//! by the processors (for `UpdateStatus`) and by the `herald` command-line tool
//! (crate `herald-cli`). It is a library only: no flags, no progress bars, no
//! storage crates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::Error> {
//! let client = herald_client::Client::connect("http://127.0.0.1:50051").await?;
//! let event = client.create_event("alice", "Your order shipped").await?;
//! println!("{} is {}", event.id, event.status);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`admin`]: [`DeadLetter`], [`Redrive`], [`Stats`] and [`Health`], what
//!   operators read and do, and the [`Client`] calls that read and do it.
//! - [`client`]: [`Client`], typed async methods over the generated stubs, with
//!   retries of idempotent calls while the server is unavailable.
//! - [`error`]: [`Error`], which keeps the gRPC code, the field violations
//!   and the server's retry delay.
//! - [`inbox`]: [`ListInbox`], [`InboxPage`], [`MarkRead`] and
//!   [`MarkedRead`]: each user's inbox, and the [`Client`] calls that read
//!   it, count its unread notifications and mark them read.
//! - [`query`]: [`ListEvents`], a ListEvents query built step by step,
//!   [`Page`], one page of its answer, and how every listing follows its
//!   pages.
//! - [`recipients`]: [`NewRecipient`], and the [`Client`] calls that put,
//!   read and erase recipients and read and set their preferences.
//! - [`publisher`]: [`Publisher`], which publishes events in the background
//!   in batches, retrying while the logger is down, and never fails its caller.
//! - [`subscribe`]: [`SubscribeOptions`] and the [`Message`]s of a
//!   subscription that resumes by itself after a dropped connection.
//! - [`tokens`]: end users' tokens (HS256 JWTs), signed for the apps of
//!   an application's users.
//! - [`tls`]: [`Tls`], `https://` with a CA to trust and a client certificate
//!   for mutual TLS.
//! - [`webhooks`]: Standard Webhooks signatures: what a processor's webhook
//!   channel signs, and [`webhooks::verify`] for receivers.

pub mod admin;
pub mod client;
pub mod error;
pub mod inbox;
pub mod publisher;
pub mod query;
pub mod recipients;
pub mod subscribe;
pub mod tls;
pub mod tokens;
pub mod webhooks;

pub use admin::{DeadLetter, Health, Redrive, Stats};
pub use client::{ApiKey, Client, Created, RetryPolicy};
pub use error::Error;
pub use herald::domain::{Contact, OptOut, Preferences, Recipient};
pub use herald::domain::{DeliveryAttempt, EventInput, now, rfc3339};
pub use herald::{Event, EventStatus, FieldViolation, domain::StatusChange, trace::TraceParent};
pub use inbox::{InboxPage, ListInbox, MarkRead, MarkedRead};
pub use publisher::{
    Observer, Outcome, Publish, Publisher, PublisherOptions, PublisherStats, Unflushed, WhenFull,
};
pub use query::{ListEvents, Page};
pub use recipients::NewRecipient;
pub use subscribe::{Message, Notification, SubscribeOptions, Subscription};
pub use tls::Tls;

/// The README's Rust examples, compiled (and run unless marked `no_run`) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

/// The same for the reference pages the README links.
#[cfg(doctest)]
#[doc = include_str!("../../docs/reference.md")]
#[doc = include_str!("../../docs/configuration.md")]
#[doc = include_str!("../../docs/grpc.md")]
struct DocsExamples;
