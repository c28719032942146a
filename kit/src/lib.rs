//! The comb service kit: everything a comb service needs besides its own domain.
//!
//! A service crate's `build` reads as config → storage → state → routes and background
//! tasks, and returns a [`service::Service`]; [`service::run`] does telemetry, serving,
//! the drain and stopping the tasks the same way for every service. Each step is one
//! module here:
//! - [`config`]: a service instance's settings, with environment overrides;
//! - [`telemetry`]: JSON log lines carrying service, instance and trace, OpenTelemetry
//!   spans exported over OTLP, Prometheus metrics with request counts and latency
//!   histograms per route;
//! - [`trace`]: W3C trace context through HTTP, gRPC calls and events, and the spans'
//!   ids; [`otlp`] exports finished spans;
//! - [`storage`]: a SQLite (default) or PostgreSQL pool with the service's own migrations;
//!   [`changes`] tells when its data moved on, for event feeds and read caches
//!   ([`cache`]);
//! - [`service`]: one way to run a service instance (see above);
//! - [`server`]: one port serving HTTP and gRPC with the `/healthz` and `/readyz` probes,
//!   a second, admin port for operators (`/metrics`, fault control), timeouts on every
//!   connection, and a graceful drain on SIGTERM/SIGINT; [`overload`] sheds what it cannot
//!   take and [`faults`] injects latency and errors for chaos experiments;
//! - [`grpc`] and [`client`]: calls to the instances of another service ([`discovery`]
//!   follows them as they come and go; [`connection`] carries the calls), balanced, with
//!   deadlines that travel ([`deadline`]), retries, ejection, a circuit breaker and load
//!   shedding;
//! - [`versions`]: a service's data version, watched by callers that keep its answers;
//! - [`problem`]: RFC 9457 `application/problem+json` errors;
//! - [`clock`]: the current time as services store and show it;
//! - [`events`]: the transactional outbox, the inbox, and the embedded event feed;
//! - [`nats`]: the same events relayed through NATS JetStream.

pub mod cache;
pub mod changes;
pub mod client;
pub mod clock;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod grpc;
pub mod nats;
pub mod otlp;
pub mod overload;
pub mod problem;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod trace;
pub mod versions;

pub use config::ServiceConfig;
pub use problem::Problem;
