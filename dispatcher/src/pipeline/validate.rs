//! The checks `--validate` makes beyond building the tree, before any server or board is
//! touched: what a run would otherwise only find out half-way.

use crate::device::{BootStyle, Device};
use crate::error::{Error, Result};
use crate::job::{ActionBlock, BootCommands, Job};
use crate::testdef;

/// Checks `job` on `device` booted the `style` way.
pub fn validate(job: &Job, device: &Device, style: BootStyle) -> Result<()> {
    validate_in_lab(job, device, style, false)
}

/// [`validate`], where `lab_console` says the lab keeps the board's console open itself
/// ([`crate::services::LabServices::console`]), so the device needs no `connection_command`.
pub fn validate_in_lab(
    job: &Job,
    device: &Device,
    style: BootStyle,
    lab_console: bool,
) -> Result<()> {
    let mut index = 0;
    let mut kernel_cmd = None;
    for (i, block) in job.actions.iter().enumerate() {
        match block {
            ActionBlock::Deploy(d) => {
                if let Some(k) = &d.kernel {
                    kernel_cmd = crate::actions::prepare::bootcommand(k.kernel_type).or(kernel_cmd);
                }
            }
            ActionBlock::Test(t) => {
                for def in &t.definitions {
                    testdef::describe(def, index)?;
                    index += 1;
                }
            }
            ActionBlock::Boot(b) => {
                let at = format!("{}:{}: actions[{i}].boot", job.file, b.common.line);
                if device.connection_command.is_none() && !lab_console {
                    return Err(Error::config(format!(
                        "{}: no console: the device needs commands.connect (connection_command) to boot a job",
                        device.file
                    )));
                }
                if b.method == "minimal" {
                    continue;
                }
                if style == BootStyle::Network && device.labboot.board_id.is_none() {
                    return Err(Error::config(format!(
                        "{}: the network-driven boot needs labboot.board_id (the identity on the board's card)",
                        device.file
                    )));
                }
                let commands: Vec<String> = match &b.commands {
                    Some(BootCommands::Inline(l)) => l.clone(),
                    Some(BootCommands::Named(n)) => device
                        .uboot
                        .as_ref()
                        .and_then(|u| u.stanzas.get(n))
                        .cloned()
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                let uses_bootx = commands.iter().any(|c| c.contains("{BOOTX}"));
                match kernel_cmd {
                    None if uses_bootx => {
                        return Err(Error::job(format!(
                            "{at}.commands: {{BOOTX}} needs the deployed kernel's type (zimage, image or uimage)"
                        )))
                    }
                    Some(cmd) if uses_bootx && !device.load_addresses.contains_key(cmd) => {
                        return Err(Error::config(format!(
                            "{}: parameters.{cmd}: no load addresses for {cmd}, which the job's kernel type needs",
                            device.file
                        )))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}
