//! The boards: those in the config and those that checked in. Check-ins are authenticated by
//! the card's token; a second card with the same identity is flagged as cloned; a board that
//! misses its check-in after a master boot goes offline. The registry also decides each
//! board's network boot script from its state (idle: the master; maintenance: stop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::anyhow;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::api::error::ApiError;
use super::config::{ApplianceConfig, BoardConfig};
use super::master::{maintenance_script, MasterBoot};
use super::power::{PowerAction, PowerDriver};
use super::App;
use crate::store::{now_ms, Board, BoardState, Health, Millis, Store, Work};

/// A board from the config, with what was loaded for it at start.
#[derive(Debug, Clone)]
pub struct ConfiguredBoard {
    /// Its config entry.
    pub config: BoardConfig,
    /// The device type of its device file.
    pub device_type: String,
}

/// The board registry.
pub struct Registry {
    store: Arc<dyn Store>,
    appliance: String,
    configured: HashMap<String, ConfiguredBoard>,
    templates: Option<PathBuf>,
    accept_unknown: bool,
    checkin_timeout: Duration,
    online_window: Duration,
    scripts: Arc<ScriptSource>,
    work: Mutex<HashMap<String, Arc<Notify>>>,
    polls: Mutex<HashMap<String, Millis>>,
}

/// What the TFTP server asks for a board's script (shared with the TFTP resolver).
pub struct ScriptSource {
    store: Arc<dyn Store>,
    master: OnceLock<MasterBoot>,
}

/// A check-in's body.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Checkin {
    /// The board id on the card.
    pub board: String,
    /// MAC of the interface it booted from.
    #[serde(default)]
    pub mac: Option<String>,
    /// All MACs.
    #[serde(default)]
    pub macs: Vec<String>,
    /// All IPv4 addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `uname -r`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// CPUs.
    #[serde(default)]
    pub cpus: Option<serde_json::Value>,
    /// MemTotal in KiB.
    #[serde(default)]
    pub memory_kb: Option<serde_json::Value>,
    /// The root it booted.
    #[serde(default)]
    pub root: Option<String>,
    /// Seconds since boot.
    #[serde(default)]
    pub uptime: Option<String>,
}

/// How a check-in was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckinOutcome {
    /// Known and approved.
    Ok,
    /// Awaiting approval.
    Pending,
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn db(e: crate::store::StoreError) -> ApiError {
    ApiError::internal(e.to_string())
}

impl Registry {
    /// Loads the config's boards (their device files are read to learn their device types)
    /// and records them in the store.
    pub fn load(config: &ApplianceConfig, store: Arc<dyn Store>) -> anyhow::Result<Registry> {
        let appliance = config.name();
        let mut configured = HashMap::new();
        for (i, b) in config.boards.iter().enumerate() {
            let dev = dispatcher::device::load_device(
                &b.device,
                config.device_types.as_deref(),
                &Default::default(),
            )
            .map_err(|e| anyhow!("boards[{i}].device: {e}"))?;
            if dev.device_type.is_empty() {
                return Err(anyhow!(
                    "boards[{i}].device: {} does not say its device_type",
                    b.device.display()
                ));
            }
            let mut row = store
                .board(&b.id)
                .map_err(|e| anyhow!("{e}"))?
                .unwrap_or_else(|| Board::new(&b.id, &dev.device_type));
            row.device_type = dev.device_type.clone();
            row.approved = true;
            row.from_config = true;
            if let Some(other) = row.appliance.as_deref().filter(|a| *a != appliance) {
                tracing::info!(board = %b.id, "served by this appliance ({appliance}) from now on, was {other}");
            }
            row.appliance = Some(appliance.clone());
            if row.health == Health::Pending {
                row.health = Health::Unknown;
            }
            store.put_board(&row).map_err(|e| anyhow!("{e}"))?;
            configured.insert(
                b.id.clone(),
                ConfiguredBoard {
                    config: b.clone(),
                    device_type: dev.device_type,
                },
            );
        }
        let interval = config.agent.interval.max(1);
        Ok(Registry {
            scripts: Arc::new(ScriptSource {
                store: Arc::clone(&store),
                master: OnceLock::new(),
            }),
            store,
            appliance,
            configured,
            templates: config.device_types.clone(),
            accept_unknown: config.agent.accept_unknown,
            checkin_timeout: Duration::from_secs(config.agent.checkin_timeout),
            online_window: Duration::from_secs(2 * interval + config.agent.poll_seconds + 15),
            work: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this appliance serves `b` (boards of no appliance yet count as its own).
    pub fn serves(&self, b: &Board) -> bool {
        b.appliance.as_deref().is_none_or(|a| a == self.appliance)
    }

    /// The source the TFTP resolver asks for boot scripts.
    pub fn script_source(&self) -> Arc<ScriptSource> {
        Arc::clone(&self.scripts)
    }

    /// Sets the master boot (once the servers' ports are known).
    pub fn set_master(&self, m: MasterBoot) {
        let _ = self.scripts.master.set(m);
    }

    /// The master boot.
    pub fn master(&self) -> Option<&MasterBoot> {
        self.scripts.master.get()
    }

    /// The config entry of a board, if the config names it.
    pub fn configured(&self, id: &str) -> Option<&ConfiguredBoard> {
        self.configured.get(id)
    }

    /// The board's device, rendered with a job's context.
    pub fn device(
        &self,
        id: &str,
        context: &serde_yaml_ng::Mapping,
    ) -> dispatcher::Result<dispatcher::device::Device> {
        let c = self.configured.get(id).ok_or_else(|| {
            dispatcher::Error::config(format!("board {id} has no device file in the config"))
        })?;
        dispatcher::device::load_device(&c.config.device, self.templates.as_deref(), context)
    }

    /// The board's power driver.
    pub fn power_driver(&self, id: &str) -> anyhow::Result<PowerDriver> {
        let c = self
            .configured
            .get(id)
            .ok_or_else(|| anyhow!("board {id} is not in the config: no power control"))?;
        let dev = self.device(id, &Default::default()).ok();
        Ok(PowerDriver::for_board(
            c.config.power.as_ref(),
            dev.as_ref(),
        ))
    }

    /// Runs a power action on a board (blocking) and records it.
    pub fn power(&self, id: &str, action: PowerAction) -> anyhow::Result<()> {
        let driver = self.power_driver(id)?;
        let r = driver.run(action);
        let msg = match &r {
            Ok(()) => format!("power {}", action.as_str()),
            Err(e) => format!("power {} failed: {e:#}", action.as_str()),
        };
        let _ = self.store.add_event(id, "power", &msg);
        tracing::info!(board = id, "{msg}");
        if r.is_ok() {
            self.mark_rebooted(id, action != PowerAction::Off);
        }
        r
    }

    /// After a power action: the board's last check-in no longer says it is alive (health
    /// unknown until it checks in again); powered on while idle, it is booting the master.
    pub fn mark_rebooted(&self, id: &str, booting: bool) {
        if let Ok(Some(mut b)) = self.store.board(id) {
            if matches!(b.health, Health::Online | Health::Offline) {
                b.health = Health::Unknown;
            }
            if booting && b.state == BoardState::Idle {
                b.master_boot = Some(now_ms());
            }
            let _ = self.store.put_board(&b);
        }
    }

    fn check_token(&self, board: Option<&Board>, id: &str, token: &str) -> Result<(), ApiError> {
        let ok = match self.configured.get(id) {
            Some(c) => c.config.token == token,
            None => match board.and_then(|b| b.token_sha256.as_deref()) {
                Some(h) => h == sha256_hex(token),
                None => true,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::unauthorized(format!(
                "wrong token for board {id}"
            )))
        }
    }

    /// A check-in: authenticates it, flags a cloned card, records the report.
    pub fn checkin(
        &self,
        token: Option<&str>,
        peer: SocketAddr,
        c: &Checkin,
    ) -> Result<CheckinOutcome, ApiError> {
        uboot_scripts::bootstrap::check_board_id(&c.board)
            .map_err(|e| ApiError::bad_request(format!("board: {e}")))?;
        let Some(token) = token else {
            let _ = self.store.add_event(
                &c.board,
                "auth",
                &format!("check-in without a token from {peer}"),
            );
            return Err(ApiError::unauthorized("missing bearer token"));
        };
        let now = now_ms();
        let existing = self.store.board(&c.board).map_err(db)?;
        if let Err(e) = self.check_token(existing.as_ref(), &c.board, token) {
            tracing::warn!(board = %c.board, %peer, "agent: check-in refused: wrong token");
            if existing.is_some() {
                let _ = self.store.add_event(
                    &c.board,
                    "auth",
                    &format!(
                        "check-in with a wrong token from {peer} (MAC {})",
                        c.mac.as_deref().unwrap_or("?")
                    ),
                );
            }
            return Err(e);
        }
        let mac = c.mac.as_deref().map(|m| m.to_ascii_lowercase());
        let mut board = match existing {
            Some(b) => b,
            None => {
                let mut b = Board::new(&c.board, "");
                b.token_sha256 = Some(sha256_hex(token));
                b.approved = self.accept_unknown;
                b.health = if self.accept_unknown {
                    Health::Unknown
                } else {
                    Health::Pending
                };
                let msg = if self.accept_unknown {
                    format!("unknown board checked in from {peer}; accepted (agent.accept_unknown)")
                } else {
                    format!("unknown board checked in from {peer}; awaiting approval")
                };
                tracing::info!(board = %c.board, "{msg}");
                self.store.put_board(&b).map_err(db)?;
                let _ = self.store.add_event(&c.board, "state", &msg);
                b
            }
        };
        // A cloned card: the same identity from another MAC while the board is online.
        if let (Some(known), Some(new)) = (board.mac.as_deref(), mac.as_deref()) {
            let online = board.health == Health::Online
                && self
                    .last_seen(&board)
                    .is_some_and(|t| now - t < self.online_window.as_millis() as i64);
            if known != new && online {
                let msg = format!(
                    "cloned card: board {} is online from MAC {known}; a second card checked in from MAC {new} ({peer})",
                    board.id
                );
                tracing::warn!(board = %board.id, "{msg}");
                if board.cloned.as_deref() != Some(new) {
                    board.cloned = Some(new.to_string());
                    self.store.put_board(&board).map_err(db)?;
                    let _ = self.store.add_event(&board.id, "clone", &msg);
                }
                return Err(ApiError::conflict(msg));
            }
        }
        let was = board.health;
        if board.health != Health::Pending {
            board.health = Health::Online;
        }
        if board.mac.as_deref() != mac.as_deref() && mac.is_some() {
            if board.mac.is_some() {
                let _ = self.store.add_event(
                    &board.id,
                    "checkin",
                    &format!(
                        "now from MAC {} (was {})",
                        mac.as_deref().unwrap_or("?"),
                        board.mac.as_deref().unwrap_or("?")
                    ),
                );
            }
            board.mac = mac;
        }
        board.address = c
            .addresses
            .iter()
            .find(|a| !a.starts_with("127."))
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .or(Some(peer.ip().to_string()));
        board.last_checkin = Some(now);
        board.info = serde_json::to_value(c).unwrap_or_default();
        // The appliance a board checks in with is on its network: it serves the board.
        board.appliance = Some(self.appliance.clone());
        self.store.put_board(&board).map_err(db)?;
        if was != board.health {
            let msg = format!(
                "checked in from {} ({}), kernel {}",
                board.address.as_deref().unwrap_or("?"),
                board.mac.as_deref().unwrap_or("?"),
                c.kernel.as_deref().unwrap_or("?")
            );
            tracing::info!(board = %board.id, "agent: {msg}");
            let _ = self.store.add_event(&board.id, "checkin", &msg);
        }
        Ok(if board.health == Health::Pending {
            CheckinOutcome::Pending
        } else {
            CheckinOutcome::Ok
        })
    }

    fn last_seen(&self, b: &Board) -> Option<Millis> {
        let poll = self.polls.lock().ok().and_then(|p| p.get(&b.id).copied());
        match (b.last_checkin, poll) {
            (Some(a), Some(p)) => Some(a.max(p)),
            (a, p) => a.or(p),
        }
    }

    /// Authenticates an agent's poll or report: the board exists, the token matches, and the
    /// MAC is not a cloned card's.
    pub fn authorize_agent(
        &self,
        id: &str,
        token: Option<&str>,
        mac: Option<&str>,
    ) -> Result<Board, ApiError> {
        let token = token.ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let board =
            self.store.board(id).map_err(db)?.ok_or_else(|| {
                ApiError::unauthorized(format!("unknown board {id}: check in first"))
            })?;
        self.check_token(Some(&board), id, token)?;
        if let (Some(c), Some(m)) = (board.cloned.as_deref(), mac) {
            if c.eq_ignore_ascii_case(m) {
                return Err(ApiError::conflict(format!(
                    "cloned card: board {id} is known from MAC {}; this card gets no work",
                    board.mac.as_deref().unwrap_or("?")
                )));
            }
        }
        Ok(board)
    }

    /// Waits up to `timeout` for work for `board`; marks the board seen.
    pub async fn poll(
        self: &Arc<Self>,
        board: &Board,
        timeout: Duration,
    ) -> Result<Option<Work>, ApiError> {
        let notify = self.notifier(&board.id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(mut p) = self.polls.lock() {
                p.insert(board.id.clone(), now_ms());
            }
            let notified = notify.notified();
            let (me, id) = (Arc::clone(self), board.id.clone());
            let work = tokio::task::spawn_blocking(move || me.store.take_work(&id))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(db)?;
            if work.is_some() {
                return Ok(work);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    fn notifier(&self, board: &str) -> Arc<Notify> {
        let mut m = self.work.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(board.to_string()).or_default())
    }

    /// Wakes the board's waiting poll (work was queued).
    pub fn work_queued(&self, board: &str) {
        self.notifier(board).notify_waiters();
    }

    /// Wakes whoever waits for the board's work results.
    pub fn work_reported(&self, board: &str) {
        self.notifier(&format!("{board}#result")).notify_waiters();
    }

    /// Waits until the board's agent reports a result, or `timeout`.
    pub async fn wait_report(&self, board: &str, timeout: Duration) {
        let n = self.notifier(&format!("{board}#result"));
        let _ = tokio::time::timeout(timeout, n.notified()).await;
    }
}

impl ScriptSource {
    /// The boot script of `board` asked for by `client`, by the board's state. Called on
    /// TFTP's blocking pool.
    pub fn script_for(&self, board: &str, client: SocketAddr) -> Option<Result<String, String>> {
        let master = self.master.get()?;
        let row = match self.store.board(board) {
            Ok(r) => r,
            Err(e) => return Some(Err(format!("board {board}: {e}"))),
        };
        match row {
            None => {
                tracing::info!(board, %client, "tftp: unknown board: the master image");
                Some(Ok(master.script(board)))
            }
            Some(mut b) => match b.state {
                BoardState::Idle => {
                    tracing::info!(board, %client, "tftp: idle board: the master image");
                    b.master_boot = Some(now_ms());
                    if b.address.is_none() {
                        b.address = Some(client.ip().to_string());
                    }
                    let _ = self.store.put_board(&b);
                    Some(Ok(master.script(board)))
                }
                BoardState::Maintenance => {
                    tracing::info!(board, %client, "tftp: board in maintenance");
                    Some(Ok(maintenance_script(board)))
                }
                BoardState::Job => Some(Err(format!(
                    "board {board} runs job {} with a serial boot: no network boot script",
                    b.current_job.map(|j| j.to_string()).unwrap_or_default()
                ))),
            },
        }
    }
}

/// Marks boards offline that missed their check-in after a master boot (every 5 s).
pub async fn sweep(app: Arc<App>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let a = Arc::clone(&app);
        let _ = tokio::task::spawn_blocking(move || sweep_once(&a)).await;
    }
}

fn sweep_once(app: &App) {
    let reg = &app.registry;
    let Ok(boards) = app.store.boards() else {
        return;
    };
    let now = now_ms();
    let timeout = reg.checkin_timeout.as_millis() as i64;
    for mut b in boards {
        if !reg.serves(&b)
            || b.state != BoardState::Idle
            || !matches!(b.health, Health::Online | Health::Unknown)
        {
            continue;
        }
        let seen = reg.last_seen(&b);
        let after_boot = b
            .master_boot
            .is_some_and(|t| seen.is_none_or(|s| s < t) && now - t > timeout);
        let silent = b.health == Health::Online && seen.is_some_and(|s| now - s > timeout);
        if after_boot || silent {
            let why = if after_boot {
                format!("no check-in within {} s of a master boot", timeout / 1000)
            } else {
                format!("no check-in or poll for {} s", timeout / 1000)
            };
            b.health = Health::Offline;
            if app.store.put_board(&b).is_ok() {
                tracing::warn!(board = %b.id, "offline: {why}");
                let _ = app
                    .store
                    .add_event(&b.id, "health", &format!("offline: {why}"));
            }
        }
    }
}

/// Records DHCP leases of boards as board events and addresses.
pub async fn follow_leases(
    app: Arc<App>,
    mut rx: tokio::sync::broadcast::Receiver<netboot::dhcp::LeaseEvent>,
    cancel: CancellationToken,
) {
    use netboot::dhcp::classify::Identity;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("dhcp: {n} lease events missed");
                    continue;
                }
                Err(_) => return,
            },
        };
        let Some(Identity::Board(board)) = ev.identity.clone() else {
            continue;
        };
        let a = Arc::clone(&app);
        let _ = tokio::task::spawn_blocking(move || {
            let msg = format!("{:?} {} to {}", ev.kind, ev.ip, ev.mac);
            let _ = a.store.add_event(&board, "lease", &msg.to_lowercase());
            if let Ok(Some(mut b)) = a.store.board(&board) {
                if ev.kind == netboot::dhcp::LeaseEventKind::Acked {
                    b.address = Some(ev.ip.to_string());
                    let _ = a.store.put_board(&b);
                }
            }
        })
        .await;
    }
}
