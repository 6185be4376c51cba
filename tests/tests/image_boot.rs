//! The master boots: `labboot image build` of the shipped recipe, then QEMU arm64 with
//! `-kernel vmlinuz -initrd initrd.cpio.gz` (no firmware) in a private network namespace,
//! `labboot dhcp` for DHCP and `labboot nbd` serving rootfs.squashfs read-only. The board must print
//! `labboot-master board=<id> root=<ro lower> overlay=tmpfs`, accept a file written in `/`,
//! and leave the image file's sha256 unchanged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use labboot_tests::binary::{labboot_bin, workspace_root};
use labboot_tests::console::Console;
use labboot_tests::netns::Netns;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;
use sha2::{Digest, Sha256};

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn master_boots_over_nbd_with_a_tmpfs_overlay() {
    if !(require::root() && require::tool("qemu-system-aarch64")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let cache = std::env::var_os("LABBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("imagebuilder-cache"));
    let status = Command::new(labboot_bin())
        .args(["image", "build", "-q"])
        .arg(workspace_root().join("imagebuilder/recipes/master-arm64.yaml"))
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .status()
        .unwrap();
    assert!(status.success(), "labboot image build failed");
    let image = out.join("rootfs.squashfs");
    let before = sha256(&image);

    let ns = Netns::new("ib").unwrap();
    let tap = ns.add_tap("ibtap0", "10.77.0.1/24").unwrap();
    // labboot's own servers: DHCP on the tap, the master exported read-only over NBD.
    let mut dhcp = ns.command(labboot_bin().to_str().unwrap());
    dhcp.args([
        "--log",
        "info",
        "dhcp",
        "--interface",
        &tap,
        "--server-ip",
        "10.77.0.1",
    ])
    .args(["--pool", "10.77.0.10-10.77.0.20", "--prefix", "24"]);
    let _dhcp = ServerProcess::start(
        "labboot dhcp",
        dhcp,
        "listening on",
        Duration::from_secs(30),
    )
    .unwrap();
    let mut nbd = ns.command(labboot_bin().to_str().unwrap());
    nbd.args([
        "--log",
        "info",
        "nbd",
        "--listen",
        "10.77.0.1:10809",
        "--export",
    ])
    .arg(format!("master={}:ro", image.display()));
    let _nbd =
        ServerProcess::start("labboot nbd", nbd, "listening on", Duration::from_secs(30)).unwrap();
    // The agent's check-in: one HTTP request, caught by busybox nc (answers nothing).
    let mut agent = ns
        .command("busybox")
        .args(["nc", "-l", "-p", "8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let request = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut agent_out = agent.stdout.take().unwrap();
    let sink = request.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut agent_out, &mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let _agent = Guard(agent);

    let socket = work.path().join("console.sock");
    let append = "console=ttyAMA0 panic=-1 labboot.board=board7 \
        labboot.root=nbd:10.77.0.1:10809/master labboot.agent=http://10.77.0.1:8080/";
    let qemu = ns
        .command("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "cortex-a57", "-smp", "1", "-m", "512"])
        .args([
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initrd.cpio.gz"))
        .args(["-append", append])
        .arg("-chardev")
        .arg(format!(
            "socket,id=console,path={},server=on,wait=on",
            socket.display()
        ))
        .args(["-serial", "chardev:console"])
        .arg("-netdev")
        .arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no"))
        .args(["-device", "virtio-net-device,netdev=net0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _qemu = Guard(qemu);
    let started = std::time::Instant::now();
    let log = work.path().join("console.log");
    let mut console = Console::connect(&socket, &log, Duration::from_secs(20)).unwrap();

    console
        .expect(
            r"labboot-master board=board7 root=nbd:10\.77\.0\.1:10809/master overlay=tmpfs",
            Duration::from_secs(300),
        )
        .unwrap();
    eprintln!(
        "master up {:.1} s after QEMU started (TCG)",
        started.elapsed().as_secs_f64()
    );
    console
        .send_line("echo written-by-test >/probe; echo \"probe=$(cat /probe)\"")
        .unwrap();
    console
        .expect(r"probe=written-by-test", Duration::from_secs(30))
        .unwrap();
    console
        .send_line("grep -c ' / overlay ' /proc/mounts | sed 's/^/overlays=/'")
        .unwrap();
    console
        .expect(r"overlays=1", Duration::from_secs(30))
        .unwrap();

    let want = r#""board":"board7","root":"nbd:10.77.0.1:10809/master""#;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let request = loop {
        let text = String::from_utf8_lossy(&request.lock().unwrap()).into_owned();
        if text.contains(want) || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{}", console.output());
    assert!(
        request.starts_with("POST /api/v1/agent/checkin HTTP/1.0\r\n"),
        "agent sent:\n{request}"
    );
    assert!(request.contains(want), "agent sent:\n{request}");
    drop(_qemu);
    assert_eq!(
        sha256(&image),
        before,
        "the read-only export changed on the host"
    );
}
