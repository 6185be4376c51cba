//! Real TFTP clients (tftp-hpa, curl, atftp) against the in-process server on 127.0.0.1:0.
//!
//! Each client downloads files of 0 bytes, exactly one block, one byte over, and 70 MiB at
//! blksize 512 (143 360 blocks: the block number wraps past 65535 to 0), and the sha256 of what
//! it wrote must match. The tftp-hpa 5.2 client in Debian 12 cannot send options (no `blksize`
//! command; `tftp -c help` lists none), so it covers plain RFC 1350; curl and atftp cover blksize
//! and atftp covers windowsize.

mod tftp_support;

use std::path::Path;
use std::process::Command;

use tftp_support::{make_file, require_tool, run_ok, sha256, sha256_file, tempdir, TestServer};

const MIB: u64 = 1024 * 1024;
const BIG: u64 = 70 * MIB;

/// Creates the files for `blksize` in `root`: (name, sha256).
fn files(root: &Path, blksize: u64, big: u64) -> Vec<(String, [u8; 32])> {
    [0, blksize, blksize + 1, big]
        .into_iter()
        .map(|size| {
            let name = format!("f{size}.bin");
            let sha = make_file(root, &name, size);
            (name, sha)
        })
        .collect()
}

fn tftp_hpa_get(port: u16, remote: &str, local: &Path) -> std::process::Output {
    require_tool("tftp");
    let out = run_ok(
        Command::new("tftp")
            .args([
                "-m",
                "binary",
                "127.0.0.1",
                &port.to_string(),
                "-c",
                "get",
                remote,
            ])
            .arg(local),
    );
    // tftp-hpa exits 0 even when the server answers ERROR; it reports it on stdout/stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("Error code"), "tftp get {remote}: {text}");
    out
}

#[test]
fn tftp_hpa_downloads_every_size_with_rollover() {
    let root = tempdir();
    let out = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    for (name, sha) in files(root.path(), 512, BIG) {
        let local = out.path().join(&name);
        tftp_hpa_get(server.port(), &name, &local);
        assert_eq!(sha256_file(&local), sha, "tftp-hpa {name}");
    }
}

fn curl_get(port: u16, remote: &str, blksize: Option<u64>) -> Vec<u8> {
    require_tool("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "120"]);
    if let Some(b) = blksize {
        cmd.args(["--tftp-blksize", &b.to_string()]);
    }
    // stdout rather than -o: curl creates no file at all for an empty download.
    cmd.arg(format!("tftp://127.0.0.1:{port}/{remote}"));
    run_ok(&mut cmd).stdout
}

#[test]
fn curl_downloads_every_size_at_blksize_512_with_rollover() {
    let root = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    for (name, sha) in files(root.path(), 512, BIG) {
        let got = curl_get(server.port(), &name, Some(512));
        assert_eq!(sha256(&got), sha, "curl {name}");
    }
}

#[test]
fn curl_downloads_every_size_at_blksize_1468() {
    let root = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    for (name, sha) in files(root.path(), 1468, 3 * MIB) {
        let got = curl_get(server.port(), &name, Some(1468));
        assert_eq!(sha256(&got), sha, "curl --tftp-blksize 1468 {name}");
    }
    // Without --tftp-blksize curl negotiates nothing but tsize.
    let got = curl_get(server.port(), "f1469.bin", None);
    assert_eq!(sha256(&got), sha256_file(&root.path().join("f1469.bin")));
}

fn atftp_get(port: u16, remote: &str, local: &Path, options: &[&str]) {
    require_tool("atftp");
    let mut cmd = Command::new("atftp");
    for o in options {
        cmd.args(["--option", o]);
    }
    cmd.args(["-g", "-r", remote, "-l"])
        .arg(local)
        .args(["127.0.0.1", &port.to_string()]);
    run_ok(&mut cmd);
}

#[test]
fn atftp_window_16_downloads_every_size_with_rollover() {
    let root = tempdir();
    let out = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    for (name, sha) in files(root.path(), 512, BIG) {
        let local = out.path().join(&name);
        atftp_get(
            server.port(),
            &name,
            &local,
            &["windowsize 16", "blksize 512", "tsize enable"],
        );
        assert_eq!(sha256_file(&local), sha, "atftp windowsize 16 {name}");
    }
}

#[test]
fn atftp_window_and_blksize_1468_download_every_size() {
    let root = tempdir();
    let out = tempdir();
    // The server caps the window at 8: atftp must follow what the OACK grants.
    let server = TestServer::dir(root.path(), |c| c.max_window = 8);
    for (name, sha) in files(root.path(), 1468, 5 * MIB) {
        for window in ["windowsize 4", "windowsize 64"] {
            let local = out.path().join(format!("{name}-{}", &window[11..]));
            atftp_get(server.port(), &name, &local, &[window, "blksize 1468"]);
            assert_eq!(sha256_file(&local), sha, "atftp {window} {name}");
        }
    }
}

#[test]
fn clients_cannot_leave_the_root() {
    let base = tempdir();
    let root = base.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(base.path().join("secret"), b"top secret\n").unwrap();
    std::os::unix::fs::symlink(base.path().join("secret"), root.join("link")).unwrap();
    let out = tempdir();
    let server = TestServer::dir(&root, |_| {});
    let port = server.port().to_string();
    let secret_abs = base.path().join("secret").display().to_string();

    // tftp-hpa: `..`, an absolute path, the symlink. It reports the ERROR but exits 0.
    require_tool("tftp");
    for remote in [
        "../secret",
        "../../../../etc/passwd",
        &secret_abs,
        "/link/../../secret",
        "link",
    ] {
        let local = out.path().join("hpa");
        let o = Command::new("tftp")
            .args(["-m", "binary", "127.0.0.1", &port, "-c", "get", remote])
            .arg(&local)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(text.contains("Error code"), "tftp-hpa {remote}: {text}");
        let got = std::fs::read(&local).unwrap_or_default();
        assert!(got.is_empty(), "tftp-hpa {remote} received {got:?}");
    }

    // curl and atftp fail with a non-zero exit.
    require_tool("curl");
    for remote in ["..%2Fsecret", "link", "%2F%2Fetc%2Fpasswd"] {
        let o = Command::new("curl")
            .args(["--silent", &format!("tftp://127.0.0.1:{port}/{remote}")])
            .output()
            .unwrap();
        assert!(!o.status.success(), "curl {remote} succeeded");
        assert!(o.stdout.is_empty(), "curl {remote} received data");
    }
    require_tool("atftp");
    for remote in ["../secret", "link", "\\..\\secret"] {
        let local = out.path().join("atftp");
        let o = Command::new("atftp")
            .args(["-g", "-r", remote, "-l"])
            .arg(&local)
            .args(["127.0.0.1", &port])
            .output()
            .unwrap();
        assert!(!o.status.success(), "atftp {remote} succeeded");
        let got = std::fs::read(&local).unwrap_or_default();
        assert!(got.is_empty(), "atftp {remote} received {got:?}");
    }
}
