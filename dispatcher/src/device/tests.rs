//! Device loading against the shipped templates and the fixture dictionaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::ErrorKind;

/// A fixture dictionary.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/devices")
        .join(name)
}

/// The crate's own templates (not `$LABBOOT_DEVICE_TYPES`, which a developer may have set).
fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("device-types")
}

fn load(name: &str, context: &serde_yaml_ng::Mapping) -> Device {
    load_device(&fixture(name), Some(&templates()), context)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn context(pairs: &[(&str, &str)]) -> serde_yaml_ng::Mapping {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// The stanza labboot-qemu-arm64 must produce, with `bootargs` in the middle.
fn qemu_stanza(bootargs: &str) -> Vec<String> {
    [
        "setenv autoload no",
        "dhcp",
        "setenv serverip {SERVER_IP}",
        "setenv tftpwindowsize 16",
        "tftp {KERNEL_ADDR} {KERNEL}",
        "tftp {RAMDISK_ADDR} {RAMDISK}",
        "setenv initrd_size ${filesize}",
        "tftp {DTB_ADDR} {DTB}",
        &format!("setenv bootargs '{bootargs}'"),
        "{BOOTX}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn qemu_board() {
    let d = load("qemu-board.jinja2", &Default::default());
    assert_eq!(d.device_type, "labboot-qemu-arm64");
    assert_eq!(d.hostname, "qemu-board");
    assert_eq!(d.file, fixture("qemu-board.jinja2").display().to_string());
    assert_eq!(
        d.connection_command.as_deref(),
        Some("telnet localhost 5555")
    );
    assert!(d
        .power_on_command
        .as_deref()
        .is_some_and(|c| c.ends_with("start")));
    assert!(d
        .power_off_command
        .as_deref()
        .is_some_and(|c| c.ends_with("stop")));
    assert!(d
        .hard_reset_command
        .as_deref()
        .is_some_and(|c| c.ends_with("restart")));
    assert_eq!(d.boot_character_delay, Duration::from_millis(5));
    assert_eq!(d.constants.interrupt_prompt, "Hit any key to stop autoboot");
    assert_eq!(d.mkimage_arch.as_deref(), Some("arm64"));
    let booti = &d.load_addresses["booti"];
    assert_eq!(
        (
            booti.kernel.as_str(),
            booti.ramdisk.as_str(),
            booti.dtb.as_str()
        ),
        ("0x40400000", "0x44000000", "${fdtcontroladdr}")
    );
    assert_eq!(d.load_addresses.get("image"), Some(booti));
    assert!(!d.load_addresses.contains_key("bootz"));
    let uboot = d.uboot.as_ref().expect("u-boot method");
    assert_eq!(uboot.bootloader_prompt, "=>");
    assert!(uboot.needs_interrupt);
    assert_eq!(
        uboot.stanzas["ramdisk"],
        qemu_stanza("console=ttyAMA0 cryptomgr.notests labboot.root=ramdisk")
    );
    assert_eq!(
        uboot.stanzas["nfs"],
        qemu_stanza(
            "console=ttyAMA0 cryptomgr.notests labboot.root=nfs:{NFS_SERVER_IP}:{NFSROOTFS} labboot.overlay=none"
        )
    );
    assert_eq!(
        uboot.stanzas["nbd"],
        qemu_stanza("console=ttyAMA0 cryptomgr.notests labboot.root=nbd:{NBDSERVERIP}:{NBDSERVERPORT}/{NBDEXPORT}")
    );
    assert_eq!(d.deploy_methods, ["tftp", "nfs", "nbd"]);
    assert_eq!(
        d.action_timeouts["lava-test-shell"],
        Duration::from_secs(300)
    );
    assert_eq!(
        d.connection_timeouts["lava-test-shell"],
        Duration::from_secs(10)
    );
    assert_eq!(d.labboot.board_id.as_deref(), Some("qemu-board-01"));
    assert_eq!(d.labboot.boot, BootStyle::Serial);
    assert!(!d.labboot.check_exit_codes);
}

#[test]
fn job_context_reaches_the_templates() {
    let ctx = context(&[
        ("extra_kernel_args", "quiet loglevel=3"),
        ("labboot_boot", "network"),
    ]);
    let d = load("qemu-board.jinja2", &ctx);
    let ramdisk = &d.uboot.as_ref().expect("u-boot").stanzas["ramdisk"];
    assert_eq!(
        ramdisk[8],
        "setenv bootargs 'console=ttyAMA0 cryptomgr.notests labboot.root=ramdisk quiet loglevel=3'"
    );
    assert_eq!(d.labboot.boot, BootStyle::Network);
    // The dictionary's own {% set %} wins over the job: the connection stays the board's.
    let ctx = context(&[("connection_command", "telnet elsewhere 1")]);
    let d = load("qemu-board.jinja2", &ctx);
    assert_eq!(
        d.connection_command.as_deref(),
        Some("telnet localhost 5555")
    );
}

#[test]
fn generic_board() {
    let d = load("generic-board.jinja2", &Default::default());
    assert_eq!(d.device_type, "labboot-uboot");
    assert_eq!(
        d.connection_command.as_deref(),
        Some("picocom -b 115200 /dev/ttyUSB1")
    );
    assert_eq!(
        d.power_on_command.as_deref(),
        Some("relay-ctl 3 on && sleep 1")
    );
    assert_eq!(d.boot_character_delay, Duration::from_millis(10));
    assert_eq!(d.mkimage_arch.as_deref(), Some("arm"));
    for key in ["bootz", "zimage", "bootm", "uimage"] {
        assert_eq!(d.load_addresses[key].kernel, "0x82000000", "{key}");
    }
    assert!(!d.load_addresses.contains_key("booti"));
    let uboot = d.uboot.as_ref().expect("u-boot");
    assert_eq!(uboot.bootloader_prompt, "U-Boot>");
    let nfs = &uboot.stanzas["nfs"];
    assert!(!nfs.iter().any(|c| c.contains("tftpwindowsize")));
    assert_eq!(
        nfs[7],
        "setenv bootargs 'console=ttyS0,115200n8 root=/dev/nfs rw nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard,vers=3 ip=dhcp'"
    );
    assert_eq!(d.labboot.board_id.as_deref(), Some("am335x-07"));
    assert_eq!(d.labboot.boot, BootStyle::Network);
    assert!(d.labboot.check_exit_codes);
}

#[test]
fn boot_style_follows_the_job() {
    let d = load("generic-board.jinja2", &Default::default());
    assert_eq!(boot_style(&d, &Default::default()), Ok(BootStyle::Network));
    let serial = context(&[("labboot_boot", "serial")]);
    assert_eq!(boot_style(&d, &serial), Ok(BootStyle::Serial));
    let bad = context(&[("labboot_boot", "usb")]);
    let err = boot_style(&d, &bad).expect_err("bad style");
    assert_eq!(err.kind, ErrorKind::JobError);
    assert_eq!(
        err.message,
        "job context: labboot_boot: must be serial or network (got usb)"
    );
}

#[test]
fn rendered_yaml_loads_as_is() {
    let text = std::fs::read_to_string(fixture("qemu-board.jinja2")).expect("fixture");
    let rendered = render_dictionary(
        "qemu-board.jinja2",
        &text,
        &templates(),
        &Default::default(),
    )
    .expect("renders");
    assert_eq!(
        rendered.extends.as_deref(),
        Some("labboot-qemu-arm64.jinja2")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = rendered
        .text
        .replace("device_type: \"\"", "device_type: board-x");
    let path = dir.path().join("board.yaml");
    std::fs::write(&path, yaml).expect("write");
    let d = load_device(&path, None, &Default::default()).expect("loads");
    assert_eq!(d.device_type, "board-x");
    assert_eq!(d.hostname, "");
    assert_eq!(d.file, path.display().to_string());
    let from_memory = parse_device("mem.yaml", &rendered.text).expect("parses");
    assert_eq!(
        (from_memory.file.as_str(), from_memory.device_type.as_str()),
        ("mem.yaml", "")
    );
    let err = parse_device("mem.yaml", "constants: {}\n").expect_err("incomplete");
    assert_eq!(
        err.message,
        "mem.yaml:1: parameters: required key is missing"
    );
}

#[test]
fn device_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "device_type: x\nparameters: {}\n").expect("write");
    let err = load_device(&path, None, &Default::default()).expect_err("no constants");
    assert_eq!(err.kind, ErrorKind::ConfigurationError);
    assert_eq!(
        err.message,
        format!("{}:1: constants: required key is missing", path.display())
    );

    let text = std::fs::read_to_string(fixture("qemu-board.jinja2")).expect("fixture");
    let rendered =
        render_dictionary("q", &text, &templates(), &Default::default()).expect("renders");
    let yaml = rendered
        .text
        .replace("kernel: \"0x40400000\"", "kernel: 0x40400000");
    std::fs::write(&path, yaml).expect("write");
    let err = load_device(&path, None, &Default::default()).expect_err("number address");
    assert!(
        err.message
            .contains(": parameters.booti.kernel: must be a quoted string"),
        "{}",
        err.message
    );

    let dict = dir.path().join("typo.jinja2");
    std::fs::write(
        &dict,
        "{% extends 'labboot-qemu-arm64.jinja2' %}\n{% set x = %}\n",
    )
    .expect("write");
    let err = load_device(&dict, Some(&templates()), &Default::default()).expect_err("syntax");
    assert!(
        err.message
            .starts_with(&format!("{}:2: template error", dict.display())),
        "{}",
        err.message
    );

    std::fs::write(&dict, "{% extends 'no-such-board.jinja2' %}\n").expect("write");
    let err = load_device(&dict, Some(&templates()), &Default::default()).expect_err("missing");
    assert!(
        err.message.contains("no-such-board.jinja2"),
        "{}",
        err.message
    );
}

#[test]
fn shipped_templates_default() {
    if std::env::var_os(TEMPLATES_ENV).is_none() {
        assert_eq!(shipped_templates_dir(), templates());
    }
    assert!(templates().join("base.jinja2").is_file());
}
