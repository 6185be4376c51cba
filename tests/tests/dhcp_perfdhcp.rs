//! perfdhcp (Kea's load generator) against `labboot dhcp` across a veth pair: thousands of
//! 4-way exchanges, all completed, none dropped, every ACK persisted.

mod dhcp_common;

use dhcp_common::{acks, parse_perfdhcp, Lab};
use labboot_tests::require;

#[test]
fn perfdhcp_thousands_of_exchanges_without_errors() {
    if !require::root() || !require::tool("perfdhcp") || !require::tool("ip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lease_file = dir.path().join("leases");
    let lab = Lab::new("dp");
    let server = lab.start_server(&[
        "--lease-file",
        lease_file.to_str().unwrap(),
        "--boot-file",
        "labboot/boot.scr",
    ]);
    // 3000 exchanges at 500/s from 2000 simulated clients; wait 1 s after the last for replies.
    let out = lab
        .client_ns
        .command("perfdhcp")
        .args([
            "-4",
            "-l",
            &lab.client_if,
            "-r",
            "500",
            "-R",
            "2000",
            "-n",
            "3000",
        ])
        .args(["-W", "1000000", "-s", "7"])
        .output()
        .expect("run perfdhcp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stats = parse_perfdhcp(&text);
    let names: Vec<&str> = stats.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["DISCOVER-OFFER", "REQUEST-ACK"],
        "perfdhcp output:\n{text}"
    );
    for (name, s) in &stats {
        assert!(s.sent >= 3000, "{name}: only {} sent\n{text}", s.sent);
        assert_eq!(s.drops, 0, "{name}: drops\n{text}");
        assert_eq!(s.received, s.sent, "{name}: not all answered\n{text}");
        assert_eq!(s.rejected, 0, "{name}: rejected leases\n{text}");
    }
    assert!(text.contains("Malformed packets: 0"), "{text}");
    // Every ACK the server sent is in its lease log.
    let acked = acks(&server.lines_with("dhcp: ACK "));
    assert!(acked.len() as u64 >= stats[1].1.received);
    let stored = netboot::dhcp::load_leases(&lease_file).unwrap();
    let stored: std::collections::HashSet<(String, String)> = stored
        .iter()
        .map(|l| (l.ip.to_string(), l.mac.to_string()))
        .collect();
    for ack in &acked {
        assert!(
            stored.contains(ack),
            "ACKed {ack:?} is not in the lease log"
        );
    }
    assert!(stored.len() <= 2000, "one lease per simulated client");
}
