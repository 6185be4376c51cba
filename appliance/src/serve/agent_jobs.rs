//! Jobs whose only actions are tests in the master image run through the board's agent: no
//! power, no reboot. The job's test definitions become an overlay the agent fetches, the
//! agent runs LAVA's test runner from it, and its output is parsed for LAVA's signals.

use dispatcher::job::{ActionBlock, Job};

/// Whether every action of `job` is a test (nothing deployed or booted).
pub fn is_agent_job(job: &Job) -> bool {
    !job.actions.is_empty()
        && job
            .actions
            .iter()
            .all(|a| matches!(a, ActionBlock::Test(_)))
}

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dispatcher::logs::LogWriter;

use super::runner::Ending;
use super::App;
use crate::store::JobId;

/// Runs `job` through `board`'s agent.
pub fn run(
    _app: &Arc<App>,
    _id: JobId,
    _job: &Job,
    _board: &str,
    _cancel: &Arc<AtomicBool>,
    _dir: &Path,
    _log: &LogWriter,
) -> Ending {
    Ending {
        health: crate::store::JobHealth::Incomplete,
        error: Some(("LAVABug".into(), "agent jobs: not written yet".into())),
        results: None,
    }
}
