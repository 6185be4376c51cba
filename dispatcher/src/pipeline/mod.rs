//! The job as a tree of actions, built once from the job and the device.
//!
//! LAVA's model, kept because labs read its output: every action has a name, a level string
//! (`1`, `1.2`, `2.4.1` …), a timeout and a retry count; a parent runs its children strictly in
//! order. The tree is data: `--validate` builds it, checks it and writes `description.yaml`
//! without touching a server or a board, and the runner walks the same tree. Each node's
//! [`Step`] says what the runner does for it; nodes LAVA has but labboot has nothing to do for
//! (multinode, preseed files, …) stay in the tree as [`Step::Nothing`] with the reason, so the
//! tree keeps LAVA's shape and levels.

mod build;
mod describe;
pub mod timeouts;
mod validate;

use std::time::Duration;

pub use build::build;
pub use describe::describe;
pub use validate::{validate, validate_in_lab};

/// What the runner does for an action (before running its children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do in labboot; the text says why (logged).
    Nothing(&'static str),
    /// `tftp-deploy`, `nbd-deploy`, `nfs-deploy`, `downloads`: set up the block's directories.
    Deploy,
    /// `http-download` / `file-download`: fetch one artefact of the deploy block.
    Download {
        /// The artefact's key (`kernel`, `ramdisk`, …).
        key: String,
    },
    /// `git-repo-action` / `inline-repo-action` / `url-repo-action`: resolve one definition.
    Repo {
        /// Index of the test block in `actions`.
        test_block: usize,
        /// Index of the definition in that block.
        definition: usize,
    },
    /// `compress-overlay`: write the test overlay (scripts and definitions) for the job.
    WriteOverlay,
    /// `extract-nfsrootfs`: unpack the nfsrootfs into the job's NFS export.
    ExtractNfsRootfs,
    /// `extract-modules`: unpack the modules into the nfsrootfs (a ramdisk gets them when repacked).
    ExtractModules,
    /// `apply-overlay-tftp`: copy the overlay into the nfsrootfs (a ramdisk gets it when repacked).
    ApplyOverlay,
    /// `uboot-prepare-kernel`: give the kernel a uImage header when the job asks for `uimage`.
    PrepareKernel,
    /// `compress-ramdisk`: repack the ramdisk with the overlay and modules.
    CompressRamdisk,
    /// `xnbd-server-deploy`: add the job's NBD export.
    NbdExport,
    /// `bootloader-overlay`: substitute the job's values into the U-Boot commands.
    BootloaderOverlay,
    /// `connect-device`: open the board's console.
    Connect,
    /// `pdu-reboot`: the device's hard reset command.
    HardReset,
    /// `send-reboot-commands`: reboot from a running shell.
    SoftReboot,
    /// `bootloader-interrupt`: stop U-Boot's autoboot.
    Interrupt,
    /// `bootloader-commands`: type (or, network-driven, wait for) the U-Boot commands.
    BootloaderCommands,
    /// `auto-login-action`: wait for the kernel.
    AutoLogin,
    /// `login-action`: log in if asked, then wait for a prompt.
    Login,
    /// `expect-shell-connection`: make sure a shell answers.
    ExpectShell,
    /// `lava-test-shell`: run the test runner and collect results.
    TestShell {
        /// Index of the test block in `actions`.
        test_block: usize,
    },
    /// `lava-test-interactive`: run an interactive test.
    Interactive {
        /// Index of the test block in `actions`.
        test_block: usize,
    },
    /// `power-off`: the device's power off command.
    PowerOff,
}

/// One action of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// LAVA's class name for the action (kept so tools that read descriptions recognise it).
    pub class: &'static str,
    /// The action's name (`tftp-deploy`, `lava-test-shell`, …).
    pub name: &'static str,
    /// The level string.
    pub level: String,
    /// How often the action may run in all (1: no retry).
    pub max_retries: u32,
    /// The action's own timeout.
    pub timeout: Duration,
    /// The timeout of each console wait in the action.
    pub connection_timeout: Duration,
    /// One line: what the action does.
    pub description: &'static str,
    /// A few words: what the action does.
    pub summary: &'static str,
    /// The URL a download fetches.
    pub url: Option<String>,
    /// Index of the job's action block this action belongs to (None: finalize).
    pub block: Option<usize>,
    /// What the runner does.
    pub step: Step,
    /// The sub-pipeline.
    pub children: Vec<Action>,
}

/// The whole job: the top-level actions, then `finalize`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Top-level actions, in order; the last is `finalize`.
    pub actions: Vec<Action>,
    /// The job's own timeout.
    pub job_timeout: Duration,
}

impl Pipeline {
    /// Every action, depth first, in level order.
    pub fn walk(&self) -> Vec<&Action> {
        fn rec<'a>(list: &'a [Action], out: &mut Vec<&'a Action>) {
            for a in list {
                out.push(a);
                rec(&a.children, out);
            }
        }
        let mut out = Vec::new();
        rec(&self.actions, &mut out);
        out
    }

    /// The first action with this name.
    pub fn find(&self, name: &str) -> Option<&Action> {
        self.walk().into_iter().find(|a| a.name == name)
    }
}
