//! Shared by the NBD end-to-end tests: pattern images, a `labboot nbd` process on 127.0.0.1
//! with port 0, sha256 through coreutils, and Python scripts run against libnbd.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;

/// The Python with Debian's libnbd bindings (`nbdsh` itself runs whatever `python3` is first on
/// PATH, which may lack them).
pub const PYTHON: &str = "/usr/bin/python3";

/// Writes a `len`-byte image whose 8-byte words are a hash of their index (so any misplaced
/// range shows), and returns its path.
pub fn pattern_image(dir: &Path, name: &str, len: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    let mut chunk = Vec::with_capacity(1 << 20);
    let words = len / 8;
    let mut w = 0u64;
    while w < words {
        chunk.clear();
        let end = (w + (1 << 17)).min(words);
        for i in w..end {
            chunk.extend_from_slice(&splitmix(i).to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
        w = end;
    }
    f.write_all(&splitmix(words).to_le_bytes()[..(len % 8) as usize])
        .unwrap();
    f.flush().unwrap();
    path
}

fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// sha256 of a file, by `sha256sum` (fast even in a debug test build).
pub fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs a command to completion and panics with everything it printed if it fails.
pub use labboot_tests::process::run_ok as run;

/// A running `labboot nbd` and the port it bound.
pub struct Nbd {
    pub process: ServerProcess,
    pub port: u16,
}

impl Nbd {
    /// Starts `labboot nbd --listen 127.0.0.1:0` with these `--export` specs and extra flags.
    pub fn start(exports: &[String], extra: &[&str]) -> Nbd {
        let mut cmd = Command::new(labboot_bin());
        cmd.args(["nbd", "--listen", "127.0.0.1:0"]);
        for e in exports {
            cmd.arg("--export").arg(e);
        }
        cmd.args(extra);
        let mut process = ServerProcess::start(
            "labboot nbd",
            cmd,
            r"nbd: listening on 127\.0\.0\.1:\d+",
            Duration::from_secs(60),
        )
        .unwrap();
        let line = process
            .wait_for_line(r"nbd: listening on", Duration::from_secs(1))
            .unwrap();
        let port = regex::Regex::new(r"listening on 127\.0\.0\.1:(\d+)")
            .unwrap()
            .captures(&line)
            .unwrap()[1]
            .parse()
            .unwrap();
        Nbd { process, port }
    }

    /// `nbd://127.0.0.1:PORT/NAME`.
    pub fn uri(&self, name: &str) -> String {
        format!("nbd://127.0.0.1:{}/{name}", self.port)
    }
}

/// Requires python3-libnbd (with nbdsh, its command); `false` only under LABBOOT_ALLOW_SKIP=1.
#[must_use]
pub fn libnbd_python() -> bool {
    if !require::tool("nbdsh") || !require::file(PYTHON) {
        return false;
    }
    let probe = Command::new(PYTHON)
        .args(["-c", "import nbd"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "this test needs the Python libnbd bindings for {PYTHON} (Debian python3-libnbd; run scripts/setup.sh)"
    );
    true
}

/// Runs a Python `script` (with libnbd importable) with `args`; panics with its output on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = run(Command::new(PYTHON).arg("-c").arg(script).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
