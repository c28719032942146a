//! One way to run a service instance. A service crate's `build` turns its settings into a
//! [`Service`]: its routes and the background work it does besides answering (event
//! consumers, sweeps, the relay of its outbox). [`run`] does the rest, the same for every
//! service: telemetry, binding and serving, the drain on a stop signal, stopping the
//! background work within a deadline, and sending the last spans.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::events::Transport;
use crate::storage::Database;
use crate::{ServiceConfig, server, telemetry};

/// How long background work may take to stop once the instance has drained.
pub const TASKS_STOP_DEADLINE: Duration = Duration::from_secs(2);

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a service is made of: the routes it answers and the work it does in the
/// background while it serves.
#[must_use = "a service does nothing until it is run"]
pub struct Service {
    routes: Router,
    tasks: Vec<(&'static str, Task)>,
    max_body_bytes: Option<usize>,
}

impl Service {
    pub fn new(routes: Router) -> Self {
        Self {
            routes,
            tasks: Vec::new(),
            max_body_bytes: None,
        }
    }

    /// Adds background work, named for the logs. It starts when the instance starts
    /// serving and is stopped (dropped at its next await) once the instance has drained;
    /// work that must not be cut short keeps its state in a transaction.
    pub fn task(
        mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// The service publishes events as `producer`: with NATS, its outbox is relayed to
    /// JetStream while it runs (the embedded transport serves the feed from its routes).
    pub fn producing(self, transport: &Transport, db: &Database, producer: &str) -> Self {
        match transport.relay(db, producer) {
            Some(relay) => self.task("outbox relay", relay),
            None => self,
        }
    }

    /// The largest request body the service's routes take; the instance reads none larger,
    /// whatever `max_body_bytes` says.
    pub fn max_body_bytes(self, bytes: usize) -> Self {
        Self {
            max_body_bytes: Some(bytes),
            ..self
        }
    }

    /// The routes, and the background work started: for tests that serve the routes
    /// themselves.
    pub fn start(self) -> (Router, Tasks) {
        let mut tasks = Tasks::new();
        for (name, task) in self.tasks {
            tasks.spawn(name, task);
        }
        (self.routes, tasks)
    }
}

/// Background work running; stopped by [`Tasks::stop`], or aborted when dropped.
#[derive(Debug)]
pub struct Tasks {
    running: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            running: JoinSet::new(),
            stop: watch::channel(false).0,
        }
    }

    fn spawn(&mut self, name: &'static str, task: Task) {
        let mut stop = self.stop.subscribe();
        self.running.spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => {}
                () = task => tracing::debug!(task = name, "background task ended"),
            }
        });
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every task and waits for them, at most `deadline`; those still running then
    /// are aborted.
    pub async fn stop(mut self, deadline: Duration) {
        self.stop.send_replace(true);
        let joined = async { while self.running.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, joined).await.is_err() {
            tracing::warn!(
                left = self.running.len(),
                "background tasks did not stop in time; aborting them"
            );
            self.running.abort_all();
        }
    }
}

/// Runs a service instance until it is told to stop: telemetry from `config`, the
/// service from `build`, its routes served (with the kit's probes, metrics, limits and
/// drain) and its background work running, then, after the drain, the work stopped and
/// the last spans sent.
pub async fn run<B, F, E>(mut config: ServiceConfig, build: B) -> Result<(), E>
where
    B: FnOnce(ServiceConfig) -> F,
    F: Future<Output = Result<Service, E>>,
    E: From<telemetry::TelemetryError> + From<server::ServerError>,
{
    telemetry::init(&config)?;
    let service = build(config.clone()).await?;
    if let Some(bytes) = service.max_body_bytes {
        config.max_body_bytes = config.max_body_bytes.min(bytes);
    }
    let (routes, tasks) = service.start();
    let served = server::serve(&config, routes).await;
    tasks.stop(TASKS_STOP_DEADLINE).await;
    telemetry::flush_traces().await;
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stopping_ends_every_task_even_one_that_would_run_forever() {
        let ended = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&ended);
        let service = Service::new(Router::new())
            .task("waits forever", std::future::pending())
            .task("ends at once", async move {
                finished.store(true, Ordering::SeqCst);
            });
        let (_, tasks) = service.start();
        tokio::task::yield_now().await;
        assert_eq!(tasks.len(), 2);
        let stopping =
            tokio::time::timeout(Duration::from_secs(5), tasks.stop(Duration::from_secs(1)));
        assert!(stopping.await.is_ok(), "stopped within its deadline");
        assert!(ended.load(Ordering::SeqCst));
    }
}
