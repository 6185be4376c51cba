//! A virtual board wired the way a lab wires a real one, for `labboot dispatch`: power
//! commands and a console command, all shell scripts the device dictionary names.
//!
//! * `power-on` starts QEMU arm64 + U-Boot (daemonized) with the board's SD card, its NIC on a
//!   tap in the test's namespace and its serial line on a FIFO pair (`-serial pipe:`).
//! * `power-off` kills it; `hard-reset` is off then on.
//! * `console` joins the FIFO pair to its stdin and stdout. The FIFOs outlive QEMU, so the
//!   console stays open across power cycles, as a ser2net port does.
//! * [`LabBoard::set_bootdelay0`] gives the board a saved U-Boot environment with
//!   `bootdelay=0` (QEMU's second flash bank), as a lab sets up a board that boots from its
//!   network boot script: no autoboot countdown (and no chance to interrupt it).
//! * [`LabBoard::fail_next_power_on`] makes the next power-on start the CPU halted (`-S`): a
//!   board that stays silent, for retry tests.
//!
//! Dropping the board powers it off.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::binary::make_sdcard;
use crate::netns::Netns;
use crate::qemu::{QEMU_ARM64, UBOOT_ARM64};

/// A board the dispatcher powers and reaches through scripts.
pub struct LabBoard {
    dir: tempfile::TempDir,
    /// The identity on its card.
    pub board_id: String,
}

fn write_script(path: &Path, body: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}"))
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

impl LabBoard {
    /// A board with card identity `board_id`, NIC `mac` on `tap` inside `ns`.
    pub fn new(ns: &Netns, tap: &str, board_id: &str, mac: &str) -> anyhow::Result<LabBoard> {
        let dir = tempfile::Builder::new()
            .prefix("labboot-labboard-")
            .tempdir()?;
        let d = dir.path();
        make_sdcard(&d.join("card.img"), board_id, &["--mac", mac]);
        for fifo in ["console.in", "console.out"] {
            let p = d.join(fifo);
            let c = std::ffi::CString::new(p.to_string_lossy().as_bytes())?;
            // SAFETY: mkfifo(3) with a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                anyhow::bail!(
                    "mkfifo {}: {}",
                    p.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        let dd = d.display();
        write_script(
            &d.join("power-on"),
            &format!(
                "# QEMU arm64 + U-Boot, card, NIC on the tap, serial on the console FIFOs.\n\
                 D={dd}\n\
                 if [ -f $D/qemu.pid ] && kill -0 \"$(cat $D/qemu.pid)\" 2>/dev/null; then exit 0; fi\n\
                 extra=\n\
                 [ -e $D/flash1.img ] && extra=\"-drive if=pflash,unit=1,format=raw,file=$D/flash1.img\"\n\
                 if [ -e $D/fail-next ]; then rm -f $D/fail-next; extra=\"$extra -S\"; echo 'power-on: this boot stays halted'; fi\n\
                 exec ip netns exec {ns} {QEMU_ARM64} -M virt -cpu cortex-a57 -smp 1 -m 512 \\\n\
                 \t-display none -nodefaults -no-reboot -monitor none -bios {UBOOT_ARM64} \\\n\
                 \t-serial pipe:$D/console \\\n\
                 \t-drive if=none,id=sd,format=raw,file=$D/card.img -device virtio-blk-device,drive=sd \\\n\
                 \t-netdev tap,id=net0,ifname={tap},script=no,downscript=no \\\n\
                 \t-device virtio-net-device,netdev=net0,mac={mac} \\\n\
                 \t-daemonize -pidfile $D/qemu.pid $extra\n",
                ns = ns.name()
            ),
        )?;
        write_script(
            &d.join("power-off"),
            &format!(
                "D={dd}\n\
                 [ -f $D/qemu.pid ] || exit 0\n\
                 pid=$(cat $D/qemu.pid)\n\
                 kill \"$pid\" 2>/dev/null\n\
                 n=0\n\
                 while kill -0 \"$pid\" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done\n\
                 kill -9 \"$pid\" 2>/dev/null\n\
                 rm -f $D/qemu.pid\n"
            ),
        )?;
        write_script(
            &d.join("hard-reset"),
            &format!("{dd}/power-off && exec {dd}/power-on\n"),
        )?;
        write_script(
            &d.join("console"),
            &format!(
                "# Both FIFOs held open read-write: neither end ever sees EOF across power cycles.\n\
                 exec 3<>{dd}/console.out 4<>{dd}/console.in\n\
                 cat <&3 &\n\
                 exec cat >&4\n"
            ),
        )?;
        Ok(LabBoard {
            dir,
            board_id: board_id.to_string(),
        })
    }

    /// The board's directory (scripts, card, FIFOs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A script of the board by name (`power-on`, `power-off`, `hard-reset`, `console`).
    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The device dictionary for this board, extending `device_type` (`labboot-qemu-arm64`),
    /// with `boot` = `serial` or `network` and further `{% set %}` lines.
    pub fn dictionary(&self, device_type: &str, boot: &str, extra: &[(&str, &str)]) -> String {
        let mut s = format!("{{% extends '{device_type}.jinja2' %}}\n");
        for (k, v) in [
            ("connection_command", self.script("console")),
            ("power_on_command", self.script("power-on")),
            ("power_off_command", self.script("power-off")),
            ("hard_reset_command", self.script("hard-reset")),
        ] {
            s.push_str(&format!("{{% set {k} = '{}' %}}\n", v.display()));
        }
        s.push_str(&format!("{{% set board_id = '{}' %}}\n", self.board_id));
        s.push_str(&format!("{{% set labboot_boot = '{boot}' %}}\n"));
        for (k, v) in extra {
            s.push_str(&format!("{{% set {k} = {v} %}}\n"));
        }
        s
    }

    /// Gives the board a saved environment: U-Boot's built-in one with `bootdelay=0`.
    pub fn set_bootdelay0(&self) -> anyhow::Result<()> {
        let blob = std::fs::read(UBOOT_ARM64)?;
        let find = |hay: &[u8], needle: &[u8], from: usize| {
            hay[from..]
                .windows(needle.len())
                .position(|w| w == needle)
                .map(|p| p + from)
        };
        let at = find(&blob, b"bootdelay=2\0", 0).context("no bootdelay=2 in u-boot.bin")?;
        let start = blob[..at]
            .windows(9)
            .rposition(|w| w == b"\0bootcmd=")
            .context("no built-in environment in u-boot.bin")?
            + 1;
        let end = find(&blob, b"\0\0", at).context("unterminated built-in environment")?;
        let mut text = String::new();
        for v in blob[start..end]
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
        {
            let v = String::from_utf8_lossy(v);
            text.push_str(if v == "bootdelay=2" {
                "bootdelay=0"
            } else {
                &v
            });
            text.push('\n');
        }
        let d = self.dir.path();
        std::fs::write(d.join("env.txt"), text)?;
        let st = Command::new("mkenvimage")
            .args(["-s", "0x40000", "-o"])
            .arg(d.join("env.bin"))
            .arg(d.join("env.txt"))
            .status()
            .context("run mkenvimage (u-boot-tools)")?;
        anyhow::ensure!(st.success(), "mkenvimage failed");
        let mut flash = std::fs::read(d.join("env.bin"))?;
        flash.resize(64 << 20, 0);
        std::fs::write(d.join("flash1.img"), flash)?;
        Ok(())
    }

    /// The next power-on leaves the CPU halted: the board prints nothing.
    pub fn fail_next_power_on(&self) {
        std::fs::write(self.dir.path().join("fail-next"), b"").expect("write fail-next marker");
    }

    /// Whether QEMU is running.
    pub fn is_powered(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.dir.path().join("qemu.pid")) else {
            return false;
        };
        Command::new("kill")
            .args(["-0", pid.trim()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for LabBoard {
    fn drop(&mut self) {
        let _ = Command::new(self.script("power-off")).status();
    }
}
