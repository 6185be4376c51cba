//! An arm64 board in QEMU: `qemu-system-aarch64 -M virt -cpu cortex-a57` running Debian's
//! U-Boot as firmware, a raw image as its SD card (virtio-blk), a tap device as its NIC
//! (virtio-net) and its serial console on a unix socket.
//!
//! QEMU waits for the console to connect before it starts the CPU (`server=on,wait=on`), so
//! not a byte of output is lost. "Power off" is killing QEMU, which `Drop` also does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::console::Console;
use crate::netns::Netns;

/// Debian's U-Boot build for the QEMU arm64 virt board (package u-boot-qemu).
pub const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The QEMU binary for arm64 boards.
pub const QEMU_ARM64: &str = "qemu-system-aarch64";

/// How to start a board.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    /// Firmware (`-bios`), U-Boot by default; an empty path means none (QEMU loads `-kernel`).
    pub firmware: PathBuf,
    /// Raw disk image attached as virtio-blk (the SD card), if any.
    pub disk: Option<PathBuf>,
    /// Tap device (inside the namespace QEMU runs in) for the virtio-net NIC, if any.
    pub tap: Option<String>,
    /// MAC address of the NIC (QEMU's default otherwise).
    pub mac: Option<String>,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Further QEMU arguments (e.g. `-kernel`, `-initrd`, `-append`).
    pub extra_args: Vec<String>,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            firmware: PathBuf::from(UBOOT_ARM64),
            disk: None,
            tap: None,
            mac: None,
            memory_mib: 512,
            extra_args: Vec::new(),
        }
    }
}

/// A running QEMU board; killed on drop.
pub struct Board {
    child: Child,
    console: Console,
    _dir: tempfile::TempDir,
}

impl Board {
    /// Starts the board, inside `netns` when given (the tap must live there), and connects
    /// to its console.
    pub fn start(netns: Option<&Netns>, config: &BoardConfig) -> anyhow::Result<Board> {
        let dir = tempfile::Builder::new()
            .prefix("labboot-board-")
            .tempdir()
            .context("create board directory")?;
        let socket = dir.path().join("console.sock");
        let log = std::env::var_os("LABBOOT_CONSOLE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("labboot-console-{}.log", unique_suffix()));

        let mut cmd = match netns {
            Some(ns) => ns.command(QEMU_ARM64),
            None => Command::new(QEMU_ARM64),
        };
        cmd.args(qemu_args(config, &socket))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {QEMU_ARM64}"))?;
        let console = match Console::connect(&socket, &log, Duration::from_secs(20)) {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                let stderr = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default();
                return Err(e.context(format!(
                    "QEMU did not open its console; its stderr:\n{stderr}"
                )));
            }
        };
        Ok(Board {
            child,
            console,
            _dir: dir,
        })
    }

    /// Starts a board in `netns` that boots from `card` with its NIC on `tap`.
    pub fn boot_card(netns: &Netns, card: &Path, tap: &str) -> anyhow::Result<Board> {
        let config = BoardConfig {
            disk: Some(card.to_path_buf()),
            tap: Some(tap.to_string()),
            ..BoardConfig::default()
        };
        Board::start(Some(netns), &config)
    }

    /// Starts a board in `netns` with no firmware: QEMU loads `kernel` and `initrd` itself and
    /// boots them with `append` as the kernel command line, the NIC on `tap`.
    pub fn boot_kernel(
        netns: &Netns,
        tap: &str,
        kernel: &Path,
        initrd: &Path,
        append: &str,
    ) -> anyhow::Result<Board> {
        let config = BoardConfig {
            firmware: PathBuf::new(),
            tap: Some(tap.to_string()),
            extra_args: vec![
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                append.to_string(),
            ],
            ..BoardConfig::default()
        };
        Board::start(Some(netns), &config)
    }

    /// The serial console.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Powers the board off (kills QEMU) and returns what it printed on the console.
    pub fn power_off(mut self) -> String {
        self.kill();
        self.console.output()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.kill();
    }
}

fn qemu_args(config: &BoardConfig, socket: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-M",
        "virt",
        "-cpu",
        "cortex-a57",
        "-smp",
        "1",
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-monitor",
        "none",
    ]
    .map(String::from)
    .to_vec();
    args.push("-m".into());
    args.push(config.memory_mib.to_string());
    if !config.firmware.as_os_str().is_empty() {
        args.push("-bios".into());
        args.push(config.firmware.display().to_string());
    }
    args.push("-chardev".into());
    args.push(format!(
        "socket,id=console,path={},server=on,wait=on",
        socket.display()
    ));
    args.push("-serial".into());
    args.push("chardev:console".into());
    if let Some(disk) = &config.disk {
        args.push("-drive".into());
        args.push(format!("if=none,id=sd,format=raw,file={}", disk.display()));
        args.push("-device".into());
        args.push("virtio-blk-device,drive=sd".into());
    }
    match &config.tap {
        Some(tap) => {
            args.push("-netdev".into());
            args.push(format!("tap,id=net0,ifname={tap},script=no,downscript=no"));
            args.push("-device".into());
            let mut dev = "virtio-net-device,netdev=net0".to_string();
            if let Some(mac) = &config.mac {
                dev.push_str(&format!(",mac={mac}"));
            }
            args.push(dev);
        }
        None => {
            args.push("-nic".into());
            args.push("none".into());
        }
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
