//! `test` blocks (shell or interactive, in a retry wrapper) and `finalize`.

use super::{def, nothing, Builder};
use crate::job::Test;
use crate::pipeline::Step;

impl Builder<'_> {
    pub(super) fn test(&mut self, index: usize, t: &Test) {
        let blk = (index, &t.common);
        let interactive = t.definitions.is_empty() && !t.interactive.is_empty();
        let (class, name, cclass, cname, step) = if interactive {
            (
                "TestInteractiveRetry",
                "lava-test-interactive-retry",
                "TestInteractiveAction",
                "lava-test-interactive",
                Step::Interactive { test_block: index },
            )
        } else {
            (
                "TestShellRetry",
                "lava-test-retry",
                "TestShellAction",
                "lava-test-shell",
                Step::TestShell { test_block: index },
            )
        };
        let mut d = def(
            class,
            name,
            "run the tests, retrying as the job allows",
            Step::Nothing("the tests are run by the child"),
        );
        d.retry = true;
        let top = self.push_top(d, Some(blk));
        let mut a = self.top.remove(top);
        self.child(
            &mut a,
            def(
                cclass,
                cname,
                "run the tests on the board and collect results",
                step,
            ),
            Some(blk),
        );
        self.top.insert(top, a);
    }

    pub(super) fn finalize(&mut self) {
        let top = self.push_top(
            def(
                "FinalizeAction",
                "finalize",
                "power the board off and remove the job's exports",
                Step::Nothing("finalize is done by the children and the runner"),
            ),
            None,
        );
        let mut a = self.top.remove(top);
        self.child(
            &mut a,
            def(
                "PowerOff",
                "power-off",
                "run the device's power off command",
                Step::PowerOff,
            ),
            None,
        );
        self.child(
            &mut a,
            nothing(
                "ReadFeedback",
                "read-feedback",
                "single-board jobs: no other namespaces to read",
            ),
            None,
        );
        self.top.insert(top, a);
    }
}
