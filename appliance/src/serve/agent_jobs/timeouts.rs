//! The test blocks' timeouts, by the dispatcher's precedence (the device may be unknown).

use super::*;
use dispatcher::pipeline::timeouts::action_timeout;

/// A test block's (`lava-test-retry`, `lava-test-shell`) timeouts, as the pipeline gives them.
pub(super) fn block_timeouts(
    job: &Job,
    device: Option<&Device>,
    block: &BlockCommon,
) -> (Duration, Duration) {
    let retries = block.failure_retry.unwrap_or(1).max(1);
    let parent = action_timeout(job, device, Some(block), None, "lava-test-retry");
    let child = action_timeout(
        job,
        device,
        Some(block),
        Some((parent, retries)),
        "lava-test-shell",
    );
    (parent, child)
}
