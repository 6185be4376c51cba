//! The master boots: `labboot image build` of the shipped recipe, then QEMU arm64 with
//! `-kernel vmlinuz -initrd initrd.cpio.gz` (no firmware) in a private network namespace,
//! `labboot dhcp` for DHCP and `labboot nbd` serving rootfs.squashfs read-only. The board must print
//! `labboot-master board=<id> root=<ro lower> overlay=tmpfs`, accept a file written in `/`,
//! send its agent's check-in (with the `labboot.token=` bearer token) and leave the image file's
//! sha256 unchanged.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use labboot_tests::binary::{labboot_bin, make_sdcard};
use labboot_tests::console::Console;
use labboot_tests::netns::Netns;
use labboot_tests::process::ServerProcess;
use labboot_tests::qemu::{Board, QEMU_ARM64, UBOOT_ARM64};
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

/// The body of an HTTP request once all of it (its Content-Length) has arrived.
fn request_body(request: &str) -> Option<&str> {
    let (head, body) = request.split_once("\r\n\r\n")?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            value.trim().parse::<usize>().ok()
        } else {
            None
        }
    })?;
    body.get(..length)
}

fn build_master(out: &Path) {
    labboot_tests::master::build_master(Path::new(env!("CARGO_TARGET_TMPDIR")), out);
}

/// Starts `labboot dhcp` on `tap` and `labboot nbd` exporting `image` read-only as `master`,
/// both on 10.77.0.1 inside `ns`.
fn start_dhcp_and_nbd(ns: &Netns, tap: &str, image: &Path) -> (ServerProcess, ServerProcess) {
    let dhcp = labboot_tests::master::start_dhcp(ns, tap);
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
    let nbd =
        ServerProcess::start("labboot nbd", nbd, "listening on", Duration::from_secs(30)).unwrap();
    (dhcp, nbd)
}

/// Through real U-Boot: a labboot card's bootstrap script fetches `labboot/board7/boot.scr`,
/// which is the `boot.scr` the image build generated; it loads the kernel and initrd over TFTP
/// with `tftpwindowsize` and boots the master with its root over NBD.
#[test]
fn master_boots_through_uboot_with_the_generated_boot_scr() {
    if !(require::root() && require::tool(QEMU_ARM64) && require::file(UBOOT_ARM64)) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    build_master(&out);
    let root = work.path().join("tftp");
    std::fs::create_dir_all(root.join("labboot/master")).unwrap();
    std::fs::create_dir_all(root.join("labboot/board7")).unwrap();
    for f in ["vmlinuz", "initrd.cpio.gz"] {
        std::fs::copy(out.join(f), root.join("labboot/master").join(f)).unwrap();
    }
    std::fs::copy(out.join("boot.scr"), root.join("labboot/board7/boot.scr")).unwrap();
    let card = work.path().join("sd.img");
    make_sdcard(&card, "board7", &[]);
    let image = out.join("rootfs.squashfs");
    let before = sha256(&image);

    let ns = Netns::new("ibu").unwrap();
    let tap = ns.add_tap("ibtap0", "10.77.0.1/24").unwrap();
    let (_dhcp, _nbd) = start_dhcp_and_nbd(&ns, &tap, &image);
    let mut tftp = ns.command(labboot_bin().to_str().unwrap());
    tftp.args([
        "--log",
        "info",
        "tftp",
        "--listen",
        "10.77.0.1:69",
        "--root",
    ])
    .arg(&root);
    let mut tftp = ServerProcess::start(
        "labboot tftp",
        tftp,
        "listening on",
        Duration::from_secs(30),
    )
    .unwrap();

    let mut board = Board::boot_card(&ns, &card, &tap).expect("start the QEMU board");
    let started = std::time::Instant::now();
    let console = board.console();
    console
        .expect(
            r"labboot: fetching labboot/board7/boot.scr from 10\.77\.0\.1",
            Duration::from_secs(120),
        )
        .unwrap();
    console
        .expect(r"Starting kernel", Duration::from_secs(180))
        .unwrap();
    console
        .expect(
            r"labboot-master board=board7 root=nbd:10\.77\.0\.1:10809/master overlay=tmpfs",
            Duration::from_secs(300),
        )
        .unwrap();
    eprintln!(
        "power-on to master up: {:.1} s (TCG)",
        started.elapsed().as_secs_f64()
    );
    board.power_off();
    tftp.wait_for_line(
        r"tftp: sent.*path=labboot/master/vmlinuz.*window=16",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        sha256(&image),
        before,
        "the read-only export changed on the host"
    );
}

#[test]
fn master_boots_over_nbd_with_a_tmpfs_overlay() {
    if !(require::root() && require::tool("qemu-system-aarch64")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    build_master(&out);
    let image = out.join("rootfs.squashfs");
    let before = sha256(&image);

    let ns = Netns::new("ib").unwrap();
    let tap = ns.add_tap("ibtap0", "10.77.0.1/24").unwrap();
    // labboot's own servers: DHCP on the tap, the master exported read-only over NBD.
    let (_dhcp, _nbd) = start_dhcp_and_nbd(&ns, &tap, &image);
    // The agent's check-in: one HTTP request, caught by busybox nc (answers nothing). Its stdin
    // stays open (a pipe held by the child handle): at EOF nc would half-close the connection,
    // which no HTTP server does before answering, and the agent would stop sending.
    let mut agent = ns
        .command("busybox")
        .args(["nc", "-l", "-p", "8080"])
        .stdin(Stdio::piped())
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
        labboot.root=nbd:10.77.0.1:10809/master labboot.agent=http://10.77.0.1:8080/ \
        labboot.token=t0ken-test";
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

    // The first check-in, whole: its headers and a body as long as its Content-Length.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let request = loop {
        let text = String::from_utf8_lossy(&request.lock().unwrap()).into_owned();
        if request_body(&text).is_some() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{}", console.output());
    assert!(
        request.starts_with("POST /api/v1/agent/checkin HTTP/1.0\r\n"),
        "agent sent:\n{request}"
    );
    assert!(
        request.contains("\r\nAuthorization: Bearer t0ken-test\r\n"),
        "agent sent:\n{request}"
    );
    let body = request_body(&request)
        .unwrap_or_else(|| panic!("no complete check-in body; agent sent:\n{request}"));
    let checkin: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("check-in body is not JSON ({e}):\n{body}"));
    let field = |name: &str| checkin.get(name).and_then(|v| v.as_str());
    assert_eq!(field("board"), Some("board7"), "{body}");
    assert_eq!(field("root"), Some("nbd:10.77.0.1:10809/master"), "{body}");
    drop(_qemu);
    assert_eq!(
        sha256(&image),
        before,
        "the read-only export changed on the host"
    );
}
