//! The appliance VM image, end to end (`make vm-test`; `make test` skips it: it builds the
//! release package and the image twice, about 10 minutes on 2 cores).
//!
//! 1. `scripts/deb.sh` builds the package; `labboot image build appliance/vm/recipe.yaml` runs
//!    twice into two directories: `disk.img` and `disk.qcow2` must have the same sha256.
//! 2. The image boots in `qemu-system-x86_64` with OVMF: its lab NIC on a tap bridged, inside a
//!    private namespace, with the board's tap; its second NIC user-mode with a port forward to
//!    the API; a config drive labelled LABBOOT gives the lab settings.
//! 3. Through the port forward, as an admin would: the board is added (`POST /boards`), its
//!    card downloaded (`POST /boards/{id}/sdcard`); the QEMU arm64 board boots U-Boot from the
//!    card, then the master from the VM; its agent checks in; a job submitted with
//!    `labboot job submit --wait` completes.
//!
//! KVM runs the VM where it can run firmware; this machine's /dev/kvm is PVM (kvm_pvm), which
//! runs only PVM-aware 64-bit guest kernels, so there the VM runs under TCG and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labboot_tests::appliance::agent_job;
use labboot_tests::binary::labboot_bin;
use labboot_tests::netns::Netns;
use labboot_tests::process::run_ok;
use labboot_tests::qemu::Board;
use labboot_tests::require;

const TOKEN: &str = "vm-test-admin-token";
const API_PORT: u16 = 18080;
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const BOARD: &str = "vm-board-1";
const LAB_MAC: &str = "52:54:00:4c:42:02";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// [`run_ok`], its stdout as text.
fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// sha256 of the outputs named in a build's manifest.json.
fn output_sha(dir: &Path, name: &str) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {}/manifest.json", dir.display()))["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn build_image(out: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(out);
    let began = Instant::now();
    run(Command::new(labboot_bin())
        .current_dir(repo())
        .args([
            "image",
            "build",
            "appliance/vm/recipe.yaml",
            "--quiet",
            "--out",
        ])
        .arg(out));
    began.elapsed()
}

/// `-accel` and `-cpu`: KVM unless /dev/kvm is missing or is PVM, which cannot run firmware.
fn accel() -> (&'static str, &'static str, &'static str) {
    if !Path::new("/dev/kvm").exists() {
        ("tcg", "max", "no /dev/kvm")
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        (
            "tcg",
            "max",
            "/dev/kvm is PVM (kvm_pvm), which cannot run UEFI firmware",
        )
    } else {
        ("kvm", "host", "KVM")
    }
}

/// The appliance VM's QEMU, killed on drop; its serial console goes to a file.
struct Vm {
    child: Child,
    serial: PathBuf,
}

impl Vm {
    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` inside the namespace against the VM's API: (status, body).
fn api_as(ns: &Netns, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "-m", "20", "-X", method, "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("http://127.0.0.1:{API_PORT}/api/v1{path}"));
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// [`api_as`] with the admin token of the config drive.
fn api(ns: &Netns, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    api_as(ns, TOKEN, method, path, body)
}

/// Starts the appliance VM in `ns` from `disk` (a snapshot: the image is not written), its
/// second NIC on the lab bridge's tap `vmlab0`, the first forwarding the API; `extra` adds a
/// config drive or a kernel to boot.
fn start_vm(ns: &Netns, disk: &Path, extra: &[String], serial: PathBuf) -> Vm {
    let (accel, cpu, _) = accel();
    let child = ns
        .command("qemu-system-x86_64")
        .args([
            "-accel", accel, "-cpu", cpu, "-machine", "q35", "-m", "1536",
        ])
        .args([
            "-smp", "2", "-bios", OVMF, "-display", "none", "-monitor", "none",
        ])
        .arg("-nodefaults")
        .arg("-drive")
        .arg(format!("file={},if=virtio,snapshot=on", disk.display()))
        .args(extra)
        .args([
            "-netdev",
            &format!("user,id=mgmt,hostfwd=tcp:127.0.0.1:{API_PORT}-:8080"),
        ])
        .args([
            "-device",
            "virtio-net-pci,netdev=mgmt,mac=52:54:00:4c:42:01",
        ])
        .args([
            "-netdev",
            "tap,id=lab,ifname=vmlab0,script=no,downscript=no",
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=lab,mac={LAB_MAC}"),
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    Vm { child, serial }
}

fn wait_until(what: &str, timeout: Duration, vm: &Vm, mut f: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !f() {
        assert!(
            began.elapsed() < timeout,
            "{what}: not within {timeout:?}; the VM's serial console:\n{}",
            vm.serial()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    began.elapsed()
}

/// In `make test`: the VM recipe checks (`labboot image build --check`, in a copy of the tree
/// with a stand-in package, so no `make deb` is needed) and the first-boot script parses.
#[test]
fn vm_recipe_and_first_boot_script_check() {
    let copy = tempfile::tempdir().unwrap();
    let c = copy.path();
    for (from, to) in [
        ("appliance/vm/recipe.yaml", "appliance/vm/recipe.yaml"),
        ("appliance/vm/firstboot.sh", "appliance/vm/firstboot.sh"),
        (
            "appliance/vm/labboot-firstboot.service",
            "appliance/vm/labboot-firstboot.service",
        ),
        (
            "imagebuilder/recipes/master-arm64.yaml",
            "imagebuilder/recipes/master-arm64.yaml",
        ),
        (
            "imagebuilder/recipes/labboot-agent.sh",
            "imagebuilder/recipes/labboot-agent.sh",
        ),
    ] {
        std::fs::create_dir_all(c.join(to).parent().unwrap()).unwrap();
        std::fs::copy(repo().join(from), c.join(to)).unwrap();
    }
    let check = || {
        Command::new(labboot_bin())
            .args(["image", "build", "--check"])
            .arg(c.join("appliance/vm/recipe.yaml"))
            .output()
            .unwrap()
    };
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("local_debs[0]") && err.contains("matches no file"),
        "{err}"
    );
    std::fs::create_dir_all(c.join("target/debian")).unwrap();
    std::fs::write(
        c.join("target/debian/labboot_9.9.9_amd64.deb"),
        b"!<arch>\n",
    )
    .unwrap();
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("ok: initrd, kernel, ext4, disk for amd64")
            && text.contains("1 local .debs, master"),
        "{text}"
    );
    for shell in ["dash", "bash"] {
        run(Command::new(shell)
            .arg("-n")
            .arg(repo().join("appliance/vm/firstboot.sh")));
    }
}

#[test]
#[ignore = "make vm-test: builds the release package and the VM image twice (about 10 minutes)"]
fn appliance_vm_boots_and_serves_a_board() {
    assert!(
        require::root(),
        "make vm-test runs as root (taps, namespaces)"
    );
    for tool in [
        "qemu-system-x86_64",
        "qemu-system-aarch64",
        "mformat",
        "curl",
    ] {
        assert!(require::tool(tool), "{tool} is missing: run make setup");
    }
    assert!(
        Path::new(OVMF).exists(),
        "{OVMF} is missing (ovmf): run make setup"
    );
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));

    // 1. The package, then the image twice.
    let began = Instant::now();
    run(Command::new("bash")
        .current_dir(repo())
        .arg("scripts/deb.sh"));
    eprintln!("vm: package built in {:?}", began.elapsed());
    let (a, b) = (tmp.join("vm-image-a"), tmp.join("vm-image-b"));
    let first = build_image(&a);
    let second = build_image(&b);
    for name in ["disk.img", "disk.qcow2"] {
        let (sa, sb) = (output_sha(&a, name), output_sha(&b, name));
        assert_eq!(sa, sb, "{name}: two builds differ");
        let size = std::fs::metadata(a.join(name)).unwrap().len();
        eprintln!("vm: {name} {size} bytes, sha256 {sa} in both builds");
    }
    eprintln!("vm: image built in {first:?}, again in {second:?}");
    std::fs::remove_dir_all(&a).unwrap();

    // 2. The config drive, the lab network, the VM.
    let work = tempfile::Builder::new()
        .prefix("labboot-vm-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let drive = w.join("config.img");
    std::fs::File::create(&drive)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    run(Command::new("mformat")
        .arg("-i")
        .arg(&drive)
        .args(["-v", "LABBOOT", "::"]));
    std::fs::write(
        w.join("labboot.conf"),
        format!(
            "# lab settings for the test\ninterface={LAB_MAC}\naddress=10.81.0.1/24\n\
             pool=10.81.0.100-10.81.0.150\ntoken={TOKEN}\n"
        ),
    )
    .unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&drive)
        .arg(w.join("labboot.conf"))
        .arg("::/labboot.conf"));

    let ns = Netns::new("vmt").unwrap();
    for args in [
        &["link", "add", "labbr0", "type", "bridge"][..],
        &["link", "set", "labbr0", "up"],
        &["link", "set", "lo", "up"],
        &["tuntap", "add", "dev", "vmlab0", "mode", "tap"],
        &["link", "set", "vmlab0", "master", "labbr0", "up"],
        &["tuntap", "add", "dev", "brdtap0", "mode", "tap"],
        &["link", "set", "brdtap0", "master", "labbr0", "up"],
    ] {
        ns.ip(args).unwrap();
    }
    let (accel, _, why) = accel();
    eprintln!("vm: QEMU accelerator {accel} ({why})");
    let vm = start_vm(
        &ns,
        &b.join("disk.qcow2"),
        &[
            "-drive".into(),
            format!("file={},if=virtio,format=raw,readonly=on", drive.display()),
        ],
        w.join("vm-serial.log"),
    );
    let up = wait_until(
        "the VM's API answers",
        Duration::from_secs(900),
        &vm,
        || api(&ns, "GET", "/appliances", None).0 == 200,
    );
    eprintln!("vm: API up {up:?} after power-on");
    let console = vm.serial();
    assert!(
        console.contains("labboot-firstboot: settings from config drive"),
        "{console}"
    );

    // 3. A board added, its card, its boot, a job.
    let (code, body) = api(
        &ns,
        "POST",
        "/boards",
        Some(&format!(
            r#"{{"id": "{BOARD}", "device_type": "labboot-qemu-arm64"}}"#
        )),
    );
    assert_eq!(code, 201, "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = added["token"]
        .as_str()
        .expect("the board's token")
        .to_string();
    let card = w.join("card.img");
    let out = ns
        .command("curl")
        .args(["-sS", "-f", "-m", "60", "-X", "POST", "-o"])
        .arg(&card)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!(r#"{{"token": "{token}", "arch": "arm64"}}"#))
        .arg(format!(
            "http://127.0.0.1:{API_PORT}/api/v1/boards/{BOARD}/sdcard"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let board = Board::boot_card(&ns, &card, "brdtap0").unwrap();
    let online = wait_until(
        "the board checks in from the master",
        Duration::from_secs(900),
        &vm,
        || {
            let (_, b) = api(&ns, "GET", &format!("/boards/{BOARD}"), None);
            b.contains("\"health\":\"online\"") || b.contains("\"health\": \"online\"")
        },
    );
    eprintln!("vm: board {BOARD} online {online:?} after its power-on");
    let job = w.join("job.yaml");
    std::fs::write(&job, agent_job()).unwrap();
    let began = Instant::now();
    let out = ns
        .command(labboot_bin())
        .args(["job", "submit", "--wait", "--json"])
        .arg(&job)
        .args(["--server", &format!("http://127.0.0.1:{API_PORT}")])
        .args(["--token", TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "the job did not complete: {text}\n{}\nboard console:\n{}\nVM console:\n{}",
            String::from_utf8_lossy(&out.stderr),
            board.power_off(),
            vm.serial()
        );
    }
    eprintln!("vm: job complete in {:?}: {text}", began.elapsed());
    drop(board);
    drop(vm);

    // 4. The kernel command line instead of a drive, on a fresh copy of the disk: QEMU boots
    //    the image's own kernel and initrd with the settings appended.
    let token = "vm-test-cmdline-token";
    let append = format!(
        "labboot.root=disk:LABEL=labboot-root console=ttyS0,115200 labboot.interface={LAB_MAC} \
         labboot.address=10.82.0.1/24 labboot.pool=10.82.0.100-10.82.0.120 labboot.token={token}"
    );
    let vm = start_vm(
        &ns,
        &b.join("disk.qcow2"),
        &[
            "-kernel".into(),
            b.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            b.join("initrd.cpio.gz").display().to_string(),
            "-append".into(),
            append,
        ],
        w.join("vm2-serial.log"),
    );
    let up = wait_until(
        "the VM's API answers with the command line's token",
        Duration::from_secs(900),
        &vm,
        || api_as(&ns, token, "GET", "/appliances", None).0 == 200,
    );
    let console = vm.serial();
    assert!(
        console.contains("labboot-firstboot: settings from the kernel command line"),
        "{console}"
    );
    assert!(
        console.contains("lab interface ") && console.contains(" at 10.82.0.1/24"),
        "{console}"
    );
    assert_eq!(api(&ns, "GET", "/appliances", None).0, 401);
    eprintln!("vm: configured from the kernel command line, API up {up:?} after power-on");
    drop(vm);
    std::fs::remove_dir_all(&b).unwrap();
}
