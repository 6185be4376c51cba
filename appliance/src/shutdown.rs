//! The stop signal of the long-running commands: Ctrl-C (SIGINT) or SIGTERM (systemd's stop).

use anyhow::Context;

/// A future that completes on SIGINT or SIGTERM. Must be called inside a tokio runtime; fails
/// only when the SIGTERM handler cannot be installed.
pub fn on_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down on a signal");
    })
}
