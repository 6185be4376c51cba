//! The lab's servers started in-process for one `labboot dispatch` run: the dispatcher's
//! [`LabServices`] implemented over labboot's own TFTP, NFS, NBD and DHCP servers.
//!
//! The servers run on a tokio runtime of their own, on its worker threads, while the
//! dispatcher (synchronous, one job) runs on the caller's thread. What a job publishes reaches
//! them through the servers' own seams: a TFTP resolver that looks up the job's directory and
//! the boards' boot scripts at request time, and the NFS and NBD export tables. Dropping the
//! lab stops every server and waits for them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use dispatcher::services::{LabServices, NbdMode, NbdTarget};
use netboot::dhcp::{DhcpConfig, DhcpSettings};
use netboot::nbd::{Export, ExportMode, NbdConfig, NbdServer, NbdSettings};
use netboot::nfs::{Access, ExportConfig as NfsExportConfig, NfsConfig, NfsServer, NfsSettings};
use netboot::tftp::{
    Content, DirResolver, RequestPath, Resolver, TftpConfig, TftpError, TftpServer, TftpSettings,
    VirtualResolver,
};
use serde::Deserialize;
use tokio::sync::watch;
use uboot_scripts::image::{build_script, Arch, ScriptSpec};

/// The lab config's sections `labboot dispatch` reads (the same file `labboot tftp|nbd|nfs|dhcp
/// --config` read), plus `server_ip`: the address boards reach this host at.
#[derive(Debug, Default, Deserialize)]
pub struct LabConfig {
    /// The address boards reach the servers at (default: `dhcp.server_ip`, else the TFTP listen
    /// address when it is not 0.0.0.0, else 127.0.0.1).
    #[serde(default)]
    pub server_ip: Option<IpAddr>,
    /// `tftp:` (default: all addresses, port 69, a root in the output directory).
    #[serde(default)]
    pub tftp: Option<TftpConfig>,
    /// `nbd:` (default: port 10809 on all addresses).
    #[serde(default)]
    pub nbd: Option<NbdConfig>,
    /// `nfs:` (default: port 2049 on all addresses, portmap on 111 when the section is absent).
    #[serde(default)]
    pub nfs: Option<NfsConfig>,
    /// `dhcp:`; DHCP runs only when this section is present.
    #[serde(default)]
    pub dhcp: Option<DhcpConfig>,
    /// Architecture stamped on rendered board scripts (default arm64).
    #[serde(default)]
    pub board_script_arch: Option<String>,
}

impl LabConfig {
    /// Reads the whole file; unknown top-level sections of other commands are ignored.
    pub fn load(path: &Path) -> anyhow::Result<LabConfig> {
        use crate::config_file::{optional_section, read_doc};
        let doc = read_doc(path)?;
        Ok(LabConfig {
            server_ip: optional_section(path, &doc, "server_ip")?,
            tftp: optional_section(path, &doc, "tftp")?,
            nbd: optional_section(path, &doc, "nbd")?,
            nfs: optional_section(path, &doc, "nfs")?,
            dhcp: optional_section(path, &doc, "dhcp")?,
            board_script_arch: optional_section(path, &doc, "board_script_arch")?,
        })
    }
}

/// Which servers a job needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// An nfsrootfs is deployed.
    pub nfs: bool,
    /// An nbdroot is deployed.
    pub nbd: bool,
}

type Scripts = Arc<Mutex<HashMap<String, String>>>;
type Jobs = Arc<Mutex<HashMap<String, (String, DirResolver)>>>;

/// The running servers.
pub struct Lab {
    server_ip: IpAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    scripts: Scripts,
    jobs: Jobs,
    nfs: Option<netboot::nfs::ExportTable>,
    nbd: Option<(netboot::nbd::ExportTable, u16)>,
    owned: Mutex<Vec<(String, Owned)>>,
}

enum Owned {
    Nfs(String),
    Nbd(String),
}

async fn shutdown(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
}

impl Lab {
    /// Starts TFTP, plus NFS / NBD when the job needs them and DHCP when the config has it;
    /// `spare_root` is the TFTP root when the config gives none.
    pub fn start(config: LabConfig, needs: Needs, spare_root: &Path) -> anyhow::Result<Lab> {
        let runtime = crate::runtime::multi_thread()?;
        let (stop, rx) = watch::channel(false);
        let scripts: Scripts = Arc::default();
        let jobs: Jobs = Arc::default();
        let arch: Arch = config
            .board_script_arch
            .as_deref()
            .unwrap_or("arm64")
            .parse()
            .map_err(|e| anyhow::anyhow!("board_script_arch: {e}"))?;
        let tftp_config = config.tftp.clone().unwrap_or_else(|| {
            std::fs::create_dir_all(spare_root).ok();
            TftpConfig::new(spare_root.to_path_buf())
        });
        let server_ip = config
            .server_ip
            .or(config.dhcp.as_ref().map(|d| IpAddr::V4(d.server_ip)))
            .or_else(|| {
                let ip = tftp_config.listen.ip();
                (!ip.is_unspecified()).then_some(ip)
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut tasks = Vec::new();

        // TFTP, always.
        let settings = TftpSettings::try_from(tftp_config)?;
        let root = DirResolver::new(settings.root())
            .with_context(|| format!("cannot serve {}", settings.root().display()))?;
        let (s2, j2) = (scripts.clone(), jobs.clone());
        let resolver = VirtualResolver::new()
            .with_generator(move |client, path| board_script(&s2, arch, client, path))
            .with_generator(move |client, path| job_file(&j2, client, path))
            .with_fallback(root);
        let tftp = TftpServer::new(settings, resolver)?;
        let socket = runtime.block_on(tftp.bind())?;
        tracing::info!(addr = %socket.local_addr()?, "tftp: listening");
        let r = rx.clone();
        tasks.push(runtime.spawn(async move {
            tftp.run(socket, shutdown(r)).await?;
            Ok(())
        }));

        // NFS, for an nfsrootfs.
        let mut nfs_table = None;
        if needs.nfs {
            let mut c = config.nfs.clone().unwrap_or_default();
            if config.nfs.is_none() {
                c.portmap = Some(SocketAddr::new(c.listen.ip(), 111));
            }
            let server = NfsServer::new(NfsSettings::try_from(c)?)?;
            nfs_table = Some(server.table());
            let listener = runtime.block_on(server.bind())?;
            tracing::info!(addr = %listener.local_addr()?, "nfs: listening");
            let r = rx.clone();
            tasks.push(runtime.spawn(async move {
                server.run(listener, shutdown(r)).await?;
                Ok(())
            }));
        }

        // NBD, for an nbdroot.
        let mut nbd = None;
        if needs.nbd {
            let c = config.nbd.clone().unwrap_or_default();
            let server = NbdServer::new(NbdSettings::try_from(c)?)?;
            let listener = runtime.block_on(server.bind())?;
            let port = listener.local_addr()?.port();
            tracing::info!(addr = %listener.local_addr()?, "nbd: listening");
            nbd = Some((server.table(), port));
            let r = rx.clone();
            tasks.push(runtime.spawn(async move {
                server.run(listener, shutdown(r)).await?;
                Ok(())
            }));
        }

        // DHCP, when the lab config has a dhcp: section.
        if let Some(d) = config.dhcp.clone() {
            let settings = DhcpSettings::try_from(d)?;
            tracing::info!(interface = settings.interface(), "dhcp: starting");
            let r = rx.clone();
            tasks.push(runtime.spawn(async move {
                netboot::dhcp::serve(settings, shutdown(r)).await?;
                Ok(())
            }));
        }
        Ok(Lab {
            server_ip,
            runtime: Some(runtime),
            stop,
            tasks,
            scripts,
            jobs,
            nfs: nfs_table,
            nbd,
            owned: Mutex::new(Vec::new()),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            for t in self.tasks.drain(..) {
                match rt.block_on(t) {
                    Ok(Err(e)) => tracing::error!("server: {e:#}"),
                    Err(e) => tracing::error!("server task: {e}"),
                    Ok(Ok(())) => {}
                }
            }
            rt.shutdown_timeout(std::time::Duration::from_secs(3));
        }
    }
}

fn board_script(
    scripts: &Scripts,
    arch: Arch,
    client: SocketAddr,
    path: &RequestPath,
) -> Option<Result<Content, TftpError>> {
    let parts: Vec<&str> = path.components().collect();
    let ["labboot", board, "boot.scr"] = parts.as_slice() else {
        return None;
    };
    let text = scripts.lock().ok()?.get(*board).cloned();
    let Some(text) = text else {
        return Some(Err(TftpError::not_found(format!(
            "no boot script for board {board}: no job is booting it"
        ))));
    };
    tracing::info!(board = *board, %client, "tftp: serving the job's boot script");
    let spec = ScriptSpec {
        arch,
        name: format!("labboot {board}").chars().take(32).collect(),
        time: 0,
    };
    Some(
        build_script(&spec, text.as_bytes())
            .map(Content::from_bytes)
            .map_err(|e| TftpError::not_found(format!("boot script of {board}: {e}"))),
    )
}

fn job_file(
    jobs: &Jobs,
    client: SocketAddr,
    path: &RequestPath,
) -> Option<Result<Content, TftpError>> {
    let name = path.as_str().trim_start_matches('/');
    let rest = name.strip_prefix("jobs/")?;
    let (job, file) = rest.split_once('/')?;
    let guard = jobs.lock().ok()?;
    let (_, dir) = guard.get(job)?;
    Some(RequestPath::parse(file).and_then(|p| dir.open(client, &p)))
}

fn err(e: impl std::fmt::Display) -> dispatcher::Error {
    dispatcher::Error::infra(e.to_string())
}

impl LabServices for Lab {
    fn server_ip(&self) -> IpAddr {
        self.server_ip
    }

    fn publish_tftp(&self, job_id: &str, dir: &Path) -> dispatcher::Result<String> {
        let resolver = DirResolver::new(dir)
            .map_err(|e| err(format!("tftp: serve {}: {e}", dir.display())))?;
        let prefix = format!("jobs/{job_id}");
        self.jobs
            .lock()
            .map_err(|_| err("tftp: job table poisoned"))?
            .insert(job_id.to_string(), (prefix.clone(), resolver));
        Ok(prefix)
    }

    fn add_nfs_export(&self, job_id: &str, dir: &Path) -> dispatcher::Result<String> {
        let table = self
            .nfs
            .as_ref()
            .ok_or_else(|| dispatcher::Error::bug("the NFS server was not started for this job"))?;
        let name = format!("/jobs/{job_id}");
        table
            .add(&NfsExportConfig {
                name: name.clone(),
                dir: PathBuf::from(dir),
                access: Access::Rw,
                clients: Vec::new(),
            })
            .map_err(|e| err(format!("nfs: export {name}: {e}")))?;
        self.owned
            .lock()
            .map_err(|_| err("export list poisoned"))?
            .push((job_id.to_string(), Owned::Nfs(name.clone())));
        Ok(name)
    }

    fn add_nbd_export(
        &self,
        job_id: &str,
        image: &Path,
        mode: NbdMode,
    ) -> dispatcher::Result<NbdTarget> {
        let (table, port) = self
            .nbd
            .as_ref()
            .ok_or_else(|| dispatcher::Error::bug("the NBD server was not started for this job"))?;
        let name = format!("job-{job_id}");
        let mode = match mode {
            NbdMode::ReadWrite => ExportMode::ReadWrite,
            NbdMode::CopyOnWrite => ExportMode::CopyOnWrite,
        };
        let export = Export::open(&name, image, mode)
            .map_err(|e| err(format!("nbd: export {name}: {e}")))?;
        table
            .add(export)
            .map_err(|e| err(format!("nbd: export {name}: {e}")))?;
        self.owned
            .lock()
            .map_err(|_| err("export list poisoned"))?
            .push((job_id.to_string(), Owned::Nbd(name.clone())));
        Ok(NbdTarget {
            host: self.server_ip,
            port: *port,
            name,
        })
    }

    fn set_boot_script(&self, board_id: &str, script: Option<&str>) -> dispatcher::Result<()> {
        let mut map = self
            .scripts
            .lock()
            .map_err(|_| err("boot script table poisoned"))?;
        match script {
            Some(s) => map.insert(board_id.to_string(), s.to_string()),
            None => map.remove(board_id),
        };
        Ok(())
    }

    fn release(&self, job_id: &str) -> dispatcher::Result<()> {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(job_id);
        }
        let mut owned = self.owned.lock().map_err(|_| err("export list poisoned"))?;
        owned.retain(|(job, what)| {
            if job != job_id {
                return true;
            }
            match what {
                Owned::Nfs(name) => {
                    if let Some(t) = &self.nfs {
                        t.remove(name);
                    }
                }
                Owned::Nbd(name) => {
                    if let Some((t, _)) = &self.nbd {
                        t.remove(name);
                    }
                }
            }
            false
        });
        Ok(())
    }
}
