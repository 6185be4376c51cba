//! `labboot dhcp`: the DHCP server alone, from flags and/or the `dhcp:` section of a YAML file.
//!
//! Flags override the file, so an admin can reuse the appliance config and change one value.
//! Bad settings end with one line naming the field (`dhcp.pool: …`), before anything is bound.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use netboot::dhcp::{BindingConfig, DhcpConfig, DhcpSettings};

/// Arguments of `labboot dhcp`.
#[derive(Debug, clap::Args)]
pub struct DhcpArgs {
    /// The one interface to serve (SO_BINDTODEVICE); nothing is answered on others.
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// This server's address on that interface (option 54, default next-server).
    #[arg(long, value_name = "IP")]
    pub server_ip: Option<Ipv4Addr>,
    /// The dynamic pool, inclusive: START-END.
    #[arg(long, value_name = "START-END")]
    pub pool: Option<String>,
    /// Append-only lease log; leases survive restarts and SIGKILL. Without it: memory only.
    #[arg(long, value_name = "PATH")]
    pub lease_file: Option<PathBuf>,
    /// Default boot file (option 67 and the header's file field).
    #[arg(long, value_name = "NAME")]
    pub boot_file: Option<String>,
    /// Boot file for one architecture: arm64|arm32|x86-bios|x64-efi=NAME (repeatable).
    #[arg(long = "arch-boot-file", value_name = "ARCH=NAME")]
    pub arch_boot_files: Vec<String>,
    /// Subnet mask (option 1); default 255.255.255.0.
    #[arg(long, value_name = "MASK", conflicts_with = "prefix")]
    pub netmask: Option<Ipv4Addr>,
    /// Subnet prefix length, instead of --netmask.
    #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(1..=30))]
    pub prefix: Option<u8>,
    /// Router (option 3).
    #[arg(long, value_name = "IP")]
    pub router: Option<Ipv4Addr>,
    /// DNS server (option 6; repeatable).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub lease_time: Option<u32>,
    /// TFTP server address (siaddr), default the server address.
    #[arg(long, value_name = "IP")]
    pub next_server: Option<Ipv4Addr>,
    /// Fixed address by MAC: aa:bb:cc:dd:ee:ff=IP (repeatable).
    #[arg(long = "bind", value_name = "MAC=IP")]
    pub bind_mac: Vec<String>,
    /// Fixed address by identity: BOARD_ID=IP or uuid:UUID=IP (repeatable).
    #[arg(long = "bind-id", value_name = "BOARD=IP")]
    pub bind_id: Vec<String>,
    /// Ping-check: before offering a new address, send it an ICMP echo and wait this long for an
    /// answer (an answering address is quarantined and another one offered); 0 = off (default).
    #[arg(long, value_name = "MS")]
    pub ping_check_ms: Option<u32>,
    /// YAML file whose `dhcp:` section gives the settings (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn split_pair<'a>(flag: &str, value: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    // Split at the last `=`: the left side may not contain one, the right side never does.
    value
        .rsplit_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow!("{flag} {value}: expected KEY=VALUE"))
}

fn parse_ip(flag: &str, value: &str) -> anyhow::Result<Ipv4Addr> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag}: `{value}` is not an IPv4 address"))
}

/// Builds the configuration: the file's `dhcp:` section (if any), then the flags on top.
pub fn config_from_args(args: &DhcpArgs) -> anyhow::Result<DhcpConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            DhcpConfig::from_yaml_section(&text)
                .map_err(|e| anyhow!("config file {}: {e}", path.display()))?
        }
        None => {
            let missing = |flag: &str| anyhow!("{flag} is required (or give --config FILE)");
            DhcpConfig {
                interface: args
                    .interface
                    .clone()
                    .ok_or_else(|| missing("--interface"))?,
                server_ip: args.server_ip.ok_or_else(|| missing("--server-ip"))?,
                pool: args.pool.clone().ok_or_else(|| missing("--pool"))?,
                netmask: None,
                router: None,
                dns: Vec::new(),
                lease_time: netboot::dhcp::config::DEFAULT_LEASE_TIME,
                lease_file: None,
                boot_file: None,
                arch_boot_files: Default::default(),
                next_server: None,
                tftp_server_name: None,
                bindings: Vec::new(),
                ping_check_ms: 0,
            }
        }
    };
    if let Some(v) = &args.interface {
        config.interface = v.clone();
    }
    if let Some(v) = args.server_ip {
        config.server_ip = v;
    }
    if let Some(v) = &args.pool {
        config.pool = v.clone();
    }
    if let Some(v) = &args.lease_file {
        config.lease_file = Some(v.clone());
    }
    if let Some(v) = &args.boot_file {
        config.boot_file = Some(v.clone());
    }
    for pair in &args.arch_boot_files {
        let (arch, file) = split_pair("--arch-boot-file", pair)?;
        config
            .arch_boot_files
            .insert(arch.to_string(), file.to_string());
    }
    if let Some(v) = args.netmask {
        config.netmask = Some(v);
    }
    if let Some(bits) = args.prefix {
        config.netmask = Some(Ipv4Addr::from(u32::MAX << (32 - u32::from(bits))));
    }
    if let Some(v) = args.router {
        config.router = Some(v);
    }
    if !args.dns.is_empty() {
        config.dns = args.dns.clone();
    }
    if let Some(v) = args.lease_time {
        config.lease_time = v;
    }
    if let Some(v) = args.next_server {
        config.next_server = Some(v);
    }
    if let Some(v) = args.ping_check_ms {
        config.ping_check_ms = v;
    }
    for pair in &args.bind_mac {
        let (mac, ip) = split_pair("--bind", pair)?;
        config.bindings.push(BindingConfig {
            mac: Some(mac.to_string()),
            id: None,
            ip: Some(parse_ip("--bind", ip)?),
            boot_file: None,
        });
    }
    for pair in &args.bind_id {
        let (id, ip) = split_pair("--bind-id", pair)?;
        config.bindings.push(BindingConfig {
            mac: None,
            id: Some(id.to_string()),
            ip: Some(parse_ip("--bind-id", ip)?),
            boot_file: None,
        });
    }
    Ok(config)
}

/// Runs `labboot dhcp` until SIGINT or SIGTERM.
pub fn run(args: DhcpArgs) -> anyhow::Result<()> {
    let settings = DhcpSettings::try_from(config_from_args(&args)?)?;
    // One socket loop: a current-thread runtime avoids cross-thread wake-ups; the lease log's
    // fsync still runs on tokio's blocking pool.
    let runtime = crate::runtime::current_thread()?;
    runtime.block_on(async {
        let shutdown = crate::shutdown::on_signal()?;
        netboot::dhcp::serve(settings, shutdown)
            .await
            .context("dhcp server")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DhcpArgs,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<DhcpSettings> {
        let cli = Cli::try_parse_from(std::iter::once("dhcp").chain(argv.iter().copied()))?;
        Ok(DhcpSettings::try_from(config_from_args(&cli.args)?)?)
    }

    #[test]
    fn flags_build_settings() {
        let s = parse(&[
            "--interface",
            "lab0",
            "--server-ip",
            "10.1.0.1",
            "--pool",
            "10.1.0.10-10.1.0.20",
            "--prefix",
            "16",
            "--boot-file",
            "boot.scr",
            "--bind",
            "52:54:00:00:00:01=10.1.0.5",
            "--bind-id",
            "board7=10.1.0.6",
            "--arch-boot-file",
            "arm32=a32.scr",
        ])
        .unwrap();
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(s.boot_file(), Some("boot.scr"));
        assert_eq!(s.bindings().len(), 2);
        assert_eq!(
            s.arch_boot_file(netboot::dhcp::Arch::Arm32),
            Some("a32.scr")
        );
    }

    #[test]
    fn errors_are_one_clear_line() {
        let e = parse(&["--interface", "lab0", "--server-ip", "10.1.0.1"]).unwrap_err();
        assert_eq!(e.to_string(), "--pool is required (or give --config FILE)");
        let e = parse(&[
            "--interface",
            "lab0",
            "--server-ip",
            "10.1.0.1",
            "--pool",
            "10.2.0.1-10.2.0.9",
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("dhcp.pool: "), "{e}");
        let e = parse(&[
            "--interface",
            "lab0",
            "--server-ip",
            "10.1.0.1",
            "--pool",
            "10.1.0.10-10.1.0.20",
            "--bind",
            "nonsense",
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "--bind nonsense: expected KEY=VALUE");
    }

    #[test]
    fn config_file_then_flags() {
        let path =
            std::env::temp_dir().join(format!("labboot-dhcp-cli-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "dhcp:\n  interface: lab0\n  server_ip: 10.1.0.1\n  pool: 10.1.0.10-10.1.0.20\n  lease_time: 600\n  ping_check_ms: 250\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = parse(&["--config", p, "--lease-time", "900"]).unwrap();
        assert_eq!(s.interface(), "lab0");
        assert_eq!(s.lease_time(), 900);
        assert_eq!(s.ping_check(), Some(std::time::Duration::from_millis(250)));
        let s = parse(&["--config", p, "--ping-check-ms", "0"]).unwrap();
        assert_eq!(s.ping_check(), None, "0 turns the check off");
        let e = parse(&["--config", p, "--ping-check-ms", "60000"]).unwrap_err();
        assert!(e.to_string().starts_with("dhcp.ping_check_ms: "), "{e}");
        std::fs::write(&path, "dhcp:\n  interface: lab0\n  bogus: 1\n").unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
