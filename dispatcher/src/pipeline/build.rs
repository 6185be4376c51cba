//! Job + device → the action tree, with LAVA's shape: the same actions, in the same order, at
//! the same levels as LAVA's dispatcher builds for the deploy, boot and test methods labboot
//! supports (checked against LAVA's pipeline references in the conformance test).

use std::time::Duration;

use super::timeouts;
use super::{Action, Pipeline, Step};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::job::{ActionBlock, BlockCommon, Boot, DefinitionSource, Deploy, DeployTo, Job, Test};

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
        let timeout = timeouts::action_timeout(self.job, self.device, common, parent, d.name);
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

    fn overlay(&self, parent: &mut Action, blk: (usize, &BlockCommon), with_tests: bool) {
        let i = self.child(
            parent,
            def(
                "OverlayAction",
                "lava-overlay",
                "add the test shell scripts and definitions to the deployed system",
                Step::Nothing("the overlay is assembled by its children"),
            ),
            Some(blk),
        );
        if !with_tests {
            return;
        }
        let mut ov = parent.children.remove(i);
        if self.device.deploy_methods.iter().any(|m| m.contains("ssh")) {
            self.child(
                &mut ov,
                nothing(
                    "SshAuthorize",
                    "ssh-authorize",
                    "no ssh deployment in labboot: no key to authorize",
                ),
                Some(blk),
            );
        }
        self.child(
            &mut ov,
            nothing(
                "MultinodeOverlayAction",
                "lava-multinode-overlay",
                "single-board jobs only: no multinode scripts",
            ),
            Some(blk),
        );
        let t = self.child(
            &mut ov,
            def(
                "TestDefinitionAction",
                "test-definition",
                "load the test definitions into the overlay",
                Step::Nothing("the definitions are loaded by the children"),
            ),
            Some(blk),
        );
        let mut td = ov.children.remove(t);
        for (test_block, block) in self.job.actions.iter().enumerate() {
            let ActionBlock::Test(test) = block else {
                continue;
            };
            for (definition, d) in test.definitions.iter().enumerate() {
                let (class, name) = match d.source {
                    DefinitionSource::Git { .. } => ("GitRepoAction", "git-repo-action"),
                    DefinitionSource::Inline(_) => ("InlineRepoAction", "inline-repo-action"),
                    DefinitionSource::Url { .. } => ("UrlRepoAction", "url-repo-action"),
                };
                self.child(
                    &mut td,
                    def(
                        class,
                        name,
                        "fetch the test definition",
                        Step::Repo {
                            test_block,
                            definition,
                        },
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestOverlayAction",
                        "test-overlay",
                        "the definition's files are written with the overlay",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestInstallAction",
                        "test-install-overlay",
                        "install steps are written into the definition's run script",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestRunnerAction",
                        "test-runscript-overlay",
                        "the run script is written with the overlay",
                    ),
                    Some(blk),
                );
            }
        }
        ov.children.insert(t, td);
        self.child(
            &mut ov,
            def(
                "CompressOverlay",
                "compress-overlay",
                "write the overlay: test runner, helper scripts, definitions",
                Step::WriteOverlay,
            ),
            Some(blk),
        );
        parent.children.insert(i, ov);
    }

    fn download(&self, parent: &mut Action, key: &str, url: &str, blk: (usize, &BlockCommon)) {
        let mut d = def(
            "DownloaderAction",
            "download-retry",
            "download with retry",
            Step::Nothing("the download is done by the child"),
        );
        d.retry = true;
        let i = self.child(parent, d, Some(blk));
        let mut dl = parent.children.remove(i);
        let http = url.starts_with("http://") || url.starts_with("https://");
        let mut leaf = if http {
            def(
                "HttpDownloadAction",
                "http-download",
                "download over http(s), checking the checksums",
                Step::Download { key: key.into() },
            )
        } else {
            def(
                "FileDownloadAction",
                "file-download",
                "copy a local file, checking the checksums",
                Step::Download { key: key.into() },
            )
        };
        leaf.url = Some(url.to_string());
        self.child(&mut dl, leaf, Some(blk));
        parent.children.insert(i, dl);
    }

    fn prepare_kernel(&self, parent: &mut Action, blk: (usize, &BlockCommon)) {
        let i = self.child(
            parent,
            def(
                "PrepareKernelAction",
                "prepare-kernel",
                "convert the kernel for the boot method",
                Step::Nothing("the conversion is done by the child"),
            ),
            Some(blk),
        );
        if self.device.uboot.is_some() {
            let mut pk = parent.children.remove(i);
            self.child(
                &mut pk,
                def(
                    "UBootPrepareKernelAction",
                    "uboot-prepare-kernel",
                    "give the kernel a uImage header when the job asks for uimage",
                    Step::PrepareKernel,
                ),
                Some(blk),
            );
            parent.children.insert(i, pk);
        }
    }

    fn deploy(&mut self, index: usize, d: &Deploy) -> Result<()> {
        if !self.device.deploy_methods.is_empty()
            && !self
                .device
                .deploy_methods
                .iter()
                .any(|m| m == d.to.as_str())
        {
            return Err(Error::job(format!(
                "{}:{}: actions[{index}].deploy.to: the device {} has no '{}' deploy method (it has: {})",
                self.job.file,
                d.common.line,
                self.device.file,
                d.to.as_str(),
                self.device.deploy_methods.join(", ")
            )));
        }
        let blk = (index, &d.common);
        let with_tests = self.test_follows(index);
        let (class, name) = match d.to {
            DeployTo::Tftp => ("TftpAction", "tftp-deploy"),
            DeployTo::Nbd => ("NbdAction", "nbd-deploy"),
            DeployTo::Nfs => ("NfsAction", "nfs-deploy"),
            DeployTo::Downloads => ("DownloadsAction", "downloads"),
        };
        let top = self.push_top(
            def(class, name, "deploy the job's files", Step::Deploy),
            Some(blk),
        );
        let mut a = self.top.remove(top);
        match d.to {
            DeployTo::Tftp => {
                if with_tests {
                    self.overlay(&mut a, blk, true);
                }
                for art in [&d.ramdisk, &d.kernel, &d.dtb, &d.nfsrootfs, &d.modules]
                    .into_iter()
                    .flatten()
                {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                let p = self.child(
                    &mut a,
                    def(
                        "PrepareOverlayTftp",
                        "prepare-tftp-overlay",
                        "unpack the ramdisk or nfsrootfs and apply the overlay",
                        Step::Nothing("the preparation is done by the children"),
                    ),
                    Some(blk),
                );
                let mut prep = a.children.remove(p);
                self.child(
                    &mut prep,
                    def(
                        "ExtractNfsRootfs",
                        "extract-nfsrootfs",
                        "unpack the nfsrootfs into the job's NFS export",
                        Step::ExtractNfsRootfs,
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    nothing(
                        "ParsePersistentNFS",
                        "parse-persistent-nfs",
                        "no persistent NFS root: the job's export is its own",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    nothing(
                        "ExtractRamdisk",
                        "extract-overlay-ramdisk",
                        "the ramdisk is never unpacked on the host: files are appended to its archive",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    def(
                        "ExtractModules",
                        "extract-modules",
                        "unpack the kernel modules into the root filesystem",
                        Step::ExtractModules,
                    ),
                    Some(blk),
                );
                if with_tests {
                    self.child(
                        &mut prep,
                        def(
                            "ApplyOverlayTftp",
                            "apply-overlay-tftp",
                            "copy the overlay into the nfsrootfs",
                            Step::ApplyOverlay,
                        ),
                        Some(blk),
                    );
                }
                if d.kernel.as_ref().is_some_and(|k| k.kernel_type.is_some()) {
                    self.prepare_kernel(&mut prep, blk);
                }
                self.child(
                    &mut prep,
                    nothing(
                        "ConfigurePreseedFile",
                        "configure-preseed-file",
                        "no installer preseed file in labboot jobs",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    def(
                        "CompressRamdisk",
                        "compress-ramdisk",
                        "repack the ramdisk with the overlay and modules",
                        Step::CompressRamdisk,
                    ),
                    Some(blk),
                );
                a.children.insert(p, prep);
                if self.any_test() {
                    self.child(
                        &mut a,
                        nothing(
                            "DeployDeviceEnvironment",
                            "deploy-device-env",
                            "no device environment file in labboot jobs",
                        ),
                        Some(blk),
                    );
                }
            }
            DeployTo::Nbd => {
                for art in [&d.initrd, &d.ramdisk, &d.kernel, &d.dtb, &d.nbdroot]
                    .into_iter()
                    .flatten()
                {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                self.overlay(&mut a, blk, with_tests);
                if with_tests {
                    // labboot's addition: the overlay travels in the initrd, whose /init copies
                    // it into the root (LAVA would need transfer_overlay over the console).
                    self.child(
                        &mut a,
                        def(
                            "CompressRamdisk",
                            "compress-ramdisk",
                            "repack the initrd with the overlay",
                            Step::CompressRamdisk,
                        ),
                        Some(blk),
                    );
                }
                if d.kernel.as_ref().is_some_and(|k| k.kernel_type.is_some()) {
                    self.prepare_kernel(&mut a, blk);
                }
                self.child(
                    &mut a,
                    def(
                        "XnbdAction",
                        "xnbd-server-deploy",
                        "add the job's NBD export",
                        Step::NbdExport,
                    ),
                    Some(blk),
                );
            }
            DeployTo::Nfs => {
                for art in [&d.nfsrootfs, &d.modules].into_iter().flatten() {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                self.child(
                    &mut a,
                    def(
                        "ExtractNfsRootfs",
                        "extract-nfsrootfs",
                        "unpack the nfsrootfs into the job's NFS export",
                        Step::ExtractNfsRootfs,
                    ),
                    Some(blk),
                );
                self.overlay(&mut a, blk, with_tests);
                self.child(
                    &mut a,
                    def(
                        "ExtractModules",
                        "extract-modules",
                        "unpack the kernel modules into the root filesystem",
                        Step::ExtractModules,
                    ),
                    Some(blk),
                );
                self.child(
                    &mut a,
                    def(
                        "ApplyOverlayTftp",
                        "apply-overlay-tftp",
                        "copy the overlay into the nfsrootfs",
                        Step::ApplyOverlay,
                    ),
                    Some(blk),
                );
                if self.any_test() {
                    self.child(
                        &mut a,
                        nothing(
                            "DeployDeviceEnvironment",
                            "deploy-device-env",
                            "no device environment file in labboot jobs",
                        ),
                        Some(blk),
                    );
                }
            }
            DeployTo::Downloads => {
                for art in d.artifacts() {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
            }
        }
        self.top.insert(top, a);
        Ok(())
    }

    fn boot(&mut self, index: usize, boot: &Boot) -> Result<()> {
        let blk = (index, &boot.common);
        let where_ = format!(
            "{}:{}: actions[{index}].boot",
            self.job.file, boot.common.line
        );
        let minimal = boot.method == "minimal";
        if !minimal {
            let Some(uboot) = &self.device.uboot else {
                return Err(Error::job(format!(
                    "{where_}.method: the device {} has no u-boot boot method",
                    self.device.file
                )));
            };
            if let Some(crate::job::BootCommands::Named(name)) = &boot.commands {
                if !uboot.stanzas.contains_key(name) {
                    let known: Vec<&str> = uboot.stanzas.keys().map(String::as_str).collect();
                    return Err(Error::job(format!(
                        "{where_}.commands: the device {} has no '{name}' command stanza (it has: {})",
                        self.device.file,
                        known.join(", ")
                    )));
                }
            }
        }
        let shell_follows = self.job.actions[index..]
            .iter()
            .any(|b| matches!(b, ActionBlock::Test(t) if !t.definitions.is_empty()));
        let mut top_def = if minimal {
            def(
                "MinimalBoot",
                "minimal-boot",
                "power the board on and wait for its shell",
                Step::Nothing("the boot is done by the children"),
            )
        } else {
            def(
                "UBootAction",
                "uboot-action",
                "boot the board through U-Boot",
                Step::Nothing("the boot is done by the children"),
            )
        };
        top_def.retry = true;
        let top = self.push_top(top_def, Some(blk));
        let mut a = self.top.remove(top);
        if !minimal {
            self.child(
                &mut a,
                nothing(
                    "UBootSecondaryMedia",
                    "uboot-from-media",
                    "no secondary media: files come over the network",
                ),
                Some(blk),
            );
            self.child(
                &mut a,
                def(
                    "BootloaderCommandOverlay",
                    "bootloader-overlay",
                    "substitute the job's files and addresses into the U-Boot commands",
                    Step::BootloaderOverlay,
                ),
                Some(blk),
            );
        }
        self.child(
            &mut a,
            def(
                "ConnectDevice",
                "connect-device",
                "open the board's serial console",
                Step::Connect,
            ),
            Some(blk),
        );
        let mut cmds_parent = if minimal {
            None
        } else {
            let i = self.child(
                &mut a,
                def(
                    "UBootCommandsAction",
                    "uboot-commands",
                    "reset the board and give U-Boot the job's commands",
                    Step::Nothing("the commands are sent by the children"),
                ),
                Some(blk),
            );
            Some(a.children.remove(i))
        };
        {
            let p = cmds_parent.as_mut().unwrap_or(&mut a);
            let r = self.child(
                p,
                def(
                    "ResetDevice",
                    "reset-device",
                    "power-cycle or reboot the board",
                    Step::Nothing("the reset is done by the child"),
                ),
                Some(blk),
            );
            let mut reset = p.children.remove(r);
            if self.device.hard_reset_command.is_some() {
                self.child(
                    &mut reset,
                    def(
                        "PDUReboot",
                        "pdu-reboot",
                        "run the device's hard reset command",
                        Step::HardReset,
                    ),
                    Some(blk),
                );
            } else {
                self.child(
                    &mut reset,
                    def(
                        "SendRebootCommands",
                        "send-reboot-commands",
                        "reboot the board from its running shell",
                        Step::SoftReboot,
                    ),
                    Some(blk),
                );
            }
            p.children.insert(r, reset);
            if !minimal {
                self.child(
                    p,
                    def(
                        "BootloaderInterruptAction",
                        "bootloader-interrupt",
                        "stop U-Boot's autoboot",
                        Step::Interrupt,
                    ),
                    Some(blk),
                );
                self.child(
                    p,
                    def(
                        "BootloaderCommandsAction",
                        "bootloader-commands",
                        "send the commands to U-Boot and wait for the kernel to start",
                        Step::BootloaderCommands,
                    ),
                    Some(blk),
                );
            }
            if !boot.prompts.is_empty() {
                let l = self.child(
                    p,
                    def(
                        "AutoLoginAction",
                        "auto-login-action",
                        "wait for the kernel, log in if asked, wait for the prompt",
                        Step::AutoLogin,
                    ),
                    Some(blk),
                );
                let mut login = p.children.remove(l);
                self.child(
                    &mut login,
                    def(
                        "LoginAction",
                        "login-action",
                        "log in and wait for the shell prompt",
                        Step::Login,
                    ),
                    Some(blk),
                );
                p.children.insert(l, login);
                if shell_follows {
                    self.child(
                        p,
                        def(
                            "ExpectShellSession",
                            "expect-shell-connection",
                            "make sure a shell answers",
                            Step::ExpectShell,
                        ),
                        Some(blk),
                    );
                    if boot.transfer_overlay.is_some() {
                        self.child(
                            p,
                            nothing(
                                "OverlayUnpack",
                                "overlay-unpack",
                                "the overlay is already in the deployed ramdisk or root filesystem",
                            ),
                            Some(blk),
                        );
                    }
                    self.child(
                        p,
                        nothing(
                            "ExportDeviceEnvironment",
                            "export-device-env",
                            "no device environment to export",
                        ),
                        Some(blk),
                    );
                }
            }
        }
        if let Some(p) = cmds_parent {
            a.children.push(p);
        }
        self.top.insert(top, a);
        Ok(())
    }

    fn test(&mut self, index: usize, t: &Test) {
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

    fn finalize(&mut self) {
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
