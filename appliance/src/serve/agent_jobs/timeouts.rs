//! The test blocks' timeouts, by the dispatcher's precedence (the device may be unknown).

use super::*;

/// The timeout of action `name` of a test block: `dispatcher::pipeline`'s precedence (the
/// job's `action`, the device's, the block's `timeout`, a retrying parent's share, the job's
/// `actions.<name>`, the block's `timeouts.<name>`), where the device may be unknown.
pub(super) fn action_timeout(
    job: &Job,
    device: Option<&Device>,
    block: &BlockCommon,
    parent: Option<(Duration, u32)>,
    name: &str,
) -> Duration {
    let mut t = job.timeouts.action.unwrap_or(DEFAULT_ACTION_TIMEOUT);
    if let Some(d) = device.and_then(|d| d.action_timeouts.get(name)) {
        t = *d;
    }
    if let Some(d) = block.timeout {
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
    if let Some(d) = block.timeouts.get(name) {
        t = *d;
    }
    t
}

/// A test block's (`lava-test-retry`, `lava-test-shell`) timeouts, as the pipeline gives them.
pub(super) fn block_timeouts(
    job: &Job,
    device: Option<&Device>,
    block: &BlockCommon,
) -> (Duration, Duration) {
    let retries = block.failure_retry.unwrap_or(1).max(1);
    let parent = action_timeout(job, device, block, None, "lava-test-retry");
    let child = action_timeout(
        job,
        device,
        block,
        Some((parent, retries)),
        "lava-test-shell",
    );
    (parent, child)
}
