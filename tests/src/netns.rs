//! Private network namespaces for tests: veth pairs between them, tap devices inside them.
//!
//! Every test that puts packets on a wire does it inside namespaces it created here, so nothing
//! ever reaches the host's real interfaces, and tests run in parallel without clashing: names are
//! unique per run (`<prefix><pid>n<counter>`), short enough that interface names derived from
//! them fit Linux's 15-character limit. [`Netns`] deletes its namespace in `Drop`, also when the
//! test panics, which removes every device inside it. Namespaces left by killed test runs (same
//! prefix, dead pid) are removed when the next one is created.
//!
//! All work is done by `ip` from iproute2; a failing command's error carries its stderr.
//!
//! ```no_run
//! use labboot_tests::netns::Netns;
//! let server = Netns::new("dh").unwrap();
//! let client = Netns::new("dh").unwrap();
//! Netns::veth_pair(&server, &client, "10.77.0.1/24", "10.77.0.2/24").unwrap();
//! let status = client.command("busybox").args(["ping", "-c1", "10.77.0.1"]).status().unwrap();
//! assert!(status.success());
//! ```

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Longest prefix accepted: leaves room for a 7-digit pid, `n` and a counter within 15 chars.
pub const MAX_PREFIX: usize = 4;

/// The interface name that `veth_pair` gives the end inside `ns` (`v` + the namespace name).
pub fn veth_name(ns: &Netns) -> String {
    format!("v{}", ns.name())
}

/// A network namespace owned by the test, removed on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Runs `ip ARGS`, failing with the command line and its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| "cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces named `<prefix><pid>n<k>` whose pid is no longer running.
fn remove_stale(prefix: &str) {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some((pid, counter)) = rest.split_once('n') else {
            continue;
        };
        let (Ok(pid), true) = (
            pid.parse::<u32>(),
            counter.bytes().all(|b| b.is_ascii_digit()),
        ) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

impl Netns {
    /// Creates a namespace named `<prefix><pid>n<counter>` with `lo` up.
    ///
    /// `prefix` is 1-4 lowercase letters. Stale namespaces with the same prefix whose process is
    /// gone are deleted first.
    pub fn new(prefix: &str) -> anyhow::Result<Netns> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if prefix.is_empty()
            || prefix.len() > MAX_PREFIX
            || !prefix.bytes().all(|b| b.is_ascii_lowercase())
        {
            bail!("netns prefix `{prefix}` must be 1-{MAX_PREFIX} lowercase letters");
        }
        remove_stale(prefix);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}n{n}", std::process::id());
        if name.len() > 14 {
            bail!("netns name `{name}` is too long for derived interface names");
        }
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `ip -n NAME ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Creates tap device `ifname` (mode tap) with address `cidr` (e.g. `192.168.77.1/24`), up.
    ///
    /// QEMU started inside the namespace opens it by name (`-netdev tap,ifname=…,script=no`).
    /// Returns the device name.
    pub fn add_tap(&self, ifname: &str, cidr: &str) -> anyhow::Result<String> {
        check_ifname(ifname)?;
        self.ip(&["tuntap", "add", "dev", ifname, "mode", "tap"])?;
        self.ip(&["addr", "add", cidr, "dev", ifname])?;
        self.ip(&["link", "set", ifname, "up"])?;
        Ok(ifname.to_string())
    }

    /// Connects `a` and `b` with a veth pair, addresses `a_cidr` and `b_cidr`, both ends up.
    ///
    /// The ends are named by [`veth_name`] (`v` + namespace name) and returned as `(in a, in b)`.
    /// The pair is created directly inside the namespaces, never in the host's.
    pub fn veth_pair(
        a: &Netns,
        b: &Netns,
        a_cidr: &str,
        b_cidr: &str,
    ) -> anyhow::Result<(String, String)> {
        let (ea, eb) = (veth_name(a), veth_name(b));
        check_ifname(&ea)?;
        check_ifname(&eb)?;
        a.ip(&[
            "link", "add", &ea, "type", "veth", "peer", "name", &eb, "netns", &b.name,
        ])?;
        a.ip(&["addr", "add", a_cidr, "dev", &ea])?;
        b.ip(&["addr", "add", b_cidr, "dev", &eb])?;
        a.ip(&["link", "set", &ea, "up"])?;
        b.ip(&["link", "set", &eb, "up"])?;
        Ok((ea, eb))
    }

    /// Names of the links inside the namespace.
    pub fn links(&self) -> anyhow::Result<Vec<String>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect())
    }
}

fn check_ifname(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        bail!("`{name}` is not a valid interface name (1-15 characters, no / : or space)");
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("netns: cannot delete {}: {e:#}", self.name);
        }
    }
}

/// Whether a namespace with this name exists.
pub fn exists(name: &str) -> bool {
    ip(&["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require;

    #[test]
    fn namespace_lifecycle_veth_and_tap() {
        if !require::root() || !require::tool("ip") || !require::tool("busybox") {
            return;
        }
        let a = Netns::new("nt").unwrap();
        let b = Netns::new("nt").unwrap();
        assert_ne!(a.name(), b.name());
        assert!(a.name().len() <= 14 && veth_name(&a).len() <= 15);
        assert!(exists(a.name()));
        let (ea, eb) = Netns::veth_pair(&a, &b, "10.231.0.1/24", "10.231.0.2/24").unwrap();
        assert!(a.links().unwrap().contains(&ea));
        assert!(b.links().unwrap().contains(&eb));
        assert!(a.links().unwrap().contains(&"lo".to_string()));
        // The pair carries traffic between the namespaces.
        let ping = b
            .command("busybox")
            .args(["ping", "-c", "1", "-W", "2", "10.231.0.1"])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stdout)
        );
        let tap = a.add_tap("tap0", "192.168.77.1/24").unwrap();
        assert_eq!(tap, "tap0");
        let show = a.ip(&["addr", "show", "dev", "tap0"]).unwrap();
        assert!(String::from_utf8_lossy(&show.stdout).contains("192.168.77.1/24"));
        // Errors carry ip's stderr.
        let err = a
            .add_tap("tap0", "192.168.77.1/24")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tuntap add dev tap0") && err.contains("failed"),
            "{err}"
        );
        let name = a.name().to_string();
        drop(a);
        assert!(!exists(&name));
    }

    #[test]
    fn drop_cleans_up_after_panic() {
        if !require::root() || !require::tool("ip") {
            return;
        }
        let name = std::panic::catch_unwind(|| {
            let ns = Netns::new("np").unwrap();
            let name = ns.name().to_string();
            std::panic::panic_any(name);
        })
        .unwrap_err()
        .downcast::<String>()
        .unwrap();
        assert!(!exists(&name));
    }

    #[test]
    fn stale_namespaces_of_dead_pids_are_removed() {
        if !require::root() || !require::tool("ip") {
            return;
        }
        // pid_max is at most 4194304, so this pid cannot be running.
        let stale = "ns9999999n0";
        ip(&["netns", "add", stale]).unwrap();
        let fresh = Netns::new("ns").unwrap();
        assert!(!exists(stale));
        assert!(exists(fresh.name()));
    }

    #[test]
    fn bad_prefixes() {
        assert!(Netns::new("").is_err());
        assert!(Netns::new("toolong").is_err());
        assert!(Netns::new("A1").is_err());
    }
}
