//! Shared harness of the DHCP end-to-end tests: two namespaces joined by a veth pair, and the
//! `labboot dhcp` binary running in the server namespace, killed when the test ends.
//!
//! Only addresses inside the namespaces the test creates are used: 10.66.0.0/20.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labboot_tests::binary::labboot_bin;
use labboot_tests::netns::Netns;

/// The server's address on the veth.
pub const SERVER_IP: &str = "10.66.0.1";
/// The dynamic pool given to the server.
pub const POOL: &str = "10.66.1.0-10.66.15.250";
/// The prefix length of the lab network.
pub const PREFIX: &str = "20";

/// A server namespace and a client namespace joined by a veth pair.
pub struct Lab {
    /// Where the server runs.
    pub server_ns: Netns,
    /// Where the clients run.
    pub client_ns: Netns,
    /// The server's end of the veth.
    pub server_if: String,
    /// The clients' end of the veth.
    pub client_if: String,
}

impl Lab {
    /// Creates both namespaces and the veth pair (prefix: 1-4 lowercase letters).
    pub fn new(prefix: &str) -> Lab {
        let server_ns = Netns::new(prefix).expect("server namespace");
        let client_ns = Netns::new(prefix).expect("client namespace");
        let (server_if, client_if) = Netns::veth_pair(
            &server_ns,
            &client_ns,
            &format!("{SERVER_IP}/{PREFIX}"),
            &format!("10.66.0.2/{PREFIX}"),
        )
        .expect("veth pair");
        Lab {
            server_ns,
            client_ns,
            server_if,
            client_if,
        }
    }

    /// Starts `labboot dhcp` on the server's veth with the lab's address, pool and `extra` flags.
    pub fn start_server(&self, extra: &[&str]) -> DhcpServer {
        let mut args: Vec<String> = [
            "--log",
            "info",
            "dhcp",
            "--interface",
            &self.server_if,
            "--server-ip",
            SERVER_IP,
            "--pool",
            POOL,
            "--prefix",
            PREFIX,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        DhcpServer::start(&self.server_ns, &args)
    }
}

/// `labboot dhcp` running in a namespace; its stderr is collected line by line.
pub struct DhcpServer {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl DhcpServer {
    /// Starts the binary and waits (10 s at most) for its `dhcp: listening on` line.
    pub fn start(ns: &Netns, args: &[String]) -> DhcpServer {
        let mut child = ns
            .command(labboot_bin())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn labboot dhcp");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = DhcpServer {
            child: Some(child),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("dhcp: listening on ") {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "labboot dhcp exited ({status}) before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no listening line in 10 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` lines contain `needle`.
    pub fn wait_for(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lines_with(needle).len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// SIGKILLs the server (no chance to flush or clean up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs the program, so this is labboot's own pid.
            child.kill().expect("SIGKILL labboot");
            child.wait().expect("reap labboot");
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- labboot dhcp log ---\n{}", self.log());
        }
    }
}

/// The `(ip, mac)` of each `dhcp: ACK IP to MAC id=…` line.
pub fn acks(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.split("dhcp: ACK ").nth(1)?;
            let mut w = rest.split_whitespace();
            let ip = w.next()?.to_string();
            let _to = w.next()?;
            let mac = w.next()?.to_string();
            Some((ip, mac))
        })
        .collect()
}

/// A udhcpc event script that dumps its environment to `$DUMP` when a lease is bound.
pub fn write_udhcpc_script(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nif [ \"$1\" = bound ]; then env > \"$DUMP\"; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `busybox udhcpc` once on the client's veth with `extra` flags; returns the variables
/// its script saw at `bound`.
pub fn udhcpc(lab: &Lab, dir: &Path, extra: &[&str]) -> std::collections::HashMap<String, String> {
    udhcpc_with_output(lab, dir, extra).0
}

/// Like [`udhcpc`], and also returns what udhcpc printed (e.g. `sending select for IP`).
pub fn udhcpc_with_output(
    lab: &Lab,
    dir: &Path,
    extra: &[&str],
) -> (std::collections::HashMap<String, String>, String) {
    let script = write_udhcpc_script(dir);
    let dump = dir.join("udhcpc.env");
    let _ = std::fs::remove_file(&dump);
    let out = lab
        .client_ns
        .command("busybox")
        .args([
            "udhcpc",
            "-i",
            &lab.client_if,
            "-n",
            "-q",
            "-f",
            "-t",
            "5",
            "-T",
            "1",
        ])
        .arg("-s")
        .arg(&script)
        .args(extra)
        .env("DUMP", &dump)
        .output()
        .expect("run busybox udhcpc");
    assert!(
        out.status.success(),
        "udhcpc failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(&dump).expect("udhcpc's script ran at `bound`");
    let env = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (env, printed)
}

/// perfdhcp's counters per exchange ("DISCOVER-OFFER", "REQUEST-ACK").
#[derive(Debug, Default, Clone, Copy)]
pub struct PerfStats {
    /// sent packets
    pub sent: u64,
    /// received packets
    pub received: u64,
    /// drops
    pub drops: u64,
    /// rejected leases
    pub rejected: u64,
}

/// Parses perfdhcp's final report into `(section, stats)` pairs.
pub fn parse_perfdhcp(out: &str) -> Vec<(String, PerfStats)> {
    let mut sections: Vec<(String, PerfStats)> = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("***Statistics for: ")
            .and_then(|s| s.strip_suffix("***"))
        {
            sections.push((name.to_string(), PerfStats::default()));
            continue;
        }
        let Some((_, stats)) = sections.last_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "sent packets" => stats.sent = value,
            "received packets" => stats.received = value,
            "drops" => stats.drops = value,
            "rejected leases" => stats.rejected = value,
            _ => {}
        }
    }
    sections
}
