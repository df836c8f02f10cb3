//! The logger's end-to-end tests: real loggers (the `run` functions and the
//! binary), real Redis servers and clusters, real sockets. One test binary,
//! linked once, with a module per subject; `cargo test -p herald-logger
//! --test it console::` runs one subject.
//!
//! # Layout
//! - `common`: starting loggers on free ports, waiting, reading streams,
//!   plain HTTP calls; `webdriver`: a small WebDriver client for the
//!   console's browser tests.
//! - One module per subject: the API (`api`, `events`, `dead_letters`),
//!   keys and tokens (`auth`), TLS, subscriptions, delivery channels and IRC,
//!   the console (`console` in a browser, `console_api` as a script), the
//!   end users' listener (`web`: Server-Sent Events, tickets, CORS;
//!   `grpc_web`; `inbox`: the Inbox's calls; `inbox_page`: the
//!   `<herald-inbox>` element in a browser), recipients and their
//!   preferences (`recipients`), scheduled delivery (`schedule`), digests (`digests`), hostile
//!   clients and slow subscribers, the binary itself, operating (metrics, shutdown), Redis
//!   pipelines and clusters, the Publisher, the simulator, OTLP export.

mod common;
mod webdriver;

mod api;
mod auth;
mod binary;
mod channels;
mod console;
mod console_api;
mod dead_letters;
mod digests;
mod email;
mod events;
mod grpc_web;
mod hardening;
mod hostile;
mod inbox;
mod inbox_page;
mod irc;
mod operating;
#[cfg(feature = "otlp")]
mod otlp;
mod publisher;
mod recipients;
mod redis_cluster;
mod redis_pipeline;
mod schedule;
mod simulate;
mod slow_subscribers;
mod subscribe;
mod tls;
mod web;
