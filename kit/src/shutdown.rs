//! When to stop: SIGTERM, SIGINT, or the launcher that started this process going away.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Terminate,
    Interrupt,
    ParentGone,
}

/// Listens for stop requests from the moment it is made, so a signal that arrives while
/// the process is busy elsewhere is still seen by the next [`StopSignals::next`].
#[derive(Debug)]
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
    parent_pid: Option<u32>,
}

impl StopSignals {
    /// With `parent_pid`, a stop is also requested when this process's parent is no longer
    /// that process: a launcher killed with SIGKILL leaves no orphans.
    pub fn listen(parent_pid: Option<u32>) -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            parent_pid,
        })
    }

    /// The next stop request.
    pub async fn next(&mut self) -> StopReason {
        let parent_pid = self.parent_pid;
        let parent_gone = async move {
            match parent_pid {
                Some(pid) => loop {
                    if std::os::unix::process::parent_id() != pid {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => StopReason::Terminate,
            _ = self.interrupt.recv() => StopReason::Interrupt,
            () = parent_gone => StopReason::ParentGone,
        }
    }
}

/// Resolves at the first stop request (see [`StopSignals`]).
pub async fn stop_requested(parent_pid: Option<u32>) -> StopReason {
    match StopSignals::listen(parent_pid) {
        Ok(mut signals) => signals.next().await,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for stop signals; stop this process with SIGKILL");
            std::future::pending().await
        }
    }
}
