//! People's reservations: a board taken out of the scheduler for a while (`POST …/reserve`),
//! optionally booting its person's own kernel the network way (`POST …/boot`), and given back
//! — powered off, then on into the master — when it is released or its time is up (the
//! [`super::power_saving`] task looks every few seconds).
//!
//! A reserved board stays `idle`: without a boot of its own it boots the master like any idle
//! board. A boot publishes the person's files on TFTP under `jobs/resv-<board>/` (and an NFS
//! or NBD export for the root) through the dispatcher's [`LabServices`] seam, exactly as a job
//! does, and sets the board's boot script; the boot request is stored with the reservation so
//! that a restarted appliance publishes it again.

use std::path::{Path, PathBuf};

use dispatcher::services::{LabServices, NbdMode};
use serde::{Deserialize, Serialize};

use super::api::error::ApiError;
use super::api::views::rfc3339;
use super::power::PowerAction;
use super::power_saving::{switch, with_board};
use super::App;
use crate::store::{now_ms, Board, BoardState, Powered, Reservation};

/// A reservation's length when the request names none (seconds): one hour.
pub const DEFAULT_SECONDS: u64 = 3600;
/// The longest reservation (seconds): 30 days.
pub const MAX_SECONDS: u64 = 30 * 86_400;

/// The id a reserved board's files and exports are published under: `resv-<board>`.
pub fn job_id(board: &str) -> String {
    format!("resv-{board}")
}

/// Where a reserved board's boot files are kept: `STATE_DIR/reservations/<board>`.
pub fn files_dir(app: &App, board: &str) -> PathBuf {
    app.config.state_dir.join("reservations").join(board)
}

/// The body of `POST /boards/{id}/reserve` (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// How long, in seconds (default one hour, at most 30 days).
    #[serde(default)]
    pub for_seconds: Option<u64>,
    /// What for, one line.
    #[serde(default)]
    pub note: Option<String>,
}

/// The body of `POST /boards/{id}/boot`: the person's kernel and what it boots with. Files
/// are http(s):// or file:// URLs or absolute paths on the appliance's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootRequest {
    /// The kernel (booted with `master.boot_command`).
    pub kernel: String,
    /// An initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// A device tree (default: the board's own, `${fdtcontroladdr}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb: Option<String>,
    /// Kernel arguments after the console and the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// A directory on the appliance's host exported read-write over NFS as the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfsroot: Option<String>,
    /// An image on the appliance's host exported over NBD (copy-on-write) as the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbdroot: Option<String>,
}

impl BootRequest {
    /// The files to fetch: (key, source).
    fn files(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![("kernel", self.kernel.as_str())];
        if let Some(i) = &self.initrd {
            v.push(("initrd", i));
        }
        if let Some(d) = &self.dtb {
            v.push(("dtb", d));
        }
        v
    }

    /// Checks the fields; the error is the 400 to answer.
    pub fn check(&self) -> Result<(), ApiError> {
        for (key, src) in self.files() {
            let url = ["http://", "https://", "file://"]
                .iter()
                .any(|p| src.starts_with(p));
            if !url && !src.starts_with('/') {
                return Err(ApiError::bad_request(format!(
                    "{key}: '{src}' is neither an http(s):// or file:// URL nor an absolute path"
                )));
            }
            local_name(key, src)?;
        }
        if self.nfsroot.is_some() && self.nbdroot.is_some() {
            return Err(ApiError::bad_request("give nfsroot or nbdroot, not both"));
        }
        if let Some(d) = &self.nfsroot {
            if !d.starts_with('/') || !Path::new(d).is_dir() {
                return Err(ApiError::bad_request(format!(
                    "nfsroot: {d} is not a directory on the appliance's host (an absolute path)"
                )));
            }
        }
        if let Some(f) = &self.nbdroot {
            if !f.starts_with('/') || !Path::new(f).is_file() {
                return Err(ApiError::bad_request(format!(
                    "nbdroot: {f} is not a file on the appliance's host (an absolute path)"
                )));
            }
        }
        if let Some(a) = &self.append {
            // U-Boot's hush refuses a quote inside the script's double-quoted bootargs.
            if a.chars().any(|c| c.is_control() || c == '"' || c == '\'') {
                return Err(ApiError::bad_request("append: one line without quotes"));
            }
        }
        Ok(())
    }
}

/// The name a fetched file is served under (inside `<key>/`): the URL's or path's last
/// component, with anything but letters, digits, `.`, `_`, `+` and `-` replaced by `_`.
fn local_name(key: &str, src: &str) -> Result<String, ApiError> {
    let name = dispatcher::artifacts::download::file_name(key, src)
        .map_err(|e| ApiError::bad_request(e.message))?;
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.starts_with('.') {
        clean.insert(0, '_');
    }
    Ok(clean)
}

/// What a reserved board's boot script loads and passes.
#[derive(Debug, Clone, Default)]
pub struct ScriptParts {
    /// The board.
    pub board: String,
    /// The kernel's TFTP path.
    pub kernel: String,
    /// The initrd's TFTP path.
    pub initrd: Option<String>,
    /// The device tree's TFTP path.
    pub dtb: Option<String>,
    /// Kernel arguments, in order (console, root, the person's).
    pub bootargs: String,
    /// `booti` or `bootz`.
    pub boot_command: String,
}

/// The U-Boot script of a reserved board's own boot: the kernel, device tree and initrd over
/// TFTP to `${kernel_addr_r}`, `${fdt_addr_r}` and `${ramdisk_addr_r}` (the initrd last, so
/// `${filesize}` is its size), the arguments, the boot command.
pub fn boot_script(p: &ScriptParts) -> String {
    let mut s = format!(
        "# labboot: board {board} is reserved: a kernel of its own over TFTP.\n\
         echo \"labboot: board {board} is reserved: booting a kernel of its own\"\n\
         setenv tftpwindowsize 16\n\
         tftpboot ${{kernel_addr_r}} {kernel}\n",
        board = p.board,
        kernel = p.kernel,
    );
    match &p.dtb {
        Some(d) => s.push_str(&format!(
            "tftpboot ${{fdt_addr_r}} {d}\nsetenv labboot_fdt ${{fdt_addr_r}}\n"
        )),
        None => s.push_str("setenv labboot_fdt ${fdtcontroladdr}\n"),
    }
    if let Some(i) = &p.initrd {
        s.push_str(&format!("tftpboot ${{ramdisk_addr_r}} {i}\n"));
    }
    s.push_str(&format!("setenv bootargs \"{}\"\n", p.bootargs));
    let ramdisk = if p.initrd.is_some() {
        "${ramdisk_addr_r}:${filesize}"
    } else {
        "-"
    };
    s.push_str(&format!(
        "{} ${{kernel_addr_r}} {ramdisk} ${{labboot_fdt}}\n",
        p.boot_command
    ));
    s.push_str("echo \"labboot: the boot command returned\"\n");
    s
}

/// The `console=` and `earlycon` arguments of the master's bootargs.
pub fn console_args(bootargs: &str) -> String {
    bootargs
        .split_whitespace()
        .filter(|a| a.starts_with("console=") || a.starts_with("earlycon"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn load(app: &App, id: &str) -> Result<Board, ApiError> {
    app.store
        .board(id)?
        .ok_or_else(|| ApiError::not_found(format!("no board {id}")))
}

fn event(app: &App, id: &str, message: &str) {
    tracing::info!(board = id, "{message}");
    let _ = app.store.add_event(id, "reservation", message);
}

fn services_error(what: &str, e: dispatcher::Error) -> ApiError {
    match e.kind {
        dispatcher::ErrorKind::JobError => ApiError::bad_request(format!("{what}: {}", e.message)),
        _ => ApiError::internal(format!("{what}: {}", e.message)),
    }
}

/// Reserves idle board `id` for the person behind `by` (`http.tokens[N]`); powers it on if it
/// is off. 404 unknown board; 409 a job runs, maintenance, already reserved or no power
/// control; 400 a bad length or note.
pub fn reserve(app: &App, id: &str, by: &str, req: &ReserveRequest) -> Result<Board, ApiError> {
    let seconds = req.for_seconds.unwrap_or(DEFAULT_SECONDS);
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err(ApiError::bad_request(format!(
            "for_seconds: between 1 and {MAX_SECONDS} (30 days)"
        )));
    }
    let note = req.note.clone().unwrap_or_default();
    if note.chars().count() > 500 || note.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "note: one line of at most 500 characters",
        ));
    }
    let b = load(app, id)?;
    match b.state {
        BoardState::Job => {
            return Err(ApiError::conflict(format!(
                "board {id} runs job {}: wait for it or cancel it",
                b.current_job.unwrap_or_default()
            )))
        }
        BoardState::Maintenance => {
            return Err(ApiError::conflict(format!(
                "board {id} is in maintenance: take it out first"
            )))
        }
        BoardState::Idle => {}
    }
    if let Some(r) = &b.reservation {
        return Err(ApiError::conflict(format!(
            "board {id} is already reserved by {} until {}",
            r.by,
            rfc3339(r.until)
        )));
    }
    if app.registry.configured(id).is_none() {
        return Err(ApiError::conflict(format!(
            "board {id} is not in the config: the appliance cannot power it"
        )));
    }
    let now = now_ms();
    let r = Reservation {
        by: by.to_string(),
        note,
        since: now,
        until: now + seconds as i64 * 1000,
        boot: None,
    };
    with_board(id, || -> Result<(), ApiError> {
        if !app.store.reserve(id, &r)? {
            return Err(ApiError::conflict(format!(
                "board {id} changed meanwhile (a job started?): try again"
            )));
        }
        let mut msg = format!("reserved by {by} until {}", rfc3339(r.until));
        if !r.note.is_empty() {
            msg.push_str(&format!(": {}", r.note));
        }
        event(app, id, &msg);
        if load(app, id)?.power_now() != Powered::On {
            if let Err(e) = switch(app, id, PowerAction::On) {
                tracing::warn!(board = id, "reserve: power on: {e:#}");
            }
        }
        Ok(())
    })?;
    load(app, id)
}

/// Ends the reservation of `id` (`why` goes into its event): its boot script, files and
/// exports go, the board is powered off, then on into the master, and the scheduler may give
/// it a job again once it checks in. 404 unknown board; 409 not reserved.
pub fn release(app: &App, id: &str, why: &str) -> Result<Board, ApiError> {
    load(app, id)?;
    with_board(id, || -> Result<(), ApiError> {
        if load(app, id)?.reservation.is_none() {
            return Err(ApiError::conflict(format!("board {id} is not reserved")));
        }
        unpublish(app, id);
        if let Err(e) = switch(app, id, PowerAction::Off) {
            tracing::warn!(board = id, "release: power off: {e:#}");
        }
        app.store.end_reservation(id)?;
        let _ = std::fs::remove_dir_all(files_dir(app, id));
        event(app, id, &format!("released ({why}): back to the master"));
        if let Err(e) = switch(app, id, PowerAction::On) {
            tracing::warn!(board = id, "release: power on: {e:#}");
        }
        Ok(())
    })?;
    app.wake.notify_one();
    load(app, id)
}

/// Boots the person's kernel on reserved board `id`: fetches the files, publishes them and
/// the root's export, sets the board's boot script and power-cycles it. 404 unknown board;
/// 409 not reserved; 400 a bad request or a file that cannot be fetched.
pub fn boot(app: &App, id: &str, req: &BootRequest) -> Result<Board, ApiError> {
    req.check()?;
    load(app, id)?;
    with_board(id, || -> Result<(), ApiError> {
        if load(app, id)?.reservation.is_none() {
            return Err(ApiError::conflict(format!(
                "board {id} is not reserved: reserve it first"
            )));
        }
        unpublish(app, id);
        let dir = files_dir(app, id);
        let _ = std::fs::remove_dir_all(&dir);
        for (key, src) in req.files() {
            fetch_file(&dir, key, src)?;
        }
        if let Err(e) = publish(app, id, req) {
            unpublish(app, id);
            return Err(e);
        }
        let boot = serde_json::to_value(req).map_err(|e| ApiError::internal(e.to_string()))?;
        app.store.set_reservation_boot(id, Some(&boot))?;
        let mut msg = format!("boots {}", req.kernel);
        for (what, v) in [
            ("initrd", &req.initrd),
            ("dtb", &req.dtb),
            ("nfsroot", &req.nfsroot),
            ("nbdroot", &req.nbdroot),
            ("append", &req.append),
        ] {
            if let Some(v) = v {
                msg.push_str(&format!(", {what} {v}"));
            }
        }
        event(app, id, &msg);
        switch(app, id, PowerAction::Cycle)
            .map_err(|e| ApiError::internal(format!("board {id}: power cycle: {e:#}")))?;
        // It boots no master: no check-in is due, which the health sweep would call offline.
        if let Ok(Some(mut b)) = app.store.board(id) {
            b.master_boot = None;
            let _ = app.store.put_board(&b);
        }
        Ok(())
    })?;
    load(app, id)
}

/// At start: publishes the boots of reserved boards again (the servers forgot them).
pub fn restore(app: &App) {
    let Ok(boards) = app.store.boards() else {
        return;
    };
    for b in boards.into_iter().filter(|b| app.registry.serves(b)) {
        let Some(boot) = b.reservation.and_then(|r| r.boot) else {
            continue;
        };
        let restored = serde_json::from_value::<BootRequest>(boot)
            .map_err(|e| ApiError::internal(format!("stored boot request: {e}")))
            .and_then(|req| with_board(&b.id, || publish(app, &b.id, &req)));
        match restored {
            Ok(_) => tracing::info!(board = %b.id, "reservation: its boot is published again"),
            Err(e) => {
                tracing::warn!(board = %b.id, "reservation: boot not restored: {}", e.message);
                let _ = app.store.add_event(
                    &b.id,
                    "reservation",
                    &format!("its boot was not restored after a restart: {}", e.message),
                );
            }
        }
    }
}

fn unpublish(app: &App, id: &str) {
    if let Err(e) = app.services.set_boot_script(id, None) {
        tracing::warn!(board = id, "reservation: clear boot script: {}", e.message);
    }
    if let Err(e) = app.services.release(&job_id(id)) {
        tracing::warn!(board = id, "reservation: release files: {}", e.message);
    }
}

/// Fetches `src` into `dir/<key>/<local name>`.
fn fetch_file(dir: &Path, key: &str, src: &str) -> Result<(), ApiError> {
    let artifact = dispatcher::job::Artifact {
        key: key.to_string(),
        url: src.to_string(),
        ..Default::default()
    };
    let sub = dir.join(key);
    let got = dispatcher::artifacts::fetch(&artifact, &sub, &mut |_| {})
        .map_err(|e| services_error("fetch", e))?;
    let want = sub.join(local_name(key, src)?);
    if got.path != want {
        std::fs::rename(&got.path, &want)
            .map_err(|e| ApiError::internal(format!("{key}: rename to {}: {e}", want.display())))?;
    }
    Ok(())
}

/// Publishes the fetched files and the root's export, and sets the board's boot script.
fn publish(app: &App, id: &str, req: &BootRequest) -> Result<String, ApiError> {
    let job = job_id(id);
    let dir = files_dir(app, id);
    if !dir.is_dir() {
        return Err(ApiError::internal(format!(
            "{} is gone: boot the board again",
            dir.display()
        )));
    }
    let prefix = app
        .services
        .publish_tftp(&job, &dir)
        .map_err(|e| services_error("tftp", e))?;
    let ip = app.server_ip;
    let root = match (&req.nfsroot, &req.nbdroot) {
        (Some(d), _) => {
            let path = app
                .services
                .add_nfs_export(&job, Path::new(d))
                .map_err(|e| services_error("nfsroot", e))?;
            Some(format!(
                "root=/dev/nfs rw nfsroot={ip}:{path},tcp,hard ip=dhcp \
                 labboot.root=nfs:{ip}:{path} labboot.overlay=none"
            ))
        }
        (None, Some(image)) => {
            let t = app
                .services
                .add_nbd_export(&job, Path::new(image), NbdMode::CopyOnWrite)
                .map_err(|e| services_error("nbdroot", e))?;
            Some(format!("labboot.root=nbd:{}:{}/{}", t.host, t.port, t.name))
        }
        (None, None) => None,
    };
    let path = |key: &str, src: &Option<String>| -> Result<Option<String>, ApiError> {
        src.as_deref()
            .map(|s| Ok(format!("{prefix}/{key}/{}", local_name(key, s)?)))
            .transpose()
    };
    let bootargs: Vec<String> = [
        Some(console_args(&app.config.master.bootargs)),
        root,
        req.append.clone(),
    ]
    .into_iter()
    .flatten()
    .filter(|a| !a.trim().is_empty())
    .collect();
    let script = boot_script(&ScriptParts {
        board: id.to_string(),
        kernel: format!("{prefix}/kernel/{}", local_name("kernel", &req.kernel)?),
        initrd: path("initrd", &req.initrd)?,
        dtb: path("dtb", &req.dtb)?,
        bootargs: bootargs.join(" "),
        boot_command: app.config.master.boot_command.clone(),
    });
    app.services
        .set_boot_script(id, Some(&script))
        .map_err(|e| services_error("boot script", e))?;
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_script_loads_kernel_dtb_then_initrd() {
        let s = boot_script(&ScriptParts {
            board: "qemu-01".into(),
            kernel: "jobs/resv-qemu-01/kernel/vmlinuz".into(),
            initrd: Some("jobs/resv-qemu-01/initrd/initrd.cpio.gz".into()),
            dtb: Some("jobs/resv-qemu-01/dtb/board.dtb".into()),
            bootargs: "console=ttyAMA0 labboot.root=ramdisk".into(),
            boot_command: "booti".into(),
        });
        // U-Boot's hush answers "syntax error" to a single quote, even in a comment.
        assert!(!s.contains('\''), "{s}");
        let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines[2..],
            [
                "tftpboot ${kernel_addr_r} jobs/resv-qemu-01/kernel/vmlinuz",
                "tftpboot ${fdt_addr_r} jobs/resv-qemu-01/dtb/board.dtb",
                "setenv labboot_fdt ${fdt_addr_r}",
                "tftpboot ${ramdisk_addr_r} jobs/resv-qemu-01/initrd/initrd.cpio.gz",
                "setenv bootargs \"console=ttyAMA0 labboot.root=ramdisk\"",
                "booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${labboot_fdt}",
                "echo \"labboot: the boot command returned\"",
            ]
        );
        let bare = boot_script(&ScriptParts {
            board: "b".into(),
            kernel: "jobs/resv-b/kernel/zImage".into(),
            bootargs: "console=ttyS0,115200n8".into(),
            boot_command: "bootz".into(),
            ..Default::default()
        });
        assert!(
            bare.contains("setenv labboot_fdt ${fdtcontroladdr}\n"),
            "{bare}"
        );
        assert!(
            bare.contains("\nbootz ${kernel_addr_r} - ${labboot_fdt}\n"),
            "{bare}"
        );
        assert!(!bare.contains("ramdisk_addr_r"), "{bare}");
    }

    #[test]
    fn console_comes_from_the_master_bootargs() {
        assert_eq!(
            console_args("console=ttyAMA0 quiet cryptomgr.notests"),
            "console=ttyAMA0"
        );
        assert_eq!(
            console_args("earlycon console=tty0 console=ttyS0,115200 rw"),
            "earlycon console=tty0 console=ttyS0,115200"
        );
        assert_eq!(console_args("quiet"), "");
    }

    #[test]
    fn boot_requests_are_checked() {
        let ok = BootRequest {
            kernel: "http://files.lab/k/Image?x=1".into(),
            initrd: Some("/srv/initrd.cpio.gz".into()),
            dtb: Some("file:///srv/my board.dtb".into()),
            append: Some("labboot.root=ramdisk ${board_id}".into()),
            ..Default::default()
        };
        ok.check().unwrap();
        assert_eq!(
            local_name("dtb", "file:///srv/my board.dtb").unwrap(),
            "my_board.dtb"
        );
        assert_eq!(
            local_name("kernel", "http://h/.Image?x").unwrap(),
            "_.Image"
        );
        let bad = |r: BootRequest, want: &str| {
            let e = r.check().unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(want), "{}", e.message);
        };
        bad(
            BootRequest {
                kernel: "Image".into(),
                ..Default::default()
            },
            "kernel: 'Image' is neither",
        );
        bad(
            BootRequest {
                kernel: "http://h/dir/".into(),
                ..Default::default()
            },
            "names no file",
        );
        for quoted in ["a\"b", "it's", "two\nlines"] {
            bad(
                BootRequest {
                    append: Some(quoted.into()),
                    ..ok.clone()
                },
                "append: one line without quotes",
            );
        }
        bad(
            BootRequest {
                nfsroot: Some("/".into()),
                nbdroot: Some("/etc/hostname".into()),
                ..ok.clone()
            },
            "not both",
        );
        bad(
            BootRequest {
                nfsroot: Some("/nonexistent-labboot".into()),
                ..ok.clone()
            },
            "nfsroot: /nonexistent-labboot is not a directory",
        );
        bad(
            BootRequest {
                nbdroot: Some("/".into()),
                ..ok.clone()
            },
            "nbdroot: / is not a file",
        );
        let parsed: Result<BootRequest, _> =
            serde_json::from_str(r#"{"kernel": "/k", "initramfs": "/i"}"#);
        assert!(parsed.unwrap_err().to_string().contains("unknown field"));
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json.get("nfsroot"), None);
        assert_eq!(serde_json::from_value::<BootRequest>(json).unwrap(), ok);
    }
}
