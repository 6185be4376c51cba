//! The labboot initrd: busybox, nbd-client with its libraries, the root's kernel modules and a
//! `/init` that attaches the master read-only under a tmpfs overlay.
//!
//! Everything comes from packages of the target arch unpacked into a staging [`Tree`]; only
//! what the boot needs is copied: busybox (static), nbd-client's ELF closure ([`crate::elf`]),
//! and the modules in load order ([`crate::modules`]). `/init` loads modules with `insmod` from
//! a generated list rather than relying on `modprobe`, so the order is fixed at build time;
//! `modules.dep` is still written for interactive use from the rescue shell.

use crate::elf;
use crate::error::{Error, Result};
use crate::modules::Index;
use crate::recipe::Arch;
use crate::rootfs::merged_usr;
use crate::tree::{Kind, Node, Tree};

/// The `/init` script.
pub const INIT: &str = include_str!("initrd/init.sh");
/// The udhcpc event script (`/etc/labboot/udhcpc.script`).
pub const UDHCPC_SCRIPT: &str = include_str!("initrd/udhcpc.sh");

fn find<'a>(tree: &'a Tree, candidates: &[&str]) -> Option<(String, &'a Node)> {
    candidates.iter().find_map(|c| tree.follow(c))
}

fn device(kind: Kind, mode: u32) -> Node {
    Node {
        kind,
        mode,
        uid: 0,
        gid: 0,
    }
}

/// Builds the initrd tree.
///
/// `packages` is the unpacked initrd package set; `modules` is the kernel's module tree
/// (`lib/modules/<version>/…`, uncompressed) holding at least `load_order`'s files. The
/// modules named in `nfs_only` (a subset of `load_order`) go to `/etc/labboot/modules.nfs`,
/// which `/init` loads only for an NFS root; the others to `/etc/labboot/modules`.
pub fn build(
    arch: Arch,
    packages: &Tree,
    index: &Index,
    modules: &Tree,
    load_order: &[String],
    nfs_only: &[String],
) -> Result<Tree> {
    let mut t = merged_usr()?;
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "lower",
        "rw",
        "newroot",
        "etc/labboot",
        "usr/share",
    ] {
        t.insert(d, Node::dir(0o755))?;
    }
    t.insert(
        "dev/console",
        device(Kind::CharDev { major: 5, minor: 1 }, 0o600),
    )?;
    t.insert(
        "dev/null",
        device(Kind::CharDev { major: 1, minor: 3 }, 0o666),
    )?;

    let (bb_path, busybox) =
        find(packages, &["bin/busybox", "usr/bin/busybox"]).ok_or_else(|| {
            Error::step(
                "initrd",
                "no /bin/busybox in initrd.packages (add busybox-static)",
            )
        })?;
    let (interp, _) = elf::needs(&bb_path, busybox.data(), arch)?;
    if interp.is_some() {
        return Err(Error::step(
            "initrd",
            format!("/{bb_path} is dynamically linked: use busybox-static"),
        ));
    }
    t.insert("bin/busybox", Node::file(0o755, busybox.data().to_vec()))?;
    t.insert("bin/sh", Node::symlink("busybox"))?;

    let (nbd, _) =
        find(packages, &["usr/sbin/nbd-client", "sbin/nbd-client"]).ok_or_else(|| {
            Error::step(
                "initrd",
                "no nbd-client in initrd.packages (add nbd-client)",
            )
        })?;
    let closure = elf::closure(packages, &[nbd.as_str()], arch)?;
    for path in &closure {
        let node = packages
            .get(path)
            .ok_or_else(|| Error::step("initrd", format!("/{path} vanished")))?;
        t.insert(path, node.clone())?;
    }

    let base = format!("lib/modules/{}", index.version);
    let mut list = String::new();
    let mut nfs_list = String::new();
    for name in load_order {
        let rel = &index.modules[name].rel;
        let path = format!("{base}/{rel}");
        let node = modules.get(&path).ok_or_else(|| {
            Error::step("initrd", format!("module file /{path} was not extracted"))
        })?;
        t.insert(&path, Node::file(0o644, node.data().to_vec()))?;
        let list = if nfs_only.contains(name) {
            &mut nfs_list
        } else {
            &mut list
        };
        list.push_str(&format!("/{path}\n"));
    }
    t.insert(
        &format!("{base}/modules.dep"),
        Node::file(0o644, index.modules_dep(load_order)?.into_bytes()),
    )?;
    t.insert("etc/labboot/modules", Node::file(0o644, list.into_bytes()))?;
    t.insert(
        "etc/labboot/modules.nfs",
        Node::file(0o644, nfs_list.into_bytes()),
    )?;
    t.insert(
        "etc/labboot/udhcpc.script",
        Node::file(0o755, UDHCPC_SCRIPT.as_bytes().to_vec()),
    )?;
    t.insert("init", Node::file(0o755, INIT.as_bytes().to_vec()))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn init_scripts_parse_as_posix_sh() {
        for (name, text) in [("init", INIT), ("udhcpc", UDHCPC_SCRIPT)] {
            let out = Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(text)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for needle in [
            "labboot.board=",
            "labboot.root=",
            "labboot.agent=",
            "labboot.token=",
            "labboot.interval=",
            "LABBOOT_TOKEN=",
            "LABBOOT_AGENT_INTERVAL=",
            "umask 077",
            "switch_root",
            "upperdir=/rw/upper",
        ] {
            assert!(INIT.contains(needle), "{needle}");
        }
    }

    #[test]
    fn missing_busybox_is_named() {
        let e = build(
            Arch::Arm64,
            &Tree::new(),
            &Index::default(),
            &Tree::new(),
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "initrd: no /bin/busybox in initrd.packages (add busybox-static)"
        );
    }
}
