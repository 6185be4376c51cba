//! The virtual lab, end to end: a card made by `labboot sdcard` boots in a QEMU arm64 board
//! running Debian's U-Boot; distro boot finds and runs the bootstrap script, which imports the
//! identity from the card (board id and MAC) and starts DHCP on the board's tap NIC, inside a
//! private network namespace where nothing answers, so it then says it retries.

use std::time::Duration;

use labboot_tests::binary::make_sdcard;
use labboot_tests::netns::Netns;
use labboot_tests::qemu::{Board, QEMU_ARM64, UBOOT_ARM64};
use labboot_tests::require;

#[test]
fn card_boots_in_uboot_and_reaches_dhcp() {
    if !require::root() || !require::tool(QEMU_ARM64) || !require::file(UBOOT_ARM64) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("sd.img");
    make_sdcard(&card, "vboard-1", &["--mac", "02:00:00:00:00:01"]);

    let ns = Netns::new("lbu").expect("create network namespace");
    let tap = ns.add_tap("lbtap0", "192.168.77.1/24").expect("create tap");
    let mut board = Board::boot_card(&ns, &card, &tap).expect("start the QEMU board");

    let console = board.console();
    console
        .expect(r"U-Boot 20\d\d\.\d\d", Duration::from_secs(60))
        .unwrap();
    console
        .expect(r"Found U-Boot script /boot\.scr", Duration::from_secs(60))
        .unwrap();
    console
        .expect(
            r"labboot: bootstrap from virtio 0:1",
            Duration::from_secs(20),
        )
        .unwrap();
    // The identity came from the card: the board id and the MAC that replaced the NIC's.
    console
        .expect(
            r"labboot: board vboard-1 ethaddr 02:00:00:00:00:01",
            Duration::from_secs(20),
        )
        .unwrap();
    console
        .expect(
            r"labboot: DHCP as labboot:vboard-1",
            Duration::from_secs(20),
        )
        .unwrap();
    console
        .expect(r"BOOTP broadcast 1", Duration::from_secs(20))
        .unwrap();
    // Nobody answers in this namespace: the script says so and tries again instead of falling
    // through to other boot targets.
    console
        .expect(r"labboot: ERROR: no DHCP answer", Duration::from_secs(120))
        .unwrap();
    console
        .expect(
            r"labboot: network boot failed; retrying in 5 s",
            Duration::from_secs(10),
        )
        .unwrap();
    console
        .expect(
            r"labboot: DHCP as labboot:vboard-1",
            Duration::from_secs(30),
        )
        .unwrap();
    let output = board.power_off();
    assert_eq!(
        output.matches("Found U-Boot script /boot.scr").count(),
        1,
        "the bootstrap script must not return to distro boot"
    );
}
