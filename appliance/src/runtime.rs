//! The tokio runtimes the server commands run on, built one way with one error message.

use anyhow::Context;
use tokio::runtime::{Builder, Runtime};

/// A multi-threaded runtime (TFTP, NBD, NFS: many connections doing blocking file I/O).
pub fn multi_thread() -> anyhow::Result<Runtime> {
    Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// A current-thread runtime (DHCP: one socket loop, no cross-thread wake-ups).
pub fn current_thread() -> anyhow::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
