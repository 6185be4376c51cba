//! SIGKILL right after a burst of ACKs: every ACKed lease is in the lease log, and after a
//! restart on the same log the same client gets the same address.

mod dhcp_common;

use std::collections::HashSet;
use std::time::Duration;

use dhcp_common::{acks, udhcpc, Lab};
use labboot_tests::require;

#[test]
fn acked_leases_survive_sigkill() {
    if !require::root()
        || !require::tool("perfdhcp")
        || !require::tool("busybox")
        || !require::tool("ip")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lease_file = dir.path().join("leases");
    let lf = lease_file.to_str().unwrap();
    let lab = Lab::new("dk");
    let mut server = lab.start_server(&["--lease-file", lf]);

    // Some load first, so that the udhcpc client does not get the pool's first address.
    let perf = |n: &str, rate: &str| {
        lab.client_ns
            .command("perfdhcp")
            .args(["-4", "-l", &lab.client_if, "-r", rate, "-R", "400", "-n", n])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run perfdhcp")
    };
    perf("100", "500").wait().unwrap();
    let before = udhcpc(&lab, dir.path(), &["-V", "labboot:crashme"])["ip"].clone();

    // Kill -9 in the middle of a burst, right after an ACK went out.
    let mut load = perf("2000", "1000");
    assert!(
        server.wait_for("dhcp: ACK ", 400, Duration::from_secs(20)),
        "too few ACKs:\n{}",
        server.log()
    );
    server.kill9();
    let acked = acks(&server.lines_with("dhcp: ACK "));
    let _ = load.kill();
    let _ = load.wait();

    let stored: HashSet<(String, String)> = netboot::dhcp::load_leases(&lease_file)
        .unwrap()
        .iter()
        .map(|l| (l.ip.to_string(), l.mac.to_string()))
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} ACKed leases lost: {lost:?}",
        lost.len(),
        acked.len()
    );

    // Restart on the same log: leases restored, the same client gets the same address.
    let server = lab.start_server(&["--lease-file", lf]);
    let restored = server.lines_with("leases restored from");
    assert_eq!(restored.len(), 1, "{}", server.log());
    assert!(
        restored[0].contains(&format!("dhcp: {} leases restored", stored.len())),
        "{}",
        restored[0]
    );
    let after = udhcpc(&lab, dir.path(), &["-V", "labboot:crashme"])["ip"].clone();
    assert_eq!(after, before);
    assert_ne!(before, dhcp_common::POOL.split('-').next().unwrap());
}
