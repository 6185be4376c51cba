//! The virtual lab with labboot's own servers: a QEMU arm64 board boots a card from
//! `labboot sdcard`; `labboot dhcp` gives it an address and boot options, `labboot tftp` serves
//! the board script `labboot/<board_id>/boot.scr` rendered for that board at request time, and
//! the board script fetches a multi-MiB file with `tftpwindowsize 16` whose CRC-32, computed by
//! U-Boot, must equal the host's.

use std::time::Duration;

use labboot_tests::binary::{labboot_bin, make_sdcard};
use labboot_tests::netns::Netns;
use labboot_tests::process::ServerProcess;
use labboot_tests::qemu::{Board, QEMU_ARM64, UBOOT_ARM64};
use labboot_tests::require;

const SERVER_IP: &str = "192.168.78.1";
const BOARD: &str = "vboard-2";
/// 6 MiB and a bit: many windows, not a whole number of blocks.
const BIG_LEN: usize = 6 * 1024 * 1024 + 777;

fn big_file() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..BIG_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn board_netboots_from_labboot_dhcp_and_tftp() {
    if !require::root() || !require::tool(QEMU_ARM64) || !require::file(UBOOT_ARM64) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftp");
    let scripts = dir.path().join("boards");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&scripts).unwrap();
    let big = big_file();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(
        scripts.join(format!("{BOARD}.txt")),
        "echo \"labboot-test: board script for {BOARD_ID} served to {CLIENT_IP}\"\n\
         setenv tftpwindowsize 16\n\
         if tftpboot ${kernel_addr_r} big.bin; then crc32 ${kernel_addr_r} ${filesize}; fi\n\
         echo \"labboot-test: done\"\n\
         sleep 600\n",
    )
    .unwrap();

    let card = dir.path().join("sd.img");
    make_sdcard(&card, BOARD, &[]);

    let ns = Netns::new("lbn").expect("create network namespace");
    let tap = ns
        .add_tap("lbtap0", &format!("{SERVER_IP}/24"))
        .expect("create tap");

    let mut dhcp_cmd = ns.command(labboot_bin().to_str().unwrap());
    dhcp_cmd
        .args([
            "--log",
            "info",
            "dhcp",
            "--interface",
            &tap,
            "--server-ip",
            SERVER_IP,
        ])
        .args([
            "--pool",
            "192.168.78.100-192.168.78.200",
            "--prefix",
            "24",
            "--lease-file",
        ])
        .arg(dir.path().join("leases"));
    let mut dhcp = ServerProcess::start(
        "labboot dhcp",
        dhcp_cmd,
        "listening on",
        Duration::from_secs(30),
    )
    .unwrap();

    let mut tftp_cmd = ns.command(labboot_bin().to_str().unwrap());
    tftp_cmd
        .args([
            "--log",
            "info",
            "tftp",
            "--listen",
            &format!("{SERVER_IP}:69"),
            "--root",
        ])
        .arg(&root)
        .arg("--board-scripts")
        .arg(&scripts);
    let mut tftp = ServerProcess::start(
        "labboot tftp",
        tftp_cmd,
        "listening on",
        Duration::from_secs(30),
    )
    .unwrap();

    let mut board = Board::boot_card(&ns, &card, &tap).expect("start the QEMU board");
    let console = board.console();
    console
        .expect(
            r"labboot: DHCP as labboot:vboard-2",
            Duration::from_secs(90),
        )
        .unwrap();
    let bound = console
        .expect_captures(
            r"DHCP client bound to address (192\.168\.78\.\d+) \((\d+) ms\)",
            Duration::from_secs(30),
        )
        .unwrap();
    let bind_ms: u32 = bound[2].parse().unwrap();
    eprintln!("U-Boot bound {} in {bind_ms} ms", bound[1]);
    assert!(
        bind_ms < 100,
        "DHCP bind took {bind_ms} ms as U-Boot reports it"
    );

    console
        .expect(
            &format!(r"labboot: fetching labboot/vboard-2/boot.scr from {SERVER_IP}"),
            Duration::from_secs(10),
        )
        .unwrap();
    let line = console
        .expect_captures(
            r"labboot-test: board script for (\S+) served to (\S+)\r?\n",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(line[1], BOARD);
    assert_eq!(
        line[2], bound[1],
        "the script was rendered for the address the board was given"
    );

    let crc = console
        .expect_captures(
            r"crc32 for [0-9a-f]+ \.\.\. [0-9a-f]+ ==> ([0-9a-f]{8})",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(
        crc[1],
        format!("{:08x}", crc32fast::hash(&big)),
        "U-Boot's CRC-32 of big.bin"
    );
    console
        .expect("labboot-test: done", Duration::from_secs(10))
        .unwrap();
    board.power_off();

    // The servers saw this board by its identity, and the window was negotiated.
    dhcp.wait_for_line(
        &format!("ACK {}.*{BOARD}", regex_escape(&bound[1])),
        Duration::from_secs(5),
    )
    .unwrap();
    tftp.wait_for_line(
        r"tftp: sent.*path=big\.bin.*window=16",
        Duration::from_secs(5),
    )
    .unwrap();
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}
