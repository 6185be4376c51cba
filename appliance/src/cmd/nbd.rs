//! `labboot nbd`: the NBD server alone, for admins and benchmarks.
//!
//! Settings come from flags, or from the `nbd:` section of a labboot YAML config (`--config`)
//! with flags overriding its scalars and `--export` flags adding to its export list; either way
//! they pass through [`NbdSettings`]' checks, so a bad value is one line naming the field. The
//! command builds its own tokio runtime and stops cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::anyhow;
use netboot::nbd::{ExportConfig, ExportMode, NbdConfig, NbdServer, NbdSettings};

/// Arguments of `labboot nbd`.
#[derive(Debug, clap::Args)]
pub struct NbdArgs {
    /// Address and port to listen on [default: 0.0.0.0:10809].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// An export: NAME=PATH, optionally followed by :ro (default), :cow or :rw (repeatable).
    #[arg(long = "export", value_name = "NAME=PATH[:MODE]")]
    pub exports: Vec<String>,
    /// Connections served at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Payload bytes all connections together may hold (reads being sent, writes being
    /// applied); a request over it waits [default: 256M].
    #[arg(long, value_name = "SIZE")]
    pub max_bytes_in_flight: Option<String>,
    /// Memory of one `cow` connection's overlay before it spills to a temp file, e.g. 64M.
    #[arg(long, value_name = "SIZE")]
    pub cow_memory: Option<String>,
    /// Everything one `cow` connection may write (memory + temp file); beyond: ENOSPC, e.g. 4G.
    #[arg(long, value_name = "SIZE")]
    pub cow_limit: Option<String>,
    /// Directory of the `cow` overlays' temp files [default: the system's temp directory].
    #[arg(long, value_name = "DIR")]
    pub cow_spill_dir: Option<PathBuf>,
    /// Read settings from the `nbd:` section of this YAML file; flags override or add to them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl NbdArgs {
    /// Merges the config file (if any) and the flags into one unchecked config.
    fn to_config(&self) -> anyhow::Result<NbdConfig> {
        let mut config = match &self.config {
            Some(path) => crate::config_file::read_section(path, "nbd")?,
            None => NbdConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = &self.max_bytes_in_flight {
            config.max_bytes_in_flight = parse_size("--max-bytes-in-flight", v)?;
        }
        if let Some(v) = &self.cow_memory {
            config.cow_memory_bytes = parse_size("--cow-memory", v)?;
        }
        if let Some(v) = &self.cow_limit {
            config.cow_limit_bytes = parse_size("--cow-limit", v)?;
        }
        if let Some(v) = &self.cow_spill_dir {
            config.cow_spill_dir = Some(v.clone());
        }
        for spec in &self.exports {
            config.exports.push(parse_export(spec)?);
        }
        if config.exports.is_empty() {
            return Err(anyhow!(
                "no exports: give --export NAME=PATH[:ro|:cow|:rw] (or nbd.exports in --config)"
            ));
        }
        Ok(config)
    }
}

/// Parses `NAME=PATH[:ro|:cow|:rw]`; a path that itself ends in `:xyz` keeps it unless xyz is a mode.
fn parse_export(spec: &str) -> anyhow::Result<ExportConfig> {
    let (name, rest) = spec
        .split_once('=')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .ok_or_else(|| anyhow!("--export {spec}: expected NAME=PATH[:ro|:cow|:rw]"))?;
    let (path, mode) = match rest.rsplit_once(':') {
        Some((path, mode)) if !path.is_empty() && ["ro", "cow", "rw"].contains(&mode) => {
            (path, mode.parse().map_err(|e: String| anyhow!(e))?)
        }
        _ => (rest, ExportMode::ReadOnly),
    };
    Ok(ExportConfig::new(name, path, mode))
}

/// Parses a size flag (`512K`, `64M`, `4G`), naming the flag when it is wrong.
fn parse_size(flag: &str, value: &str) -> anyhow::Result<u64> {
    netboot::common::parse_size(value).map_err(|e| anyhow!("{flag}: {e}"))
}

/// Runs `labboot nbd`.
pub fn run(args: NbdArgs) -> anyhow::Result<()> {
    let settings = NbdSettings::try_from(args.to_config()?)?;
    let server = NbdServer::new(settings)?;
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(async move {
        let listener = server.bind().await?;
        server.run(listener, crate::shutdown::on_signal()?).await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_specs_parse_with_and_without_mode() {
        let e = parse_export("master=/srv/m.img").unwrap();
        assert_eq!((e.name.as_str(), e.mode.as_str()), ("master", "ro"));
        let e = parse_export("job=/srv/j.img:rw").unwrap();
        assert_eq!(
            (e.path.to_str(), e.mode.as_str()),
            (Some("/srv/j.img"), "rw")
        );
        let e = parse_export("odd=/srv/a:b").unwrap();
        assert_eq!((e.path.to_str(), e.mode.as_str()), (Some("/srv/a:b"), "ro"));
        assert!(parse_export("=/x").is_err());
        assert!(parse_export("noequals").is_err());
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("f", "4096").unwrap(), 4096);
        assert_eq!(parse_size("f", "64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("f", "2g").unwrap(), 2 << 30);
        assert!(parse_size("f", "12Q")
            .unwrap_err()
            .to_string()
            .contains("suffix"));
        assert!(parse_size("f", "M").is_err());
        assert!(parse_size("f", "99999999999T").is_err());
    }
}
