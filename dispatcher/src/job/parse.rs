//! Reading a job file: YAML with lines, LAVA's schema rules, then the checks that span several
//! keys (timeouts against the job timeout, namespaces). The first problem found ends the check
//! and becomes one JobError line `FILE:LINE: key.path: what is wrong`.

use std::path::Path;

use super::boot::boot;
use super::deploy::deploy;
use super::header;
use super::model::{ActionBlock, Job};
use super::schema::{At, Check};
use super::test::test;
use crate::yaml::{self, Problem};
use crate::{Error, Result};

/// Parses and checks the job in `text`; `file` names it in messages.
pub fn parse_job(file: &str, text: &str) -> Result<Job> {
    let root = yaml::parse(text).map_err(|p| Error::job(p.render(file)))?;
    check_job(file, &root).map_err(|p| Error::job(p.render(file)))
}

/// Reads, parses and checks the job file at `path`.
pub fn load_job(path: &Path) -> Result<Job> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::job(format!("{file}: cannot read the job file: {e}")))?;
    parse_job(&file, &text)
}

/// The checks, in the order a reader meets the keys.
fn check_job(file: &str, root: &yaml::Node) -> Check<Job> {
    let at = At::root(root);
    if root.as_map().is_none() {
        return Err(Problem::new(
            root.line,
            "",
            format!(
                "a job is a mapping (job_name, device_type, timeouts, actions, …), got {}",
                root.kind()
            ),
        ));
    }
    at.keys(header::JOB_KEYS, header::JOB_UNSUPPORTED)?;
    let name = at.req("job_name")?.str_len(200)?.to_string();
    let device_type = at.req("device_type")?.str_len(200)?.to_string();
    for key in ["device", "worker"] {
        if let Some(v) = at.opt(key) {
            v.str_len(200)?;
        }
    }
    let timeouts = header::timeouts(&at.req("timeouts")?)?;
    let mut job = Job {
        file: file.to_string(),
        name,
        device_type,
        timeouts,
        priority: None,
        visibility: None,
        context: serde_yaml_ng::Mapping::new(),
        metadata: serde_yaml_ng::Mapping::new(),
        protocols: serde_yaml_ng::Mapping::new(),
        actions: Vec::new(),
    };
    if let Some(v) = at.opt("visibility") {
        job.visibility = Some(header::visibility(&v)?);
    }
    if let Some(p) = at.opt("priority") {
        job.priority = Some(header::priority(&p)?);
    }
    if let Some(c) = at.opt("context") {
        job.context = header::context(&c)?;
    }
    if let Some(m) = at.opt("metadata") {
        job.metadata = header::metadata(&m)?;
    }
    if let Some(p) = at.opt("protocols") {
        job.protocols = header::protocols(&p)?;
    }
    if let Some(t) = at.opt("tags") {
        header::tags(&t)?;
    }
    if let Some(n) = at.opt("notify") {
        n.map()?;
    }
    if let Some(r) = at.opt("reboot_to_fastboot") {
        r.bool()?;
    }
    let actions = at.req("actions")?;
    for item in actions.items()? {
        job.actions.push(action(&item)?);
    }
    if job.actions.is_empty() {
        return Err(actions.fail("a job needs at least one action"));
    }
    check_timeouts(&at, &job)?;
    check_namespaces(&actions, &job)?;
    Ok(job)
}

/// One entry of `actions`: a mapping with exactly one of deploy, boot, test (LAVA's `command`
/// is refused).
fn action(item: &At<'_>) -> Check<ActionBlock> {
    let entries = item.map()?;
    let [(kind, block)] = entries.as_slice() else {
        return Err(
            item.fail("each action is a mapping with exactly one key: deploy, boot or test")
        );
    };
    let line = block.line;
    match kind.as_str() {
        "deploy" | "boot" | "test" => {
            block.map()?;
        }
        "command" => {
            return Err(block.fail("not supported by labboot: command actions are not run"));
        }
        _ => {
            return Err(block.fail("unknown action type (deploy, boot or test)"));
        }
    }
    Ok(match kind.as_str() {
        "deploy" => ActionBlock::Deploy(deploy(block, line)?),
        "boot" => ActionBlock::Boot(boot(block, line)?),
        _ => ActionBlock::Test(test(block, line)?),
    })
}

/// No global or block timeout may be longer than the job's (LAVA's `check_job_timeouts`).
fn check_timeouts(at: &At<'_>, job: &Job) -> Check<()> {
    let limit = job.timeouts.job;
    let too_long = |place: &At<'_>| {
        place.fail(format!(
            "timeout is longer than the job timeout ({} seconds)",
            limit.as_secs()
        ))
    };
    let timeouts = at.req("timeouts")?;
    for key in ["action", "connection"] {
        if let Some(t) = timeouts.opt(key) {
            if t.timeout()? > limit {
                return Err(too_long(&t));
            }
        }
    }
    for key in ["actions", "connections"] {
        if let Some(group) = timeouts.opt(key) {
            for (_, t) in group.map()? {
                if t.timeout()? > limit {
                    return Err(too_long(&t));
                }
            }
        }
    }
    let actions = at.req("actions")?;
    for (item, block) in actions.items()?.iter().zip(&job.actions) {
        if block.common().timeout.is_some_and(|t| t > limit) {
            let timeout = item
                .map()?
                .into_iter()
                .next()
                .and_then(|(_, b)| b.opt("timeout"));
            if let Some(t) = timeout {
                return Err(too_long(&t));
            }
        }
    }
    Ok(())
}

/// Namespaces: all blocks or none (LAVA's `check_namespace`).
fn check_namespaces(actions: &At<'_>, job: &Job) -> Check<()> {
    let with = job
        .actions
        .iter()
        .filter(|a| a.common().namespace.is_some())
        .count();
    if with == 0 || with == job.actions.len() {
        return Ok(());
    }
    let items = actions.items()?;
    let first_without = job
        .actions
        .iter()
        .zip(items.iter())
        .find(|(a, _)| a.common().namespace.is_none());
    match first_without {
        Some((_, item)) => {
            let block = item.map()?.into_iter().next().map(|(_, b)| b);
            let place = block.unwrap_or_else(|| item.clone());
            Err(place.fail(
                "has no namespace, but others do: when one action has a namespace, every action needs one",
            ))
        }
        None => Ok(()),
    }
}
