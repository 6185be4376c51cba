//! busybox udhcpc against `labboot dhcp`: a lease with the boot options, and two clients with
//! one MAC but different board identities kept apart (with the conflict logged).

mod dhcp_common;

use dhcp_common::{udhcpc, Lab, SERVER_IP};
use labboot_tests::require;

#[test]
fn udhcpc_gets_a_lease_and_the_boot_options() {
    if !require::root() || !require::tool("busybox") || !require::tool("ip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new("du");
    let server = lab.start_server(&[
        "--boot-file",
        "labboot/default.scr",
        "--router",
        "10.66.0.254",
        "--dns",
        "10.66.0.53",
        "--lease-time",
        "600",
        "--bind-id",
        "board7=10.66.0.77",
    ]);
    let started = std::time::Instant::now();
    let env = udhcpc(&lab, dir.path(), &["-V", "labboot:board7"]);
    let elapsed = started.elapsed();
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or_default();
    assert_eq!(
        get("ip"),
        "10.66.0.77",
        "static binding by identity; env: {env:?}"
    );
    assert_eq!(get("siaddr"), SERVER_IP);
    assert_eq!(get("serverid"), SERVER_IP);
    assert_eq!(get("subnet"), "255.255.240.0");
    assert_eq!(get("router"), "10.66.0.254");
    assert_eq!(get("dns"), "10.66.0.53");
    assert_eq!(get("lease"), "600");
    assert_eq!(get("boot_file"), "labboot/default.scr", "header file field");
    assert_eq!(get("bootfile"), "labboot/default.scr", "option 67");
    assert_eq!(get("tftp"), SERVER_IP, "option 66");
    assert_eq!(get("sname"), SERVER_IP, "header sname field");
    let ack = server.lines_with("dhcp: ACK 10.66.0.77 to ");
    assert_eq!(ack.len(), 1, "{}", server.log());
    assert!(ack[0].ends_with("id=board7"), "{}", ack[0]);
    // A DORA in a namespace takes milliseconds; U-Boot needs well under 100 ms of server time.
    assert!(elapsed.as_secs() < 3, "udhcpc took {elapsed:?}");

    // Without identity the same MAC is another client, from the pool.
    let env = udhcpc(&lab, dir.path(), &[]);
    assert!(env["ip"].starts_with("10.66.1."), "{env:?}");
}

#[test]
fn cloned_mac_with_different_identities_gets_different_leases() {
    if !require::root() || !require::tool("busybox") || !require::tool("ip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new("dc");
    let server = lab.start_server(&["--boot-file", "boot.scr"]);
    // Same interface, so same MAC; different `bootp_vci`-style identities.
    let a = udhcpc(&lab, dir.path(), &["-V", "labboot:board7"])["ip"].clone();
    let b = udhcpc(&lab, dir.path(), &["-V", "labboot:board8"])["ip"].clone();
    // And a third board identified by option 97 (U-Boot's pxeuuid).
    let uuid = "0x61:00a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let c = udhcpc(&lab, dir.path(), &["-x", uuid])["ip"].clone();
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    let conflicts = server.lines_with("conflict: MAC ");
    assert!(
        conflicts.iter().any(|l| l.contains("WARN")
            && l.contains("board:board8")
            && l.contains("board:board7")),
        "no conflict warning:\n{}",
        server.log()
    );
    assert!(server
        .lines_with("id=uuid:a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90")
        .iter()
        .any(|l| l.contains(&format!("dhcp: ACK {c} "))));
    // Each identity keeps its own address on the next boot.
    assert_eq!(udhcpc(&lab, dir.path(), &["-V", "labboot:board7"])["ip"], a);
    assert_eq!(udhcpc(&lab, dir.path(), &["-V", "labboot:board8"])["ip"], b);
}
