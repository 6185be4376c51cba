//! A job's pipeline tree, as the dispatcher builds it (`description.yaml`), for the API and
//! the dashboard's job page: built from the job's YAML and the device of the board it ran on
//! (or, while it waits, of a board of its device type that has a device file).

use dispatcher::job::{parse_job, ActionBlock};
use serde_json::{json, Value};

use super::agent_jobs;
use super::registry::Registry;
use crate::store::{Board, Job};

/// The tree as JSON: `{"board": ID|null, "pipeline": [...]}` where every node has the
/// `description.yaml` keys (class, name, level, timeout, …, and `pipeline` for children).
pub fn tree(job: &Job, boards: &[Board], registry: &Registry) -> Result<Value, String> {
    let parsed = parse_job("job.yaml", &job.yaml).map_err(|e| e.message)?;
    if agent_jobs::is_agent_job(&parsed) {
        return Ok(json!({ "board": job.board, "agent": true, "pipeline": agent_tree(&parsed) }));
    }
    let board = job.board.clone().or_else(|| {
        boards
            .iter()
            .find(|b| {
                b.device_type == job.device_type
                    && b.approved
                    && registry.configured(&b.id).is_some()
            })
            .map(|b| b.id.clone())
    });
    let Some(board) = board else {
        return Err(format!(
            "no board of device type '{}' has a device file to build the pipeline with",
            job.device_type
        ));
    };
    let dev = registry
        .device(&board, &parsed.context)
        .map_err(|e| e.message)?;
    let pipeline = dispatcher::pipeline::build(&parsed, &dev).map_err(|e| e.message)?;
    let described = dispatcher::pipeline::describe(&pipeline);
    let value = serde_json::to_value(&described).map_err(|e| e.to_string())?;
    Ok(json!({ "board": board, "agent": false, "pipeline": value }))
}

/// A job that only tests in the master image runs through the agent: one node per test
/// definition (or interactive script), under one test block per `test:` action.
fn agent_tree(job: &dispatcher::job::Job) -> Value {
    let mut blocks = Vec::new();
    for (i, block) in job.actions.iter().enumerate() {
        let ActionBlock::Test(t) = block else {
            continue;
        };
        let level = (i + 1).to_string();
        let children: Vec<Value> = t
            .definitions
            .iter()
            .map(|d| d.name.as_str())
            .chain(t.interactive.iter().map(|s| s.name.as_str()))
            .enumerate()
            .map(|(n, name)| {
                json!({
                    "class": "AgentTestDefinition",
                    "name": name,
                    "level": format!("{level}.{}", n + 1),
                    "description": "run by the board's agent in the master image",
                })
            })
            .collect();
        blocks.push(json!({
            "class": "AgentTestAction",
            "name": "agent-test",
            "level": level,
            "description": "test in the running master image through the labboot agent (no reboot)",
            "timeout": t.common.timeout.map(|d| d.as_secs()),
            "pipeline": children,
        }));
    }
    Value::Array(blocks)
}
