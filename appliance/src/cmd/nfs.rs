//! `labboot nfs`: the NFSv3 server alone, for admins and benchmarks.
//!
//! Settings come from flags, or from the `nfs:` section of a labboot YAML config (`--config`)
//! with flags overriding it (`--export` adds to the config's exports); either way they pass
//! through [`NfsSettings`]' checks, so a bad value is one line naming the field. The command
//! builds its own tokio runtime and stops cleanly on Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use netboot::nfs::{ExportConfig, NfsConfig, NfsServer, NfsSettings};

/// NFS's well-known port, used when `--listen` gives an address alone.
const NFS_PORT: u16 = 2049;

/// Arguments of `labboot nfs`.
#[derive(Debug, clap::Args)]
pub struct NfsArgs {
    /// Address to listen on, with or without a port [default: 0.0.0.0:2049].
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// An export: `/NAME=DIR`, read-only unless followed by `:rw` (`:ro` is accepted), then
    /// optionally `,no_root_squash` or `,root_squash`. Root is squashed (acts as nobody) on an
    /// `rw` export by default, since one given here is open to every network: a board's root
    /// filesystem needs `:rw,no_root_squash` (or `clients:` in the config). Repeatable.
    #[arg(long = "export", value_name = "/NAME=DIR[:ro|:rw][,no_root_squash]")]
    pub exports: Vec<String>,
    /// Also answer portmap (rpcbind v2) GETPORT for NFS and MOUNT on this address, e.g.
    /// `0.0.0.0:111`, so clients need no `port=`/`mountport=` mount options.
    #[arg(long, value_name = "ADDR:PORT")]
    pub portmap: Option<SocketAddr>,
    /// Read settings from the `nfs:` section of this YAML file; flags override or add to them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Parses `ADDR` or `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, NFS_PORT))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT"))
}

impl NfsArgs {
    /// Merges the config file (if any) and the flags into one unchecked config.
    fn to_config(&self) -> anyhow::Result<NfsConfig> {
        let mut config = match &self.config {
            Some(path) => crate::config_file::read_section(path, "nfs")?,
            None => NfsConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.portmap {
            config.portmap = Some(v);
        }
        for spec in &self.exports {
            config
                .exports
                .push(ExportConfig::parse_spec(spec).with_context(|| format!("--export {spec}"))?);
        }
        if config.exports.is_empty() {
            anyhow::bail!(
                "nothing to serve: give --export /NAME=DIR[:ro|:rw] or nfs.exports in --config"
            );
        }
        Ok(config)
    }
}

/// Runs `labboot nfs`.
pub fn run(args: NfsArgs) -> anyhow::Result<()> {
    let settings = NfsSettings::try_from(args.to_config()?)?;
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(async move {
        let server = NfsServer::new(settings)?;
        let listener = server.bind().await?;
        server.run(listener, crate::shutdown::on_signal()?).await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_with_or_without_port() {
        assert_eq!(
            parse_listen("127.0.0.1").unwrap(),
            "127.0.0.1:2049".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("localhost:x").is_err());
    }

    #[test]
    fn flags_add_to_the_config_file() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("labboot.yaml");
        std::fs::write(
            &cfg,
            format!(
                "nfs:\n  listen: 127.0.0.1:0\n  exports:\n    - {{name: /a, dir: {}}}\n",
                d.path().display()
            ),
        )
        .unwrap();
        let args = NfsArgs {
            listen: None,
            exports: vec![format!("/b={}:rw", d.path().display())],
            portmap: None,
            config: Some(cfg),
        };
        let s = NfsSettings::try_from(args.to_config().unwrap()).unwrap();
        let names: Vec<_> = s.exports().iter().map(|e| e.name()).collect();
        assert_eq!(names, ["/a", "/b"]);
        assert_eq!(s.listen().port(), 0);
    }
}
