//! `labboot serve`: the one process a lab runs. Every server (TFTP, NBD, NFS, DHCP), the HTTP
//! API, the board registry, the job scheduler and the health sweep run on one tokio runtime
//! and stop together on SIGTERM.
//!
//! Layout: [`config`] reads `appliance.yaml`; [`registry`] knows the boards (check-ins, tokens,
//! cloned cards, health, per-board boot scripts); [`power`] drives their power; [`scheduler`]
//! hands queued jobs to idle boards; [`runner`] runs one job with the dispatcher (or through
//! the agent); [`logs`] streams job logs into the store and to listeners; [`api`] is the HTTP
//! API; [`consoles`] keeps every board's serial line open (log, hub, lent to jobs). State
//! lives behind [`crate::store::Store`].

pub mod agent_jobs;
pub mod api;
pub mod cluster;
pub mod config;
pub mod consoles;
pub mod dashboard;
pub mod logs;
pub mod master;
pub mod metrics;
pub mod pipeline_tree;
pub mod power;
pub mod power_saving;
pub mod registry;
pub mod reservations;
pub mod runner;
pub mod scheduler;
pub mod submit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use tokio::sync::Notify;

use crate::lab::{Hooks, Lab, LabConfig, Needs, Services};
use crate::store::{self, JobId, Store};
use config::ApplianceConfig;
use registry::Registry;

/// Everything the API, the scheduler and the runners share.
pub struct App {
    /// The checked config.
    pub config: ApplianceConfig,
    /// This appliance's name (`name:` or the host name).
    pub name: String,
    /// State.
    pub store: Arc<dyn Store>,
    /// The boards.
    pub registry: Arc<Registry>,
    /// The servers' seam for jobs.
    pub services: Arc<Services>,
    /// The address boards reach the appliance at.
    pub server_ip: IpAddr,
    /// Where the API listens (the bound address).
    pub http_addr: SocketAddr,
    /// Wakes the scheduler (a job queued or finished, a board became available).
    pub wake: Notify,
    /// Cancel flags of running jobs.
    pub running: Mutex<HashMap<JobId, Arc<AtomicBool>>>,
    /// Log lines appended (job id), for live log streams.
    pub log_events: tokio::sync::broadcast::Sender<JobId>,
    /// The directory of job outputs.
    pub jobs_dir: PathBuf,
    /// Set when SIGTERM arrived: no new job starts.
    pub stopping: AtomicBool,
    /// The boards' consoles (board id → hub), kept open all the time.
    pub consoles: consoles::Consoles,
}

impl App {
    /// The store, for blocking callers.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }
}

fn lab_config(c: &ApplianceConfig) -> LabConfig {
    LabConfig {
        server_ip: Some(c.server_ip()),
        tftp: c.tftp.clone(),
        nbd: c.nbd.clone(),
        nfs: c.nfs.clone(),
        dhcp: c.dhcp.clone(),
        board_script_arch: c.board_script_arch.clone(),
    }
}

/// Runs the appliance until SIGINT/SIGTERM or a server's failure.
pub async fn serve(config: ApplianceConfig) -> anyhow::Result<()> {
    let problems = config.check_files();
    if !problems.is_empty() {
        return Err(anyhow!("{}", problems.join("; ")));
    }
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let jobs_dir = config.state_dir.join("jobs");
    std::fs::create_dir_all(&jobs_dir)
        .with_context(|| format!("cannot create {}", jobs_dir.display()))?;
    let store: Arc<dyn Store> =
        Arc::from(store::open(&config.database, &config.state_dir).map_err(|e| anyhow!("{e}"))?);
    let name = config.name();
    let api_only = config.api_only();
    let registry = Arc::new(Registry::load(&config, Arc::clone(&store))?);
    let consoles = consoles::Consoles::from_config(&config, &registry);

    // The servers, with the registry's boot scripts and the master (none on a front end).
    let (mut lab, lease_rx) = if api_only {
        tracing::info!(appliance = %name, "no lab section (servers, boards): serving the API and the dashboard only");
        (None, None)
    } else {
        let (lease_tx, lease_rx) = netboot::dhcp::events::channel();
        let script_registry = registry.script_source();
        let hooks = Hooks {
            board_script: Some(Arc::new(move |board, client| {
                script_registry.script_for(board, client)
            })),
            master_dir: Some(config.master_dir()),
            master_export: Some(config.master_dir().join(&config.master.root)),
            lease_events: Some(lease_tx),
            consoles: Some(Arc::new(consoles.clone())),
        };
        let lab = Lab::spawn(
            lab_config(&config),
            Needs {
                nfs: true,
                nbd: true,
            },
            &config.state_dir.join("tftp"),
            hooks,
        )
        .await
        .context("cannot start the servers")?;
        (Some(lab), Some(lease_rx))
    };
    let nbd_port = lab.as_ref().and_then(|l| l.nbd_port()).unwrap_or(10809);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http: cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let server_ip = if api_only {
        http_addr.ip()
    } else {
        config.server_ip()
    };
    if !api_only {
        registry.set_master(master::MasterBoot::new(
            &config,
            server_ip,
            nbd_port,
            http_addr.port(),
        ));
    }
    let services = match &lab {
        Some(l) => l.services(),
        None => Services::without_servers(server_ip),
    };
    let (log_events, _) = tokio::sync::broadcast::channel(1024);
    let app = Arc::new(App {
        server_ip,
        config,
        name,
        store,
        registry,
        services,
        http_addr,
        wake: Notify::new(),
        running: Mutex::new(HashMap::new()),
        log_events,
        jobs_dir,
        stopping: AtomicBool::new(false),
        consoles,
    });
    // The consoles first, so they see the boards recovered below boot.
    app.consoles.start()?;
    tracing::info!("labboot: API at http://{http_addr}");

    // Jobs that were running when the process died, then the boards they held.
    runner::recover(&app).await?;

    let cancel = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(cluster::run(Arc::clone(&app), cancel.clone()));
    if !api_only {
        tasks.spawn(scheduler::run(Arc::clone(&app), cancel.clone()));
        tasks.spawn(registry::sweep(Arc::clone(&app), cancel.clone()));
        tasks.spawn(power_saving::run(Arc::clone(&app), cancel.clone()));
    }
    if let Some(rx) = lease_rx {
        tasks.spawn(registry::follow_leases(
            Arc::clone(&app),
            rx,
            cancel.clone(),
        ));
    }
    let router = api::router(Arc::clone(&app));
    let http_cancel = cancel.clone();
    let http = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_cancel.cancelled().await })
        .await
    });

    let signal = crate::shutdown::on_signal()?;
    let failed = async {
        match lab.as_mut() {
            Some(l) => l.failed().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = signal => Ok(()),
        e = failed => Err(e),
    };
    app.stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    cancel.cancel();
    runner::cancel_all(&app);
    runner::wait_all(&app).await;
    while tasks.join_next().await.is_some() {}
    // After the jobs (they finalize on their consoles), before the API: attached
    // subscribers see their console end.
    let consoles = app.consoles.clone();
    let _ = tokio::task::spawn_blocking(move || consoles.stop()).await;
    match tokio::time::timeout(std::time::Duration::from_secs(5), http).await {
        Ok(Ok(Err(e))) => tracing::warn!("http: {e}"),
        Err(_) => tracing::warn!("http: connections did not close in 5 s"),
        _ => {}
    }
    let stopped = match lab {
        Some(l) => l.stop().await,
        None => Ok(()),
    };
    tracing::info!("labboot: stopped");
    outcome.and(stopped)
}
