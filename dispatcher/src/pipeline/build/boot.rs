//! `boot` blocks: u-boot (and minimal), with the reset, interrupt, commands and login LAVA uses.

use super::{def, nothing, Builder};
use crate::error::{Error, Result};
use crate::job::{ActionBlock, Boot};
use crate::pipeline::Step;

impl Builder<'_> {
    pub(super) fn boot(&mut self, index: usize, boot: &Boot) -> Result<()> {
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
}
