//! `appliance.yaml`: everything `labboot serve` runs from, checked at start.
//!
//! The servers' sections (`dhcp:`, `tftp:`, `nbd:`, `nfs:`) keep the meaning they have for
//! `labboot dhcp|tftp|nbd|nfs --config`; the appliance adds the state directory, the database,
//! the HTTP API, the master image, the agent's timing and the boards. Every error is one line
//! naming the file and the field.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use netboot::dhcp::DhcpConfig;
use netboot::nbd::NbdConfig;
use netboot::nfs::NfsConfig;
use netboot::tftp::TftpConfig;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// The address boards reach the appliance at (default: `dhcp.server_ip`).
    #[serde(default)]
    pub server_ip: Option<IpAddr>,
    /// Database, job outputs, TFTP root of jobs (default `/var/lib/labboot`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `sqlite:FILE` (relative to `state_dir`; default `sqlite:labboot.db`), or a
    /// `postgresql://` URL that several appliances share.
    #[serde(default = "default_database")]
    pub database: String,
    /// This appliance's name in a lab of several (default: the host name). Boards belong to
    /// the appliance that serves their network; jobs record which appliance ran them.
    #[serde(default)]
    pub name: Option<String>,
    /// Seconds after its last heartbeat at which the other appliances declare this one lost
    /// and end its running jobs (default 30).
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// The HTTP API.
    #[serde(default)]
    pub http: HttpConfig,
    /// The master image idle boards boot.
    #[serde(default)]
    pub master: MasterConfig,
    /// The boards' agent.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Device-type templates for the boards' dictionaries (default: labboot's own).
    #[serde(default)]
    pub device_types: Option<PathBuf>,
    /// The lab's boards.
    #[serde(default)]
    pub boards: Vec<BoardConfig>,
    /// Architecture stamped on the rendered boot scripts (default arm64).
    #[serde(default)]
    pub board_script_arch: Option<String>,
    /// `dhcp:` (DHCP runs only when present).
    #[serde(default)]
    pub dhcp: Option<DhcpConfig>,
    /// `tftp:` (default: port 69 on all addresses, root `STATE_DIR/tftp`).
    #[serde(default)]
    pub tftp: Option<TftpConfig>,
    /// `nbd:` (default: port 10809 on all addresses).
    #[serde(default)]
    pub nbd: Option<NbdConfig>,
    /// `nfs:` (default: port 2049 on all addresses, portmap on 111).
    #[serde(default)]
    pub nfs: Option<NfsConfig>,
    /// `power_saving:` (absent: idle boards stay on).
    #[serde(default)]
    pub power_saving: Option<PowerSavingConfig>,
    /// `consoles:`: the boards' console logs (absent: 4 MiB, 3 rotated files).
    #[serde(default)]
    pub consoles: Option<ConsolesConfig>,
}

/// `consoles:`: the console logs (`STATE_DIR/consoles/<board>.log`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsolesConfig {
    /// A log is rotated when it reaches this size (default 4 MiB, at least 4096).
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated files kept, `.1` the newest (default 3).
    #[serde(default = "default_log_keep")]
    pub log_keep: usize,
}

/// A board's `console:`: exactly one of `command`, `tcp`, `tty` (absent: the device's
/// `connection_command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A command whose stdin/stdout is the line (`telnet ser2net 7001`), run with `sh -c`.
    #[serde(default)]
    pub command: Option<String>,
    /// `HOST:PORT` of a raw TCP port (ser2net's raw mode).
    #[serde(default)]
    pub tcp: Option<String>,
    /// A local serial port.
    #[serde(default)]
    pub tty: Option<TtyConfig>,
}

/// `console.tty`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtyConfig {
    /// The device (`/dev/ttyUSB0`).
    pub path: PathBuf,
    /// Baud rate (default 115200).
    #[serde(default = "default_baud")]
    pub baud: u32,
}

/// `power_saving:`: idle boards are powered off and woken when a job needs them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSavingConfig {
    /// Seconds an online, idle, unreserved board with nothing queued for its device type stays
    /// on before it is powered off.
    pub idle_off_after: u64,
}

/// `http:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of the API (default 127.0.0.1:8080).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens of people and scripts (at least one).
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            tokens: Vec::new(),
        }
    }
}

/// `master:`: the outputs of `labboot image build`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// The build's output directory (default `STATE_DIR/master`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Kernel, relative to `dir` (default `vmlinuz`).
    #[serde(default = "default_kernel")]
    pub kernel: PathBuf,
    /// Initrd, relative to `dir` (default `initrd.cpio.gz`).
    #[serde(default = "default_initrd")]
    pub initrd: PathBuf,
    /// Device tree, relative to `dir` (default: the board's own, `${fdtcontroladdr}`).
    #[serde(default)]
    pub dtb: Option<PathBuf>,
    /// Root image exported over NBD (copy-on-write per board), relative to `dir`
    /// (default `rootfs.squashfs`).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Kernel arguments before labboot's own (default `console=ttyAMA0 quiet cryptomgr.notests`).
    #[serde(default = "default_bootargs")]
    pub bootargs: String,
    /// U-Boot's boot command for the kernel (default `booti`; `bootz` for 32-bit ARM).
    #[serde(default = "default_boot_command")]
    pub boot_command: String,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            dir: None,
            kernel: default_kernel(),
            initrd: default_initrd(),
            dtb: None,
            root: default_root(),
            bootargs: default_bootargs(),
            boot_command: default_boot_command(),
        }
    }
}

/// `agent:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Approve boards that check in with an unknown identity (default false: they wait).
    #[serde(default)]
    pub accept_unknown: bool,
    /// Seconds a board may take to check in after a master boot before it is offline
    /// (default 300).
    #[serde(default = "default_checkin_timeout")]
    pub checkin_timeout: u64,
    /// Seconds a poll waits for work before answering 204 (default 25, at most 30).
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Seconds between the agent's check-ins (default 30; put on the kernel command line).
    #[serde(default = "default_interval")]
    pub interval: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            accept_unknown: false,
            checkin_timeout: default_checkin_timeout(),
            poll_seconds: default_poll_seconds(),
            interval: default_interval(),
        }
    }
}

/// One board in `boards:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// The identity on its card (`labboot sdcard --board-id`).
    pub id: String,
    /// The `board_token` on its card.
    pub token: String,
    /// Its device dictionary (`{% extends … %}`) or rendered device YAML.
    pub device: PathBuf,
    /// The MAC expected (informational; boards are known by identity).
    #[serde(default)]
    pub mac: Option<String>,
    /// How to power it (default: the device's power commands).
    #[serde(default)]
    pub power: Option<PowerConfig>,
    /// Its serial line, kept open by the appliance (default: the device's
    /// `connection_command`).
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
}

/// A board's power driver: `commands:` or `usb:` (default: the device's power commands).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// Shell commands (a virtual QEMU board's scripts, a PDU's client).
    #[serde(default)]
    pub commands: Option<PowerCommands>,
    /// A USB power switch: one ASCII digit written to a tty.
    #[serde(default)]
    pub usb: Option<UsbSwitch>,
}

/// `power.commands`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCommands {
    /// Power on.
    pub on: String,
    /// Power off.
    pub off: String,
    /// Power cycle (default: off, then on).
    #[serde(default)]
    pub reset: Option<String>,
}

/// `power.usb`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbSwitch {
    /// The switch's tty.
    pub tty: PathBuf,
    /// The digit that powers on (default `1`).
    #[serde(default = "default_on_digit")]
    pub on: char,
    /// The digit that powers off (default `0`).
    #[serde(default = "default_off_digit")]
    pub off: char,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/labboot")
}
fn default_lease_seconds() -> u64 {
    30
}
fn default_database() -> String {
    "sqlite:labboot.db".into()
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_kernel() -> PathBuf {
    "vmlinuz".into()
}
fn default_initrd() -> PathBuf {
    "initrd.cpio.gz".into()
}
fn default_root() -> PathBuf {
    "rootfs.squashfs".into()
}
fn default_bootargs() -> String {
    "console=ttyAMA0 quiet cryptomgr.notests".into()
}
fn default_boot_command() -> String {
    "booti".into()
}
fn default_checkin_timeout() -> u64 {
    300
}
fn default_poll_seconds() -> u64 {
    25
}
fn default_interval() -> u64 {
    30
}
fn default_log_max_bytes() -> u64 {
    super::consoles::log::DEFAULT_MAX_BYTES
}
fn default_log_keep() -> usize {
    super::consoles::log::DEFAULT_KEEP
}
fn default_baud() -> u32 {
    115200
}
fn default_on_digit() -> char {
    '1'
}
fn default_off_digit() -> char {
    '0'
}

impl ApplianceConfig {
    /// Reads and checks `path`; relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<ApplianceConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut c: ApplianceConfig =
            serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.resolve_paths(base);
        c.check().map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(c)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.state_dir);
        if let Some(d) = self.master.dir.as_mut() {
            abs(d);
        }
        if let Some(d) = self.device_types.as_mut() {
            abs(d);
        }
        for b in &mut self.boards {
            abs(&mut b.device);
        }
        if let Some(t) = self.tftp.as_mut() {
            abs(&mut t.root);
        }
        if let Some(f) = self.dhcp.as_mut().and_then(|d| d.lease_file.as_mut()) {
            abs(f);
        }
    }

    /// Field checks that serde cannot make.
    fn check(&self) -> anyhow::Result<()> {
        if self.http.tokens.is_empty() {
            bail!("http.tokens: give at least one API token");
        }
        for (i, t) in self.http.tokens.iter().enumerate() {
            if t.len() < 8 || !t.chars().all(|c| c.is_ascii_graphic()) {
                bail!("http.tokens[{i}]: a token is 8 or more printable ASCII characters");
            }
        }
        if !(1..=30).contains(&self.agent.poll_seconds) {
            bail!("agent.poll_seconds: between 1 and 30");
        }
        if self.agent.checkin_timeout == 0 {
            bail!("agent.checkin_timeout: more than 0 seconds");
        }
        if self
            .power_saving
            .as_ref()
            .is_some_and(|p| p.idle_off_after == 0)
        {
            bail!("power_saving.idle_off_after: more than 0 seconds");
        }
        if let Some(url) = self.database.strip_prefix("sqlite:") {
            if url.is_empty() {
                bail!("database: sqlite: needs a file name");
            }
        } else if !self.database.starts_with("postgres") {
            bail!(
                "database: '{}' is neither sqlite:FILE nor a postgresql:// URL",
                self.database
            );
        }
        if let Some(n) = &self.name {
            if n.is_empty()
                || n.len() > 63
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("name: '{n}': 1 to 63 letters, digits, '-', '_' or '.'");
            }
        }
        if self.lease_seconds < 3 {
            bail!("lease_seconds: at least 3 (heartbeats go every lease_seconds / 3)");
        }
        if self.api_only() {
            return Ok(());
        }
        if self.server_ip.is_none() && self.dhcp.is_none() {
            bail!("server_ip: give the address boards reach this host at (or a dhcp: section)");
        }
        if let Some(c) = &self.consoles {
            if c.log_max_bytes < 4096 {
                bail!("consoles.log_max_bytes: at least 4096");
            }
            if c.log_keep > 100 {
                bail!("consoles.log_keep: at most 100");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.boards.iter().enumerate() {
            uboot_scripts::bootstrap::check_board_id(&b.id)
                .map_err(|e| anyhow!("boards[{i}].id: {e}"))?;
            if !seen.insert(b.id.as_str()) {
                bail!("boards[{i}].id: board '{}' is listed twice", b.id);
            }
            if b.token.is_empty() || b.token.contains(char::is_whitespace) {
                bail!("boards[{i}].token: a token without spaces, as on the card");
            }
            if let Some(mac) = &b.mac {
                uboot_scripts::bootstrap::normalise_mac(mac)
                    .map_err(|e| anyhow!("boards[{i}].mac: {e}"))?;
            }
            if let Some(c) = &b.console {
                check_console(c).map_err(|e| anyhow!("boards[{i}].console: {e}"))?;
            }
            if let Some(p) = &b.power {
                if p.commands.is_some() == p.usb.is_some() {
                    bail!("boards[{i}].power: give either commands: or usb:");
                }
                if let Some(u) = &p.usb {
                    if !u.on.is_ascii_digit() || !u.off.is_ascii_digit() {
                        bail!("boards[{i}].power.usb: on and off are single digits");
                    }
                }
            }
        }
        Ok(())
    }

    /// A front end with no lab of its own: no servers and no boards (only the API and the
    /// dashboard of the whole lab, from the shared database).
    pub fn api_only(&self) -> bool {
        self.server_ip.is_none()
            && self.dhcp.is_none()
            && self.tftp.is_none()
            && self.nbd.is_none()
            && self.nfs.is_none()
            && self.boards.is_empty()
    }

    /// Whether the database is shared with other appliances (PostgreSQL).
    pub fn shared_database(&self) -> bool {
        !self.database.starts_with("sqlite:")
    }

    /// This appliance's name: `name:`, else the host name.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "labboot".into())
    }

    /// The address boards reach the appliance at.
    pub fn server_ip(&self) -> IpAddr {
        self.server_ip
            .or(self.dhcp.as_ref().map(|d| IpAddr::V4(d.server_ip)))
            .expect("checked at load")
    }

    /// The master's directory.
    pub fn master_dir(&self) -> PathBuf {
        self.master
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("master"))
    }

    /// Seconds → Duration of `agent.poll_seconds`.
    pub fn poll_timeout(&self) -> Duration {
        Duration::from_secs(self.agent.poll_seconds)
    }

    /// Checks what `--check` checks beyond the fields: the master's files and the boards'
    /// devices exist. Every problem, one per line.
    pub fn check_files(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.api_only() {
            return problems;
        }
        let dir = self.master_dir();
        let mut files = vec![
            ("master.kernel", &self.master.kernel),
            ("master.initrd", &self.master.initrd),
            ("master.root", &self.master.root),
        ];
        if let Some(d) = &self.master.dtb {
            files.push(("master.dtb", d));
        }
        for (field, f) in files {
            let p = dir.join(f);
            if !p.is_file() {
                problems.push(format!("{field}: {} does not exist", p.display()));
            }
        }
        for (i, b) in self.boards.iter().enumerate() {
            if !b.device.is_file() {
                problems.push(format!(
                    "boards[{i}].device: {} does not exist",
                    b.device.display()
                ));
            }
            if let Some(tty) = b
                .power
                .as_ref()
                .and_then(|p| p.usb.as_ref())
                .map(|u| &u.tty)
            {
                if !tty.exists() {
                    problems.push(format!(
                        "boards[{i}].power.usb.tty: {} does not exist",
                        tty.display()
                    ));
                }
            }
        }
        problems
    }
}

fn check_console(c: &ConsoleConfig) -> anyhow::Result<()> {
    let given = [c.command.is_some(), c.tcp.is_some(), c.tty.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        bail!("give exactly one of command:, tcp:, tty:");
    }
    if c.command.as_deref().is_some_and(|s| s.trim().is_empty()) {
        bail!("command: an empty command");
    }
    if let Some(addr) = &c.tcp {
        let port = addr
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
            bail!("tcp: '{addr}' is not HOST:PORT");
        }
    }
    if let Some(t) = &c.tty {
        if super::consoles::source::baud_constant(t.baud).is_none() {
            bail!("tty.baud: {} is not a baud rate termios knows", t.baud);
        }
        if !t.path.is_absolute() {
            bail!("tty.path: {} is not an absolute path", t.path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra_board: &str, extra: &str) -> anyhow::Result<ApplianceConfig> {
        let dir = tempfile::tempdir()?;
        let text = format!(
            "server_ip: 10.0.0.1\nhttp: {{tokens: [a-long-token]}}\n{extra}\nboards:\n- id: b1\n  token: t\n  device: b1.yaml\n{extra_board}"
        );
        let path = dir.path().join("appliance.yaml");
        std::fs::write(&path, text)?;
        ApplianceConfig::load(&path)
    }

    #[test]
    fn names_leases_and_front_ends() {
        let c = load("", "name: rack-2.east\nlease_seconds: 12").unwrap();
        assert_eq!(c.name(), "rack-2.east");
        assert_eq!(c.lease_seconds, 12);
        assert!(!c.api_only() && !c.shared_database());
        let e = load("", "name: 'two words'").unwrap_err().to_string();
        assert!(e.contains("name: 'two words'"), "{e}");
        let e = load("", "lease_seconds: 1").unwrap_err().to_string();
        assert!(e.contains("lease_seconds: at least 3"), "{e}");
        // No servers and no boards: a front end, which needs no server_ip and no master.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("front.yaml");
        std::fs::write(
            &path,
            "http: {tokens: [a-long-token]}\ndatabase: postgresql://lab@db.example/lab\n",
        )
        .unwrap();
        let c = ApplianceConfig::load(&path).unwrap();
        assert!(c.api_only() && c.shared_database());
        assert!(c.check_files().is_empty());
        assert!(!c.name().is_empty());
    }

    #[test]
    fn console_sections() {
        let c = load("", "").unwrap();
        assert!(c.boards[0].console.is_none() && c.consoles.is_none());
        let c = load(
            "  console: {tty: {path: /dev/ttyUSB0}}\n",
            "consoles: {log_max_bytes: 65536, log_keep: 5}",
        )
        .unwrap();
        let tty = c.boards[0].console.as_ref().unwrap().tty.as_ref().unwrap();
        assert_eq!(
            (tty.path.to_str(), tty.baud),
            (Some("/dev/ttyUSB0"), 115200)
        );
        assert_eq!(c.consoles.as_ref().unwrap().log_keep, 5);
        let c = load("  console: {tcp: 'ser2net.lab:7001'}\n", "").unwrap();
        assert_eq!(
            c.boards[0].console.as_ref().unwrap().tcp.as_deref(),
            Some("ser2net.lab:7001")
        );
        for (board, extra, want) in [
            (
                "  console: {}\n",
                "",
                "boards[0].console: give exactly one of",
            ),
            (
                "  console: {command: cat, tcp: 'h:1'}\n",
                "",
                "boards[0].console: give exactly one of",
            ),
            ("  console: {tcp: 'h'}\n", "", "tcp: 'h' is not HOST:PORT"),
            (
                "  console: {tcp: 'h:0'}\n",
                "",
                "tcp: 'h:0' is not HOST:PORT",
            ),
            (
                "  console: {tty: {path: /dev/ttyS0, baud: 1234}}\n",
                "",
                "tty.baud: 1234",
            ),
            ("  console: {telnet: x}\n", "", "unknown field `telnet`"),
            (
                "",
                "consoles: {log_max_bytes: 10}",
                "consoles.log_max_bytes",
            ),
        ] {
            let e = format!("{:#}", load(board, extra).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
