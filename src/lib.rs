//! Herald's contract, shared by every crate: the generated protobuf code, the
//! domain types with their validation and status rules, errors, queries and
//! cursors. Storage lives in `herald-storage`.
//!
//! # Layout
//! - [`partition`]: how the keyspace is split into partitions, and how an
//!   event's user and id name its partition.
//! - [`pb`]: code generated from `proto/herald/v1` and the descriptor set served
//!   by reflection.
//! - [`codec`]: the protobuf codec of the generated code, which answers a
//!   message that does not decode with INVALID_ARGUMENT naming the field.
//! - [`auth`]: scopes of API keys, and how keys are hashed.
//! - [`cursor`]: positions in partitioned logs (stream entry ids, and the
//!   cursors of the notification log and the dead letters).
//! - [`dead_letters`]: the dead-letter requests read and checked (a page of
//!   ListDeadLetters, which events RedriveEvents brings back).
//! - [`domain`]: events, statuses and their lifecycle, input validation, and the
//!   conversions between domain types and protobuf messages.
//! - [`error`]: the one error type, and its mapping onto gRPC status codes.
//! - [`links`]: the signed unsubscribe and open links of an email.
//! - [`query`]: ListEvents queries, their order and page tokens.
//! - [`random`]: seedable pseudo-random numbers for simulations.
//! - [`redact`]: URLs as they may be shown, credentials hidden.
//! - [`sizing`]: answers that always fit the message size limit (batch
//!   results, list pages).
//! - [`subscription`]: Subscribe filters and where a subscription resumes.
//! - [`trace`]: W3C trace context (`traceparent`) carried with each event.

pub mod auth;
pub mod codec;
pub mod cursor;
pub mod dead_letters;
pub mod domain;
pub mod error;
pub mod links;
pub mod partition;
pub mod pb;
pub mod query;
pub mod random;
pub mod redact;
pub mod sizing;
pub mod subscription;
pub mod trace;

pub use domain::{Event, EventStatus, FieldViolation, NewEvent};
pub use error::{Error, Result};
