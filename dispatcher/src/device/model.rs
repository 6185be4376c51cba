//! The checked device: what the pipeline builder and the boot actions read.

use std::collections::BTreeMap;
use std::time::Duration;

/// A rendered device, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// The file it came from (for messages).
    pub file: String,
    /// `device_type` (LAVA writes it as the template's name; rendered files may leave it empty).
    pub device_type: String,
    /// `hostname`, if given.
    pub hostname: String,
    /// `commands.connect` (or the first of `commands.connections`): the console command.
    pub connection_command: Option<String>,
    /// `commands.power_on`.
    pub power_on_command: Option<String>,
    /// `commands.power_off`.
    pub power_off_command: Option<String>,
    /// `commands.hard_reset`.
    pub hard_reset_command: Option<String>,
    /// `character_delays.boot`: delay between characters typed to the bootloader.
    pub boot_character_delay: Duration,
    /// `constants.u-boot` and the general constants.
    pub constants: Constants,
    /// `actions.boot.methods.u-boot`, if the device boots with U-Boot.
    pub uboot: Option<UbootMethod>,
    /// `actions.deploy.methods`: the deploy methods the device supports (`tftp`, `nfs`, …).
    pub deploy_methods: Vec<String>,
    /// `actions.deploy.parameters.mkimage_arch` (`arm`, `arm64`): for uImage headers.
    pub mkimage_arch: Option<String>,
    /// `actions.deploy.parameters.add_header` (`u-boot`, `raw`, or none): decides, as in LAVA,
    /// whether `{BOOTX}` passes the ramdisk, and with `:${initrd_size}` (raw) or not (u-boot).
    pub add_header: Option<String>,
    /// `parameters.<bootcmd>` addresses, by boot command (`bootz`, `booti`, `bootm`) and by kernel
    /// type (`zimage`, `image`, `uimage`).
    pub load_addresses: BTreeMap<String, LoadAddresses>,
    /// `timeouts.actions`: by action name.
    pub action_timeouts: BTreeMap<String, Duration>,
    /// `timeouts.connections`: by action name.
    pub connection_timeouts: BTreeMap<String, Duration>,
    /// labboot's own keys (`labboot:` section), if any.
    pub labboot: LabbootDevice,
}

/// Where U-Boot loads things, for one boot command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadAddresses {
    /// `kernel`
    pub kernel: String,
    /// `ramdisk`
    pub ramdisk: String,
    /// `dtb`
    pub dtb: String,
}

/// `constants`: bootloader and OS strings the boot actions wait for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constants {
    /// `u-boot.interrupt-prompt` ("Hit any key to stop autoboot").
    pub interrupt_prompt: String,
    /// `u-boot.interrupt-character` (" ").
    pub interrupt_character: String,
    /// `u-boot.interrupt-newline`.
    pub interrupt_newline: bool,
    /// `u-boot.interrupt_ctrl_list`: control characters sent instead (e.g. `c` → Ctrl-C).
    pub interrupt_ctrl_list: Vec<String>,
    /// `u-boot.final-message` ("Starting kernel").
    pub final_message: String,
    /// `u-boot.error-messages`: regular expressions that fail the boot.
    pub error_messages: Vec<String>,
    /// `kernel-start-message` ("Linux version [0-9]").
    pub kernel_start_message: String,
    /// `default-shell-prompt` ("lava-test: # ").
    pub default_shell_prompt: String,
    /// `shutdown-message`.
    pub shutdown_message: String,
    /// `failure_retry` default.
    pub failure_retry: u32,
    /// `posix.lava_test_results_dir` ("/lava-%s").
    pub lava_test_results_dir: String,
    /// `posix.lava_test_sh_cmd` ("/bin/sh").
    pub lava_test_sh_cmd: String,
}

/// `actions.boot.methods.u-boot`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UbootMethod {
    /// `parameters.bootloader_prompt` ("=>").
    pub bootloader_prompt: String,
    /// `parameters.interrupt_prompt`, overriding the constant when given.
    pub interrupt_prompt: Option<String>,
    /// `parameters.interrupt_char`, overriding the constant when given.
    pub interrupt_char: Option<String>,
    /// `parameters.needs_interrupt` (default true).
    pub needs_interrupt: bool,
    /// The command stanzas (`ramdisk`, `nfs`, `nbd`, …) by name.
    pub stanzas: BTreeMap<String, Vec<String>>,
}

/// How the board is booted by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootStyle {
    /// LAVA's: interrupt U-Boot on the console and type the commands.
    #[default]
    Serial,
    /// labboot's: the commands become the board's network boot script; the console is read only.
    Network,
}

impl BootStyle {
    /// As written in a device (`labboot.boot`) or a job's context (`labboot_boot`).
    pub fn as_str(self) -> &'static str {
        match self {
            BootStyle::Serial => "serial",
            BootStyle::Network => "network",
        }
    }
}

/// The device's `labboot:` section: what LAVA's format has no key for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabbootDevice {
    /// `board_id`: the identity the board's card carries (for the network-driven boot).
    pub board_id: Option<String>,
    /// `boot`: `serial` (default) or `network`.
    pub boot: BootStyle,
    /// `check_exit_codes`: after each typed U-Boot command, check its exit code with an echo marker.
    pub check_exit_codes: bool,
}
