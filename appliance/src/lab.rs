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
use dispatcher::services::{ConsolePort, LabServices, NbdMode, NbdTarget};
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
    services: Arc<Services>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, Task)>,
}

/// What jobs publish, shared with the running servers: the dispatcher's [`LabServices`].
pub struct Services {
    server_ip: IpAddr,
    scripts: Scripts,
    jobs: Jobs,
    nfs: Option<netboot::nfs::ExportTable>,
    nbd: Option<(netboot::nbd::ExportTable, u16)>,
    /// The boards' network (`dhcp:`'s subnet), the only one a job's NFS root is exported to.
    board_network: Option<String>,
    owned: Mutex<Vec<(String, Owned)>>,
    consoles: Option<Arc<dyn ConsoleProvider>>,
}

impl Services {
    /// The seam of an appliance with no servers (a front end that serves only the API and
    /// the dashboard): it has no boards, so no job and no reservation ever publishes here.
    pub fn without_servers(server_ip: IpAddr) -> Arc<Services> {
        Arc::new(Services {
            server_ip,
            scripts: Scripts::default(),
            jobs: Jobs::default(),
            nfs: None,
            nbd: None,
            board_network: None,
            owned: Mutex::new(Vec::new()),
            consoles: None,
        })
    }
}

/// Consoles kept open outside the job (`labboot serve`'s), lent to jobs through
/// [`LabServices::console`].
pub trait ConsoleProvider: Send + Sync {
    /// The console of the board job `job_id` runs on; None when the provider keeps none for
    /// it (the job then runs the device's connection command).
    fn console(&self, job_id: &str) -> Option<dispatcher::Result<Box<dyn ConsolePort>>>;
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

/// A board script for a board no job has given one: `None` when the hook has nothing to say
/// (the default answer), `Some(Err(why))` to refuse it with a reason.
pub type BoardScriptHook =
    Arc<dyn Fn(&str, SocketAddr) -> Option<Result<String, String>> + Send + Sync>;

/// What `labboot serve` adds to the servers a job needs.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Scripts of boards without a job's script (idle: the master; maintenance: the prompt).
    pub board_script: Option<BoardScriptHook>,
    /// A directory served read-only as `labboot/master/…`.
    pub master_dir: Option<PathBuf>,
    /// An image exported over NBD as `master`, copy-on-write per connection.
    pub master_export: Option<PathBuf>,
    /// Where DHCP publishes its lease events.
    pub lease_events: Option<tokio::sync::broadcast::Sender<netboot::dhcp::LeaseEvent>>,
    /// The boards' consoles, lent to jobs instead of their connection commands.
    pub consoles: Option<Arc<dyn ConsoleProvider>>,
}

type Task = tokio::task::JoinHandle<anyhow::Result<()>>;

impl Lab {
    /// Starts TFTP, plus NFS / NBD when the job needs them and DHCP when the config has it;
    /// `spare_root` is the TFTP root when the config gives none. The servers run on a runtime
    /// of their own.
    pub fn start(config: LabConfig, needs: Needs, spare_root: &Path) -> anyhow::Result<Lab> {
        let runtime = crate::runtime::multi_thread()?;
        let mut lab = runtime.block_on(Lab::spawn(config, needs, spare_root, Hooks::default()))?;
        lab.runtime = Some(runtime);
        Ok(lab)
    }

    /// Starts the servers as tasks of the current runtime (binding every socket before it
    /// returns, so a port in use fails here); stop them with [`Lab::stop`].
    pub async fn spawn(
        config: LabConfig,
        needs: Needs,
        spare_root: &Path,
        hooks: Hooks,
    ) -> anyhow::Result<Lab> {
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
        let mut tasks: Vec<(&'static str, Task)> = Vec::new();

        // TFTP, always.
        let settings = TftpSettings::try_from(tftp_config)?;
        let root = DirResolver::new(settings.root())
            .with_context(|| format!("cannot serve {}", settings.root().display()))?;
        let (s2, j2, hook) = (scripts.clone(), jobs.clone(), hooks.board_script.clone());
        let mut resolver = VirtualResolver::new()
            .with_generator(move |client, path| {
                board_script(&s2, hook.as_ref(), arch, client, path)
            })
            .with_generator(move |client, path| job_file(&j2, client, path));
        if let Some(dir) = &hooks.master_dir {
            let master = DirResolver::new(dir)
                .with_context(|| format!("cannot serve the master {}", dir.display()))?;
            resolver =
                resolver.with_generator(move |client, path| master_file(&master, client, path));
        }
        let resolver = resolver.with_fallback(root);
        let tftp = TftpServer::new(settings, resolver)?;
        let socket = tftp.bind().await?;
        tracing::info!(addr = %socket.local_addr()?, "tftp: listening");
        let r = rx.clone();
        tasks.push((
            "tftp",
            tokio::spawn(async move {
                tftp.run(socket, shutdown(r)).await?;
                Ok(())
            }),
        ));

        // NFS, for an nfsrootfs.
        let mut nfs_table = None;
        if needs.nfs {
            let mut c = config.nfs.clone().unwrap_or_default();
            if config.nfs.is_none() {
                c.portmap = Some(SocketAddr::new(c.listen.ip(), 111));
            }
            let server = NfsServer::new(NfsSettings::try_from(c)?)?;
            nfs_table = Some(server.table());
            let listener = server.bind().await?;
            tracing::info!(addr = %listener.local_addr()?, "nfs: listening");
            let r = rx.clone();
            tasks.push((
                "nfs",
                tokio::spawn(async move {
                    server.run(listener, shutdown(r)).await?;
                    Ok(())
                }),
            ));
        }

        // NBD, for an nbdroot (and the master).
        let mut nbd = None;
        if needs.nbd || hooks.master_export.is_some() {
            let c = config.nbd.clone().unwrap_or_default();
            let server = NbdServer::new(NbdSettings::try_from(c)?)?;
            if let Some(image) = &hooks.master_export {
                let export =
                    Export::open("master", image, ExportMode::CopyOnWrite).with_context(|| {
                        format!("nbd: cannot export the master {}", image.display())
                    })?;
                server.table().add(export).context("nbd: export master")?;
            }
            let listener = server.bind().await?;
            let port = listener.local_addr()?.port();
            tracing::info!(addr = %listener.local_addr()?, "nbd: listening");
            nbd = Some((server.table(), port));
            let r = rx.clone();
            tasks.push((
                "nbd",
                tokio::spawn(async move {
                    server.run(listener, shutdown(r)).await?;
                    Ok(())
                }),
            ));
        }

        // DHCP, when the lab config has a dhcp: section.
        let mut board_network = None;
        if let Some(d) = config.dhcp.clone() {
            let settings = DhcpSettings::try_from(d)?;
            let mask = u32::from(settings.netmask());
            board_network = Some(format!(
                "{}/{}",
                std::net::Ipv4Addr::from(u32::from(settings.server_ip()) & mask),
                mask.count_ones()
            ));
            tracing::info!(interface = settings.interface(), "dhcp: starting");
            let r = rx.clone();
            let events = hooks.lease_events.clone();
            tasks.push((
                "dhcp",
                tokio::spawn(async move {
                    match events {
                        Some(tx) => {
                            netboot::dhcp::serve_with_events(settings, shutdown(r), tx).await?
                        }
                        None => netboot::dhcp::serve(settings, shutdown(r)).await?,
                    }
                    Ok(())
                }),
            ));
        }
        Ok(Lab {
            services: Arc::new(Services {
                server_ip,
                scripts,
                jobs,
                nfs: nfs_table,
                nbd,
                board_network,
                owned: Mutex::new(Vec::new()),
                consoles: hooks.consoles.clone(),
            }),
            runtime: None,
            stop,
            tasks,
        })
    }

    /// The NBD port, when NBD runs.
    pub fn nbd_port(&self) -> Option<u16> {
        self.services.nbd.as_ref().map(|(_, p)| *p)
    }

    /// The seam jobs publish through (shared with the servers).
    pub fn services(&self) -> Arc<Services> {
        Arc::clone(&self.services)
    }

    /// Waits until a server stops on its own (an error, or a panic); its name and error.
    pub async fn failed(&mut self) -> anyhow::Error {
        use std::future::Future;
        use std::task::Poll;
        let (i, res) = std::future::poll_fn(|cx| {
            for (i, (_, t)) in self.tasks.iter_mut().enumerate() {
                if let Poll::Ready(r) = std::pin::Pin::new(t).poll(cx) {
                    return Poll::Ready((i, r));
                }
            }
            Poll::Pending
        })
        .await;
        let (name, _) = self.tasks.remove(i);
        match res {
            Ok(Ok(())) => anyhow::anyhow!("{name}: the server stopped"),
            Ok(Err(e)) => e.context(format!("{name} server")),
            Err(e) => anyhow::anyhow!("{name}: the server task failed: {e}"),
        }
    }

    /// Stops every server and waits for them (their connections included); the first error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first = None;
        for (name, t) in self.tasks.drain(..) {
            let r = match t.await {
                Ok(r) => r.map_err(|e| e.context(format!("{name} server"))),
                Err(e) => Err(anyhow::anyhow!("{name}: the server task failed: {e}")),
            };
            if let Err(e) = r {
                tracing::error!("{e:#}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            for (name, t) in self.tasks.drain(..) {
                match rt.block_on(t) {
                    Ok(Err(e)) => tracing::error!("{name} server: {e:#}"),
                    Err(e) => tracing::error!("{name} server task: {e}"),
                    Ok(Ok(())) => {}
                }
            }
            rt.shutdown_timeout(std::time::Duration::from_secs(3));
        }
    }
}

fn board_script(
    scripts: &Scripts,
    hook: Option<&BoardScriptHook>,
    arch: Arch,
    client: SocketAddr,
    path: &RequestPath,
) -> Option<Result<Content, TftpError>> {
    let parts: Vec<&str> = path.components().collect();
    let ["labboot", board, "boot.scr"] = parts.as_slice() else {
        return None;
    };
    let text = scripts.lock().ok()?.get(*board).cloned();
    let text = match (text, hook) {
        (Some(t), _) => {
            tracing::info!(board = *board, %client, "tftp: serving the job's boot script");
            t
        }
        (None, Some(hook)) => match hook(board, client) {
            Some(Ok(t)) => t,
            Some(Err(why)) => return Some(Err(TftpError::not_found(why))),
            None => {
                return Some(Err(TftpError::not_found(format!(
                    "no boot script for board {board}"
                ))))
            }
        },
        (None, None) => {
            return Some(Err(TftpError::not_found(format!(
                "no boot script for board {board}: no job is booting it"
            ))))
        }
    };
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

fn master_file(
    master: &DirResolver,
    client: SocketAddr,
    path: &RequestPath,
) -> Option<Result<Content, TftpError>> {
    let rest = path
        .as_str()
        .trim_start_matches('/')
        .strip_prefix("labboot/master/")?;
    Some(RequestPath::parse(rest).and_then(|p| master.open(client, &p)))
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

impl LabServices for Services {
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
                // The board's root owns its root filesystem: not squashed, and so exported
                // to the boards' network only when the lab knows it.
                clients: self.board_network.iter().cloned().collect(),
                root_squash: Some(false),
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

    fn console(&self, job_id: &str) -> Option<dispatcher::Result<Box<dyn ConsolePort>>> {
        self.consoles.as_ref()?.console(job_id)
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
