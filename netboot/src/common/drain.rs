//! The end of a server's run: its tasks (connections, transfers) were told to stop; wait for
//! them a grace period, then abort the rest and say how many.

use std::time::Duration;

use tokio::task::JoinSet;

/// How long a stopping server waits for its connections and transfers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Waits up to `grace` for every task of `tasks`; aborts those still running then and warns
/// `"{server}: N {what} did not stop in time; aborted"`. Returns how many were aborted.
pub async fn drain<T: 'static>(
    tasks: &mut JoinSet<T>,
    grace: Duration,
    server: &str,
    what: &str,
) -> usize {
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_ok() {
        return 0;
    }
    let left = tasks.len();
    tracing::warn!("{server}: {left} {what} did not stop in time; aborted");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_quick_tasks_and_aborts_stuck_ones() {
        let mut tasks = JoinSet::new();
        tasks.spawn(async { tokio::time::sleep(Duration::from_millis(10)).await });
        assert_eq!(
            drain(&mut tasks, Duration::from_secs(5), "test", "tasks").await,
            0
        );
        tasks.spawn(std::future::pending::<()>());
        tasks.spawn(async {});
        let log = crate::testlog::Captured::start();
        assert_eq!(
            drain(&mut tasks, Duration::from_millis(50), "test", "tasks").await,
            1
        );
        assert!(tasks.is_empty());
        let lines = log.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("test: 1 tasks did not stop in time; aborted")),
            "{lines:?}"
        );
    }
}
