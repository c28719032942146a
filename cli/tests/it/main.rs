//! System tests: the real `comb` binary starts the whole system on random ports in a
//! temporary data directory, and the tests talk to it as a user would. This suite runs on
//! the embedded backends (SQLite files, each producer's own event feed); the `scale_out`
//! suite runs the commerce and resilience tests again on PostgreSQL and NATS JetStream.

#![allow(clippy::unwrap_used)]

mod bench;
mod browser;
mod export;
mod hardening;
mod launcher;
mod media;
mod observability;
mod resilience;
mod saga;
mod storefront;
mod support;

pub use support::*;

/// Which backends `comb up` uses in this suite.
pub const BACKENDS: Backends = Backends::Embedded;
