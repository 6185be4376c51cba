//! Per-board boot scripts, rendered when a board asks for `labboot/<board_id>/boot.scr`.
//!
//! Until the appliance keeps board state, an admin writes each board's boot commands as plain
//! text: `<dir>/<board_id>.txt`, or `<dir>/default.txt` for every board without its own. At each
//! request the text gets `{BOARD_ID}` and `{CLIENT_IP}` filled in (LAVA's placeholder rules) and
//! is wrapped into a script image as `mkimage -T script` would, so editing a file takes effect on
//! the board's next boot without any build step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use netboot::tftp::{Content, RequestPath, TftpError, VirtualResolver};
use uboot_scripts::bootstrap::check_board_id;
use uboot_scripts::image::{build_script, timestamp, Arch, ScriptSpec};
use uboot_scripts::placeholders::Substitutions;

/// Name of the template used for boards without their own.
pub const DEFAULT_TEMPLATE: &str = "default.txt";

/// Renders board scripts from a directory of text templates.
#[derive(Debug, Clone)]
pub struct BoardScripts {
    dir: PathBuf,
    arch: Arch,
}

impl BoardScripts {
    /// Templates in `dir`; images are stamped with `arch`.
    pub fn new(dir: &Path, arch: Arch) -> anyhow::Result<BoardScripts> {
        anyhow::ensure!(
            dir.is_dir(),
            "board script directory {} does not exist",
            dir.display()
        );
        Ok(BoardScripts {
            dir: dir.to_path_buf(),
            arch,
        })
    }

    /// The script image for `board_id`, asked for by `client`.
    pub fn render(&self, client: SocketAddr, board_id: &str) -> Result<Vec<u8>, TftpError> {
        check_board_id(board_id)
            .map_err(|e| TftpError::access_violation(format!("board id: {e}")))?;
        let own = self.dir.join(format!("{board_id}.txt"));
        let path = if own.is_file() {
            own
        } else {
            self.dir.join(DEFAULT_TEMPLATE)
        };
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TftpError::not_found(format!(
                "no boot script for board {board_id} (no {board_id}.txt or {DEFAULT_TEMPLATE})"
            )),
            _ => TftpError::from_io(&path.display().to_string(), &e),
        })?;
        let mut subs = Substitutions::new();
        subs.set("{BOARD_ID}", board_id)
            .set("{CLIENT_IP}", client.ip().to_string());
        let mut script = subs.apply(&text.lines().collect::<Vec<_>>()).join("\n");
        script.push('\n');
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (time, _) =
            timestamp::source_date(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(), now);
        let spec = ScriptSpec {
            arch: self.arch,
            name: format!("labboot {board_id}").chars().take(32).collect(),
            time,
        };
        tracing::info!(board = board_id, %client, template = %path.display(), "rendering board script");
        build_script(&spec, script.as_bytes())
            .map_err(|e| TftpError::not_found(format!("{}: {e}", path.display())))
    }

    /// Adds these scripts to a TFTP resolver: requests for `labboot/<board_id>/boot.scr`.
    pub fn serve_in(self, resolver: VirtualResolver) -> VirtualResolver {
        resolver.with_generator(move |client, path: &RequestPath| {
            let parts: Vec<&str> = path.components().collect();
            match parts.as_slice() {
                ["labboot", board, "boot.scr"] => {
                    Some(self.render(client, board).map(Content::from_bytes))
                }
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uboot_scripts::image::inspect;

    #[test]
    fn renders_own_then_default_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b1.txt"),
            "echo own {BOARD_ID} {CLIENT_IP}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("default.txt"), "echo default {BOARD_ID}\n").unwrap();
        let scripts = BoardScripts::new(dir.path(), Arch::Arm64).unwrap();
        let client: SocketAddr = "10.0.0.7:1234".parse().unwrap();
        let image = scripts.render(client, "b1").unwrap();
        let listing = inspect(&image).unwrap();
        assert_eq!(listing.part(&image, 0).unwrap(), b"echo own b1 10.0.0.7\n");
        let image = scripts.render(client, "b2").unwrap();
        let listing = inspect(&image).unwrap();
        assert_eq!(listing.part(&image, 0).unwrap(), b"echo default b2\n");
        assert!(scripts.render(client, "..").is_err());
    }

    #[test]
    fn missing_template_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = BoardScripts::new(dir.path(), Arch::Arm64).unwrap();
        let err = scripts
            .render("10.0.0.7:1234".parse().unwrap(), "b1")
            .unwrap_err();
        assert!(
            err.message.contains("no boot script for board b1"),
            "{err:?}"
        );
    }
}
