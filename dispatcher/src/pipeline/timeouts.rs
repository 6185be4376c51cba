//! LAVA's timeout precedence, from lowest to highest priority:
//!
//! 1. the job's `timeouts.action` (LAVA's default 30 s when absent);
//! 2. the device's `timeouts.actions.<name>`;
//! 3. the action block's `timeout` (it covers every action of the block);
//! 4. inside a retrying parent, the parent's timeout divided by its retries;
//! 5. the job's `timeouts.actions.<name>`;
//! 6. the action block's `timeouts.<name>`.
//!
//! Connection timeouts (each console wait): the job's `timeouts.connection` (default 30 s),
//! the device's `timeouts.connections.<name>`, the job's `timeouts.connections.<name>`.

use std::time::Duration;

use crate::device::Device;
use crate::job::{BlockCommon, Job};

/// LAVA's default action and connection timeout.
pub const DEFAULT: Duration = Duration::from_secs(30);

/// The timeout of action `name` in a block with `block` keys, under a parent with `parent`
/// = (timeout, max_retries); `device` may be unknown (the appliance's agent jobs).
pub fn action_timeout(
    job: &Job,
    device: Option<&Device>,
    block: Option<&BlockCommon>,
    parent: Option<(Duration, u32)>,
    name: &str,
) -> Duration {
    let mut t = job.timeouts.action.unwrap_or(DEFAULT);
    if let Some(d) = device.and_then(|d| d.action_timeouts.get(name)) {
        t = *d;
    }
    if let Some(d) = block.and_then(|b| b.timeout) {
        t = d;
    }
    if let Some((pt, retries)) = parent {
        if retries > 1 {
            t = Duration::from_secs(pt.as_secs() / u64::from(retries));
        }
    }
    if let Some(d) = job.timeouts.actions.get(name) {
        t = *d;
    }
    if let Some(d) = block.and_then(|b| b.timeouts.get(name)) {
        t = *d;
    }
    t
}

/// The connection timeout of action `name`.
pub fn connection_timeout(job: &Job, device: &Device, name: &str) -> Duration {
    let mut t = job.timeouts.connection.unwrap_or(DEFAULT);
    if let Some(d) = device.connection_timeouts.get(name) {
        t = *d;
    }
    if let Some(d) = job.timeouts.connections.get(name) {
        t = *d;
    }
    t
}
