//! The opt-in ping-check of `labboot dhcp` against busybox udhcpc: a host squatting on a pool
//! address without a lease (here: an extra address on the client namespace's veth, which the
//! kernel answers pings for) makes the server quarantine that address, warn, and offer another;
//! without `--ping-check-ms` nothing is pinged and the first pool address is offered at once.

mod dhcp_common;

use dhcp_common::{udhcpc_with_output, Lab};
use labboot_tests::require;

/// The first address of the lab's pool, taken by a host that never asked for a lease.
const SQUATTED: &str = "10.66.1.0";

fn lab_with_squatter(prefix: &str) -> Lab {
    let lab = Lab::new(prefix);
    let cidr = format!("{SQUATTED}/{}", dhcp_common::PREFIX);
    let out = lab
        .client_ns
        .ip(&["addr", "add", &cidr, "dev", &lab.client_if])
        .expect("add the squatter's address");
    assert!(out.status.success(), "ip addr add {cidr}: {out:?}");
    lab
}

#[test]
fn ping_check_skips_an_address_in_use() {
    if !require::root() || !require::tool("busybox") || !require::tool("ip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab_with_squatter("dp");
    let server = lab.start_server(&["--ping-check-ms", "300"]);
    assert_eq!(
        server.lines_with("ping-check on").len(),
        1,
        "{}",
        server.log()
    );
    let (env, printed) = udhcpc_with_output(&lab, dir.path(), &[]);
    let got = env["ip"].clone();
    assert_ne!(got, SQUATTED, "offered the address in use:\n{printed}");
    assert_eq!(got, "10.66.1.1", "the next free address:\n{printed}");
    // udhcpc selects the first OFFER it hears: it never saw one for the squatted address.
    assert!(
        !printed.contains(&format!("select for {SQUATTED}")),
        "{printed}"
    );
    assert!(printed.contains("select for 10.66.1.1"), "{printed}");
    let warnings = server.lines_with(&format!("ping-check: {SQUATTED} answered"));
    assert_eq!(warnings.len(), 1, "{}", server.log());
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(server.lines_with(&format!("ACK {SQUATTED} ")).is_empty());
    // The quarantine holds: the next client (another identity) does not get it either, and the
    // address is not pinged again.
    let (env, _) = udhcpc_with_output(&lab, dir.path(), &["-V", "labboot:board9"]);
    assert_eq!(env["ip"], "10.66.1.2", "{}", server.log());
    assert_eq!(
        server.lines_with("ping-check: ").len(),
        1,
        "{}",
        server.log()
    );
    // A client that holds its lease is not pinged again on its next boot.
    let (env, _) = udhcpc_with_output(&lab, dir.path(), &[]);
    assert_eq!(env["ip"], "10.66.1.1");
}

#[test]
fn without_the_flag_nothing_is_pinged() {
    if !require::root() || !require::tool("busybox") || !require::tool("ip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab_with_squatter("dn");
    let server = lab.start_server(&[]);
    let (env, printed) = udhcpc_with_output(&lab, dir.path(), &[]);
    // The default is the fast path: the first free address is offered at once, unchecked (a
    // squatter is caught only if the client DECLINEs).
    assert_eq!(env["ip"], SQUATTED, "{printed}");
    assert!(
        server.lines_with("ping-check").is_empty(),
        "{}",
        server.log()
    );
}
