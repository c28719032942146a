//! The system suite on the scale-out backends: `comb up --postgres --nats` gives every
//! service a database and a role of its own on PostgreSQL and carries events through NATS
//! JetStream. The commerce (saga), observability (a checkout's trace through the event
//! consumers, Prometheus scraping) and resilience tests run here exactly as they run on the
//! embedded backends, and the isolation tests prove a service's role cannot open another
//! service's database. Under CI=true PostgreSQL and NATS must be there; elsewhere the tests
//! skip, saying why.

#![allow(clippy::unwrap_used)]
// The suites share their helpers; some are used only by the embedded suite.
#![allow(dead_code)]

#[path = "../it/browser.rs"]
mod browser;
mod isolation;
#[path = "../it/media.rs"]
mod media;
#[path = "../it/observability.rs"]
mod observability;
#[path = "../it/resilience.rs"]
mod resilience;
#[path = "../it/saga.rs"]
mod saga;
#[path = "../it/support.rs"]
mod support;

pub use support::*;

/// Which backends `comb up` uses in this suite.
pub const BACKENDS: Backends = Backends::ScaleOut;
