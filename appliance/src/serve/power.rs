//! Board power: the device's own commands (a PDU client, the virtual QEMU board's scripts), or
//! a USB power switch that takes one ASCII digit on its tty. The dispatcher runs the same
//! commands inside jobs; the appliance runs them for idle and maintenance boards.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use dispatcher::device::Device;

use super::config::PowerConfig;

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power on.
    On,
    /// Power off.
    Off,
    /// Off then on (or the reset command).
    Cycle,
}

impl PowerAction {
    /// `on`, `off` or `cycle`.
    pub fn parse(s: &str) -> Option<PowerAction> {
        match s {
            "on" => Some(PowerAction::On),
            "off" => Some(PowerAction::Off),
            "cycle" | "reset" => Some(PowerAction::Cycle),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
        }
    }
}

/// How one board is powered.
#[derive(Debug, Clone)]
pub enum PowerDriver {
    /// Shell commands run with `sh -c`.
    Commands {
        /// Power on.
        on: Option<String>,
        /// Power off.
        off: Option<String>,
        /// Hard reset.
        reset: Option<String>,
    },
    /// One digit written to a tty.
    Usb {
        /// The switch's tty.
        tty: PathBuf,
        /// Digit for on.
        on: char,
        /// Digit for off.
        off: char,
    },
}

impl PowerDriver {
    /// The board's driver: its `power:` config, else its device's power commands.
    pub fn for_board(config: Option<&PowerConfig>, device: Option<&Device>) -> PowerDriver {
        match config {
            Some(PowerConfig {
                commands: Some(c), ..
            }) => PowerDriver::Commands {
                on: Some(c.on.clone()),
                off: Some(c.off.clone()),
                reset: c.reset.clone(),
            },
            Some(PowerConfig { usb: Some(u), .. }) => PowerDriver::Usb {
                tty: u.tty.clone(),
                on: u.on,
                off: u.off,
            },
            _ => PowerDriver::Commands {
                on: device.and_then(|d| d.power_on_command.clone()),
                off: device.and_then(|d| d.power_off_command.clone()),
                reset: device.and_then(|d| d.hard_reset_command.clone()),
            },
        }
    }

    /// Runs `action` (blocking); the error names the command or tty.
    pub fn run(&self, action: PowerAction) -> anyhow::Result<()> {
        match (self, action) {
            (PowerDriver::Commands { reset: Some(r), .. }, PowerAction::Cycle) => shell(r),
            (PowerDriver::Commands { on, off, .. }, PowerAction::Cycle) => {
                self.run(PowerAction::Off).ok();
                let _ = off;
                match on {
                    Some(c) => shell(c),
                    None => bail!("the board has no power-on command"),
                }
            }
            (PowerDriver::Commands { on, .. }, PowerAction::On) => match on {
                Some(c) => shell(c),
                None => bail!("the board has no power-on command"),
            },
            (PowerDriver::Commands { off, .. }, PowerAction::Off) => match off {
                Some(c) => shell(c),
                None => bail!("the board has no power-off command"),
            },
            (PowerDriver::Usb { tty, on, off }, a) => {
                let write = |digit: char| -> anyhow::Result<()> {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(tty)
                        .with_context(|| format!("power switch {}", tty.display()))?;
                    f.write_all(&[digit as u8])
                        .with_context(|| format!("power switch {}", tty.display()))
                };
                match a {
                    PowerAction::On => write(*on),
                    PowerAction::Off => write(*off),
                    PowerAction::Cycle => {
                        write(*off)?;
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        write(*on)
                    }
                }
            }
        }
    }
}

fn shell(cmd: &str) -> anyhow::Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("cannot run '{cmd}'"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "'{cmd}' failed ({}){}",
            out.status,
            err.lines()
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_switch_gets_one_digit_per_action() {
        let dir = tempfile::tempdir().unwrap();
        let tty = dir.path().join("tty");
        std::fs::write(&tty, b"").unwrap();
        let d = PowerDriver::for_board(
            Some(&PowerConfig {
                commands: None,
                usb: Some(super::super::config::UsbSwitch {
                    tty: tty.clone(),
                    on: '1',
                    off: '0',
                }),
            }),
            None,
        );
        d.run(PowerAction::On).unwrap();
        assert_eq!(std::fs::read(&tty).unwrap(), b"1");
        d.run(PowerAction::Off).unwrap();
        assert_eq!(std::fs::read(&tty).unwrap(), b"0");
    }

    #[test]
    fn commands_run_and_failures_name_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let d = PowerDriver::Commands {
            on: Some(format!("echo on >> {}", log.display())),
            off: Some(format!("echo off >> {}", log.display())),
            reset: None,
        };
        d.run(PowerAction::Cycle).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "off\non\n");
        let bad = PowerDriver::Commands {
            on: Some("echo nope >&2; exit 3".into()),
            off: None,
            reset: None,
        };
        let e = bad.run(PowerAction::On).unwrap_err().to_string();
        assert!(e.contains("exit 3") && e.contains("nope"), "{e}");
        assert!(bad
            .run(PowerAction::Off)
            .unwrap_err()
            .to_string()
            .contains("no power-off"));
    }
}
