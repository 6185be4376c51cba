//! Argument parsing and error reporting for `labboot`.
//!
//! Every error reaches the user as one line, `labboot: <error>: <cause>: …`, on stderr with exit
//! status 1; usage errors are clap's and exit with status 2. Nothing panics on bad input.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::ApiArgs;
use crate::cmd;

/// labboot: a netboot appliance for board test labs.
///
/// Boards boot over the network from a tiny SD card that holds only U-Boot, a generic
/// bootstrap script and an identity file; labboot serves everything else.
#[derive(Debug, Parser)]
#[command(name = "labboot", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug` or `netboot::tftp=debug` (also RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines: time, level, target, message and fields.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and `fields` (with `message`).
    Json,
}

/// The subcommands of `labboot`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// U-Boot script images: make them like `mkimage -T script`, list them like `dumpimage -l`.
    #[command(subcommand)]
    Uboot(cmd::uboot::UbootCommand),
    /// Write the tiny SD-card image of one board: MBR, one FAT partition, boot.scr and labboot.id.
    Sdcard(cmd::sdcard::SdcardArgs),
    /// Run the DHCP server alone.
    Dhcp(cmd::dhcp::DhcpArgs),
    /// Run the TFTP server alone.
    Tftp(cmd::tftp::TftpArgs),
    /// Run the NBD server alone.
    Nbd(cmd::nbd::NbdArgs),
    /// Run the NFSv3 server alone.
    Nfs(cmd::nfs::NfsArgs),
    /// Master images: build the root filesystem, initrd and kernel of a recipe.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Run (or --validate) one LAVA test job on one board, with the servers it needs in-process.
    Dispatch(cmd::dispatch::DispatchArgs),
    /// Run the appliance: every server, the board registry, the job queue and the HTTP API.
    Serve(cmd::serve::ServeArgs),
    /// Jobs on a running appliance: submit, list, show, follow logs, cancel.
    Job {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: cmd::job::JobCommand,
    },
    /// Boards of a running appliance: list, show, approve, power, maintenance.
    Board {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: cmd::board::BoardCommand,
    },
    /// Print the shell completion script of `labboot` (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
    /// Write the man pages of `labboot` and its subcommands (used to build the Debian package).
    #[command(hide = true)]
    Man(cmd::completions::ManArgs),
}

/// Parses the command line, runs the command and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref(), cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("labboot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Uboot(c) => cmd::uboot::run(c),
        Command::Sdcard(a) => cmd::sdcard::run(a),
        Command::Dhcp(a) => cmd::dhcp::run(a),
        Command::Tftp(a) => cmd::tftp::run(a),
        Command::Nbd(a) => cmd::nbd::run(a),
        Command::Nfs(a) => cmd::nfs::run(a),
        Command::Image(c) => cmd::image::run(c),
        Command::Dispatch(a) => cmd::dispatch::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Job { api, command } => cmd::job::run(api, command),
        Command::Board { api, command } => cmd::board::run(api, command),
        Command::Completions(a) => cmd::completions::completions(a),
        Command::Man(a) => cmd::completions::man(a),
    }
}

fn init_logging(filter: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    if format == LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(true)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .init();
}
