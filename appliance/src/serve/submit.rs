//! A submitted job is checked with the dispatcher before it is queued: its YAML (every error
//! names the line), a board of its device type, its pipeline against that board's device and
//! its priority. A job refused here is never queued.

use dispatcher::job::{parse_job, ActionBlock, Job};

use super::agent_jobs;
use super::consoles::Consoles;
use super::registry::Registry;
use crate::store::{Board, NewJob};

/// The job's priority: `high` = 100, `medium` = 50, `low` = 0, or a number 0–100.
pub fn priority(p: Option<&str>) -> Result<i64, String> {
    match p.map(str::trim) {
        None | Some("medium") => Ok(50),
        Some("high") => Ok(100),
        Some("low") => Ok(0),
        Some(n) => match n.parse::<i64>() {
            Ok(v) if (0..=100).contains(&v) => Ok(v),
            _ => Err(format!(
                "priority: '{n}' is not high, medium, low or a number 0-100"
            )),
        },
    }
}

/// Checks `yaml` (named `file` in messages) against the lab's boards (a board whose console the
/// appliance keeps needs no `connection_command`); the job to queue. With a `shared` database
/// (several appliances), a job no board here can check is queued once its YAML is valid.
pub fn check(
    file: &str,
    yaml: &str,
    boards: &[Board],
    registry: &Registry,
    consoles: &Consoles,
    shared: bool,
) -> Result<(Job, NewJob), String> {
    let job = parse_job(file, yaml).map_err(|e| e.message)?;
    let prio = priority(job.priority.as_deref()).map_err(|e| format!("{file}: {e}"))?;
    let candidates: Vec<&Board> = boards
        .iter()
        .filter(|b| b.device_type == job.device_type)
        .collect();
    if candidates.is_empty() && !shared {
        return Err(format!(
            "{file}: device_type '{}': no board of this type in the lab",
            job.device_type
        ));
    }
    // With a shared database, a job for boards this appliance does not serve (or for a type
    // no appliance serves right now) waits in the queue: the appliance that claims it builds
    // its pipeline again against the board's device, and an error there ends the job.
    let remote = shared
        && candidates
            .iter()
            .all(|b| registry.configured(&b.id).is_none());
    if !agent_jobs::is_agent_job(&job) && !remote {
        let Some(b) = candidates
            .iter()
            .find(|b| registry.configured(&b.id).is_some())
        else {
            return Err(format!(
                "{file}: device_type '{}': no board of this type has a device file (only jobs that just test in the master image can run on discovered boards)",
                job.device_type
            ));
        };
        let dev = registry
            .device(&b.id, &job.context)
            .map_err(|e| e.message)?;
        let pipeline = dispatcher::pipeline::build(&job, &dev).map_err(|e| e.message)?;
        let style = dispatcher::device::boot_style(&dev, &job.context).map_err(|e| e.message)?;
        let lab_console = consoles.get(&b.id).is_some();
        dispatcher::pipeline::validate_in_lab(&job, &dev, style, lab_console)
            .map_err(|e| e.message)?;
        drop(pipeline);
    }
    let new = NewJob {
        name: job.name.clone(),
        device_type: job.device_type.clone(),
        priority: prio,
        yaml: yaml.to_string(),
    };
    Ok((job, new))
}

/// Whether a job deploys anything (else it only tests in what runs).
pub fn deploys(job: &Job) -> bool {
    job.actions
        .iter()
        .any(|a| matches!(a, ActionBlock::Deploy(_)))
}

#[cfg(test)]
mod tests {
    use super::priority;

    #[test]
    fn priorities_map_like_lava() {
        assert_eq!(priority(None), Ok(50));
        assert_eq!(priority(Some("high")), Ok(100));
        assert_eq!(priority(Some("low")), Ok(0));
        assert_eq!(priority(Some("73")), Ok(73));
        assert!(priority(Some("101")).unwrap_err().contains("0-100"));
        assert!(priority(Some("urgent")).is_err());
    }
}
