//! NFS configuration in two steps: [`NfsConfig`] is what YAML (the `nfs:` section of labboot's
//! config) or CLI flags fill in; [`NfsSettings`] is the checked form the server runs with.
//!
//! Every error names its field (`nfs.exports[1].dir …`), and export specs given on the command
//! line (`/NAME=DIR[:ro|:rw][,no_root_squash]`) go through the same checks as the YAML list.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::common::ClientNet;

/// The `nfs:` section of the configuration, as written by people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfsConfig {
    /// Address and port of NFS and MOUNT (one TCP port serves both).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the portmap (rpcbind v2) responder, usually port 111; none when absent.
    #[serde(default)]
    pub portmap: Option<SocketAddr>,
    /// Exports served from the start; more can be added at run time.
    #[serde(default)]
    pub exports: Vec<ExportConfig>,
    /// TCP connections served at once (each on a thread of its own). At the cap, a new
    /// connection closes the one idle the longest, as the Linux server does.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may stay without a call (none received, none running) before the
    /// server closes it; clients reconnect when they next need the server.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Threads of the server's own that run the calls which may block on the disk (READ,
    /// WRITE, COMMIT, CREATE, …); the other servers of the process never wait for them.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2049))
}
fn default_max_connections() -> usize {
    1024
}
fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_workers() -> usize {
    32
}

impl Default for NfsConfig {
    fn default() -> NfsConfig {
        NfsConfig {
            listen: default_listen(),
            portmap: None,
            exports: Vec::new(),
            max_connections: default_max_connections(),
            idle_timeout_secs: default_idle_timeout_secs(),
            workers: default_workers(),
        }
    }
}

/// Whether clients may change an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read-only: every change is refused with `NFS3ERR_ROFS`.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

/// One export, as written in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The path clients mount, e.g. `/master` or `/jobs/42`.
    pub name: String,
    /// The directory served.
    pub dir: PathBuf,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub access: Access,
    /// Client addresses or networks (`10.0.0.7`, `10.0.0.0/24`) allowed; everyone when empty.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Whether callers with uid 0 (and gid 0, and group 0) act as nobody (65534) on this
    /// export. Unset: yes for an `rw` export open to every network (no `clients:`), no for an
    /// export limited to its board networks and for `ro` exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_squash: Option<bool>,
}

impl ExportConfig {
    /// Parses the command-line form `/NAME=DIR[:OPTIONS]`, OPTIONS a comma-separated list of
    /// `ro` (the default), `rw`, `root_squash` and `no_root_squash` (e.g. `:rw,no_root_squash`).
    /// A directory whose name itself ends in `:xyz` keeps it unless xyz is such a list.
    pub fn parse_spec(spec: &str) -> Result<ExportConfig, ConfigError> {
        let (name, rest) = spec.split_once('=').ok_or_else(|| {
            bad(
                "exports".into(),
                format!("{spec:?} is not /NAME=DIR[:ro|:rw][,root_squash|,no_root_squash]"),
            )
        })?;
        let mut config = ExportConfig {
            name: name.to_string(),
            dir: PathBuf::from(rest),
            access: Access::Ro,
            clients: Vec::new(),
            root_squash: None,
        };
        if let Some((dir, options)) = rest.rsplit_once(':') {
            const KNOWN: [&str; 4] = ["ro", "rw", "root_squash", "no_root_squash"];
            if !dir.is_empty() && options.split(',').all(|o| KNOWN.contains(&o)) {
                config.dir = PathBuf::from(dir);
                for option in options.split(',') {
                    match option {
                        "rw" => config.access = Access::Rw,
                        "ro" => config.access = Access::Ro,
                        "root_squash" => config.root_squash = Some(true),
                        _ => config.root_squash = Some(false),
                    }
                }
            }
        }
        Ok(config)
    }
}

pub use crate::common::ConfigError;

fn bad(field: String, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("nfs", field, problem)
}

/// A checked export: canonical directory, valid name, parsed client networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    name: String,
    dir: PathBuf,
    access: Access,
    clients: Vec<ClientNet>,
    root_squash: bool,
}

impl ExportSpec {
    /// Checks one export; `field` prefixes error messages (e.g. `exports[0]`).
    pub fn check(c: &ExportConfig, field: &str) -> Result<ExportSpec, ConfigError> {
        check_name(&c.name).map_err(|p| bad(format!("{field}.name"), p))?;
        let dir = c
            .dir
            .canonicalize()
            .map_err(|e| bad(format!("{field}.dir"), format!("{}: {e}", c.dir.display())))?;
        if !dir.is_dir() {
            return Err(bad(
                format!("{field}.dir"),
                format!("{} is not a directory", c.dir.display()),
            ));
        }
        let mut clients = Vec::new();
        for (i, s) in c.clients.iter().enumerate() {
            clients.push(
                s.parse::<ClientNet>()
                    .map_err(|p| bad(format!("{field}.clients[{i}]"), p))?,
            );
        }
        Ok(ExportSpec {
            name: c.name.clone(),
            dir,
            access: c.access,
            root_squash: c
                .root_squash
                .unwrap_or(c.access == Access::Rw && clients.is_empty()),
            clients,
        })
    }

    /// The path clients mount.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The canonical directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Read-only or read-write.
    pub fn access(&self) -> Access {
        self.access
    }
    /// Whether root callers act as nobody here (see [`ExportConfig::root_squash`]).
    pub fn root_squash(&self) -> bool {
        self.root_squash
    }
    /// Whether the export is open to every network (no `clients:`).
    pub fn allows_everyone(&self) -> bool {
        self.clients.is_empty()
    }
    /// Whether a client at `ip` may use this export.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.clients.is_empty() || self.clients.iter().any(|n| n.contains(ip))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let Some(rest) = name.strip_prefix('/') else {
        return Err(format!("{name:?} must start with /"));
    };
    if rest.is_empty() || name.len() > 1024 {
        return Err(format!(
            "{name:?} must name a path below / (at most 1024 bytes)"
        ));
    }
    for part in rest.split('/') {
        let ok = !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b));
        if !ok {
            return Err(format!(
                "{name:?}: each component must be letters, digits or ._-+@ (no empty, . or ..)"
            ));
        }
    }
    Ok(())
}

/// Checked NFS settings; build them with `NfsSettings::try_from(config)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSettings {
    listen: SocketAddr,
    portmap: Option<SocketAddr>,
    exports: Vec<ExportSpec>,
    max_connections: usize,
    idle_timeout: Duration,
    workers: usize,
}

impl TryFrom<NfsConfig> for NfsSettings {
    type Error = ConfigError;

    fn try_from(c: NfsConfig) -> Result<NfsSettings, ConfigError> {
        if c.max_connections == 0 {
            return Err(bad("max_connections".into(), "must be at least 1, got 0"));
        }
        if c.workers == 0 || c.workers > 4096 {
            return Err(bad(
                "workers".into(),
                format!("must be 1 to 4096, got {}", c.workers),
            ));
        }
        if c.idle_timeout_secs == 0 {
            return Err(bad("idle_timeout_secs".into(), "must be at least 1, got 0"));
        }
        let mut exports: Vec<ExportSpec> = Vec::new();
        for (i, e) in c.exports.iter().enumerate() {
            let field = format!("exports[{i}]");
            let spec = ExportSpec::check(e, &field)?;
            if exports.iter().any(|x| x.name == spec.name) {
                return Err(bad(
                    format!("{field}.name"),
                    format!("{:?} is exported twice", spec.name),
                ));
            }
            exports.push(spec);
        }
        Ok(NfsSettings {
            listen: c.listen,
            portmap: c.portmap,
            exports,
            max_connections: c.max_connections,
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            workers: c.workers,
        })
    }
}

impl NfsSettings {
    /// Address and port of NFS and MOUNT.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// Address of the portmap responder, if any.
    pub fn portmap(&self) -> Option<SocketAddr> {
        self.portmap
    }
    /// Exports served from the start.
    pub fn exports(&self) -> &[ExportSpec] {
        &self.exports
    }
    /// TCP connections served at once, per listener.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Threads that run the calls which may block on the disk.
    pub fn workers(&self) -> usize {
        self.workers
    }
    /// How long a connection may stay without a call before it is closed.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_section() {
        let d = tempfile::tempdir().unwrap();
        let yaml = format!(
            "listen: 127.0.0.1:2049\nportmap: 127.0.0.1:111\nexports:\n  - name: /master\n    dir: {}\n  - name: /jobs/42\n    dir: {}\n    access: rw\n    clients: [10.0.0.0/24, 127.0.0.1]\n",
            d.path().display(),
            d.path().display()
        );
        let c: NfsConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        let s = NfsSettings::try_from(c).unwrap();
        assert_eq!(s.exports()[0].access(), Access::Ro);
        assert_eq!(s.exports()[1].access(), Access::Rw);
        assert!(s.exports()[1].allows("10.0.0.9".parse().unwrap()));
        assert!(s.exports()[1].allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!s.exports()[1].allows("10.0.1.9".parse().unwrap()));
        assert!(s.exports()[0].allows("192.0.2.1".parse().unwrap()));
        assert_eq!(s.portmap(), Some("127.0.0.1:111".parse().unwrap()));
        assert_eq!(s.max_connections(), 1024);
        assert_eq!(s.idle_timeout(), Duration::from_secs(300));
        let c: NfsConfig =
            serde_yaml_ng::from_str("max_connections: 8\nidle_timeout_secs: 60\n").unwrap();
        let s = NfsSettings::try_from(c).unwrap();
        assert_eq!(
            (s.max_connections(), s.idle_timeout()),
            (8, Duration::from_secs(60))
        );
        for (yaml, want) in [
            (
                "max_connections: 0\n",
                "nfs.max_connections: must be at least 1, got 0",
            ),
            (
                "idle_timeout_secs: 0\n",
                "nfs.idle_timeout_secs: must be at least 1, got 0",
            ),
        ] {
            let c: NfsConfig = serde_yaml_ng::from_str(yaml).unwrap();
            assert_eq!(NfsSettings::try_from(c).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml_ng::from_str::<NfsConfig>("exports: []\nport: 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn specs_from_the_command_line() {
        let e = ExportConfig::parse_spec("/a=/srv/x:y:rw").unwrap();
        assert_eq!(
            (e.name.as_str(), e.dir.as_path(), e.access),
            ("/a", Path::new("/srv/x:y"), Access::Rw)
        );
        let e = ExportConfig::parse_spec("/a=/srv/x").unwrap();
        assert_eq!(e.access, Access::Ro);
        assert!(ExportConfig::parse_spec("/srv/x").is_err());
        let e = ExportConfig::parse_spec("/a=/srv/x:rw,no_root_squash").unwrap();
        assert_eq!(
            (e.dir.as_path(), e.access, e.root_squash),
            (Path::new("/srv/x"), Access::Rw, Some(false))
        );
        let e = ExportConfig::parse_spec("/a=/srv/x:root_squash").unwrap();
        assert_eq!((e.access, e.root_squash), (Access::Ro, Some(true)));
        // Not an option list: part of the directory's name.
        let e = ExportConfig::parse_spec("/a=/srv/x:rw,fast").unwrap();
        assert_eq!(
            (e.dir.as_path(), e.access),
            (Path::new("/srv/x:rw,fast"), Access::Ro)
        );
    }

    #[test]
    fn root_is_squashed_on_rw_exports_open_to_every_network() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display();
        let squash = |yaml: String| {
            let c: ExportConfig = serde_yaml_ng::from_str(&yaml).unwrap();
            ExportSpec::check(&c, "exports[0]").unwrap().root_squash()
        };
        assert!(squash(format!("{{name: /a, dir: {dir}, access: rw}}")));
        assert!(!squash(format!("{{name: /a, dir: {dir}}}")));
        assert!(!squash(format!(
            "{{name: /a, dir: {dir}, access: rw, clients: [10.0.0.0/24]}}"
        )));
        assert!(!squash(format!(
            "{{name: /a, dir: {dir}, access: rw, root_squash: false}}"
        )));
        assert!(squash(format!(
            "{{name: /a, dir: {dir}, access: rw, clients: [10.0.0.0/24], root_squash: true}}"
        )));
        assert!(squash(format!(
            "{{name: /a, dir: {dir}, root_squash: true}}"
        )));
    }

    #[test]
    fn errors_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let ok = ExportConfig {
            name: "/a".into(),
            dir: d.path().into(),
            access: Access::Ro,
            clients: vec![],
            root_squash: None,
        };
        let cases = [
            (
                ExportConfig {
                    name: "a".into(),
                    ..ok.clone()
                },
                "nfs.exports[1].name: \"a\" must start with /",
            ),
            (
                ExportConfig {
                    name: "/a/../b".into(),
                    ..ok.clone()
                },
                "nfs.exports[1].name: \"/a/../b\": each component must be letters, digits or ._-+@ (no empty, . or ..)",
            ),
            (
                ExportConfig {
                    clients: vec!["10.0.0.0/33".into()],
                    ..ok.clone()
                },
                "nfs.exports[1].clients[0]: \"10.0.0.0/33\": prefix must be 0–32",
            ),
            (ok.clone(), "nfs.exports[1].name: \"/a\" is exported twice"),
        ];
        for (e, want) in cases {
            let c = NfsConfig {
                exports: vec![ok.clone(), e],
                ..NfsConfig::default()
            };
            assert_eq!(NfsSettings::try_from(c).unwrap_err().to_string(), want);
        }
        let c = NfsConfig {
            exports: vec![ExportConfig {
                dir: "/nonexistent/x".into(),
                ..ok
            }],
            ..NfsConfig::default()
        };
        let e = NfsSettings::try_from(c).unwrap_err();
        assert_eq!(e.field, "exports[0].dir");
    }
}
