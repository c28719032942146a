//! When to stop: SIGTERM, SIGINT, or the launcher that started this process going away.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Terminate,
    Interrupt,
    ParentGone,
}

/// Resolves when the process should stop. With `parent_pid`, also when this process's
/// parent is no longer that process: a launcher killed with SIGKILL leaves no orphans.
pub async fn stop_requested(parent_pid: Option<u32>) -> StopReason {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let parent_gone = async {
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
        () = terminate => StopReason::Terminate,
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                tracing::warn!(%error, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
            StopReason::Interrupt
        }
        () = parent_gone => StopReason::ParentGone,
    }
}
