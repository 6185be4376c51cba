//! Job + device → the action tree, with LAVA's shape: the same actions, in the same order, at
//! the same levels as LAVA's dispatcher builds for the deploy, boot and test methods labboot
//! supports (checked against LAVA's pipeline references in the conformance test).

use std::time::Duration;

mod boot;
mod deploy;
mod overlay;
mod test;

use super::timeouts;
use super::{Action, Pipeline, Step};
use crate::device::Device;
use crate::error::Result;
use crate::job::{ActionBlock, BlockCommon, Job};

/// Builds the tree, or the first reason the job cannot run on this device.
pub fn build(job: &Job, device: &Device) -> Result<Pipeline> {
    let mut b = Builder {
        job,
        device,
        top: Vec::new(),
    };
    for (index, block) in job.actions.iter().enumerate() {
        match block {
            ActionBlock::Deploy(d) => b.deploy(index, d)?,
            ActionBlock::Boot(boot) => b.boot(index, boot)?,
            ActionBlock::Test(t) => b.test(index, t),
        }
    }
    b.finalize();
    Ok(Pipeline {
        actions: b.top,
        job_timeout: job.timeouts.job,
    })
}

/// An action before it has a level and timeouts.
struct Def {
    class: &'static str,
    name: &'static str,
    description: &'static str,
    summary: &'static str,
    step: Step,
    retry: bool,
    url: Option<String>,
}

fn def(class: &'static str, name: &'static str, summary: &'static str, step: Step) -> Def {
    Def {
        class,
        name,
        description: summary,
        summary,
        step,
        retry: false,
        url: None,
    }
}

fn nothing(class: &'static str, name: &'static str, why: &'static str) -> Def {
    def(class, name, why, Step::Nothing(why))
}

struct Builder<'a> {
    job: &'a Job,
    device: &'a Device,
    top: Vec<Action>,
}

impl<'a> Builder<'a> {
    fn make(
        &self,
        d: Def,
        level: String,
        block: Option<(usize, &BlockCommon)>,
        parent: Option<(Duration, u32)>,
    ) -> Action {
        let common = block.map(|(_, c)| c);
        let timeout = timeouts::action_timeout(self.job, Some(self.device), common, parent, d.name);
        let max_retries = if d.retry {
            common.and_then(|c| c.failure_retry).unwrap_or(1).max(1)
        } else {
            1
        };
        Action {
            class: d.class,
            name: d.name,
            level,
            max_retries,
            timeout,
            connection_timeout: timeouts::connection_timeout(self.job, self.device, d.name),
            description: d.description,
            summary: d.summary,
            url: d.url,
            block: block.map(|(i, _)| i),
            step: d.step,
            children: Vec::new(),
        }
    }

    fn push_top(&mut self, d: Def, block: Option<(usize, &BlockCommon)>) -> usize {
        let level = (self.top.len() + 1).to_string();
        let a = self.make(d, level, block, None);
        self.top.push(a);
        self.top.len() - 1
    }

    fn child(&self, parent: &mut Action, d: Def, block: Option<(usize, &BlockCommon)>) -> usize {
        let level = format!("{}.{}", parent.level, parent.children.len() + 1);
        let a = self.make(d, level, block, Some((parent.timeout, parent.max_retries)));
        parent.children.push(a);
        parent.children.len() - 1
    }

    /// Whether a test block with definitions follows block `index` (LAVA: the deploy needs
    /// the overlay).
    fn test_follows(&self, index: usize) -> bool {
        self.job.actions[index..]
            .iter()
            .any(|b| matches!(b, ActionBlock::Test(t) if !t.definitions.is_empty()))
    }

    fn any_test(&self) -> bool {
        self.job
            .actions
            .iter()
            .any(|b| matches!(b, ActionBlock::Test(_)))
    }
}
