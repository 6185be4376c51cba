//! Kernel modules for the initrd: which `.ko` files, in which order, and their `modules.dep`.
//!
//! Debian's kernel packages ship no `modules.dep` (depmod runs in the postinst, on the target).
//! Each module's dependencies are read instead from the `depends=` string in its `.modinfo` ELF
//! section, which needs no target code; compressed modules (`.ko.xz`, `.ko.zst`) are
//! decompressed first, and stored uncompressed so busybox's `insmod` takes them as they are.
//! Modules the kernel has built in (`modules.builtin`) are satisfied without a file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use goblin::elf::Elf;

use crate::deb::{self, Link};
use crate::error::{Error, Result};

/// The modules every labboot initrd carries: NBD and NFS roots over virtio (MMIO and PCI).
pub const ROOT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "nbd",
    "squashfs",
    "overlay",
    "nfs",
    "nfsv3",
];

/// The members of [`ROOT_MODULES`] only an NFS root needs (their dependencies that nothing
/// else needs are loaded only with them).
pub const NFS_ROOT_MODULES: &[&str] = &["nfs", "nfsv3"];

/// The module name the kernel uses for a file name (`nf-nat.ko.xz` → `nf_nat`).
pub fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Decompresses a module file if it is xz- or zstd-compressed.
pub fn decompress(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if bytes.starts_with(b"\xfd7zXZ\0") {
        liblzma::read::XzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::step("modules", format!("xz: {e}")))?;
        Ok(out)
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ruzstd::decoding::StreamingDecoder::new(&bytes[..])
            .map_err(|e| Error::step("modules", format!("zstd: {e}")))?
            .read_to_end(&mut out)
            .map_err(|e| Error::step("modules", format!("zstd: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// The `depends=` list of an (uncompressed) module's `.modinfo` section.
pub fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>> {
    let elf =
        Elf::parse(ko).map_err(|e| Error::step("modules", format!("not an ELF module: {e}")))?;
    let section = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".modinfo"))
        .ok_or_else(|| Error::step("modules", "no .modinfo section"))?;
    let start = section.sh_offset as usize;
    let end = start.saturating_add(section.sh_size as usize);
    let info = ko
        .get(start..end)
        .ok_or_else(|| Error::step("modules", ".modinfo out of bounds"))?;
    for field in info.split(|b| *b == 0) {
        if let Some(v) = field.strip_prefix(b"depends=") {
            let v = String::from_utf8_lossy(v);
            return Ok(v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect());
        }
    }
    Ok(Vec::new())
}

/// One module file in the kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path below `lib/modules/<version>/` in the uncompressed form (`kernel/…/nbd.ko`).
    pub rel: String,
    /// Path in the package.
    pub package_path: String,
    /// Modules it depends on.
    pub depends: Vec<String>,
}

/// Every module of one kernel package, by name.
#[derive(Debug, Default)]
pub struct Index {
    /// The kernel version (`6.1.0-56-arm64`).
    pub version: String,
    /// Modules by name.
    pub modules: BTreeMap<String, Module>,
    /// Names built into the kernel.
    pub builtin: BTreeSet<String>,
}

impl Index {
    /// Scans a kernel package, reading every module's `.modinfo` (the data is not kept).
    pub fn scan(kernel_deb: &Path) -> Result<Index> {
        let mut index = Index::default();
        deb::visit(kernel_deb, |e| {
            let Some(rest) = e
                .path
                .strip_prefix("lib/modules/")
                .or_else(|| e.path.strip_prefix("usr/lib/modules/"))
            else {
                return Ok(());
            };
            let Some((version, rel)) = rest.split_once('/') else {
                return Ok(());
            };
            if e.link != Link::File {
                return Ok(());
            }
            if rel == "modules.builtin" {
                let mut text = String::new();
                e.reader
                    .read_to_string(&mut text)
                    .map_err(|err| Error::step("modules", err.to_string()))?;
                index.builtin.extend(text.lines().map(module_name));
                index.version = version.to_string();
                return Ok(());
            }
            if !rel.contains(".ko") {
                return Ok(());
            }
            let mut bytes = Vec::new();
            e.reader
                .read_to_end(&mut bytes)
                .map_err(|err| Error::step("modules", err.to_string()))?;
            let ko = decompress(bytes)?;
            let depends = modinfo_depends(&ko)
                .map_err(|err| Error::step("modules", format!("{}: {err}", e.path)))?;
            let uncompressed = format!("{}.ko", rel.split(".ko").next().unwrap_or(rel));
            index.version = version.to_string();
            index.modules.insert(
                module_name(rel),
                Module {
                    rel: uncompressed,
                    package_path: e.path.clone(),
                    depends,
                },
            );
            Ok(())
        })?;
        if index.modules.is_empty() {
            return Err(Error::step(
                "modules",
                format!("{} holds no kernel modules", kernel_deb.display()),
            ));
        }
        Ok(index)
    }

    /// The modules `wanted` need, dependencies first (load order); built-in ones are dropped.
    /// `wanted` pairs a name with the field that asked for it, for the error message.
    pub fn load_order(&self, wanted: &[(String, String)]) -> Result<Vec<String>> {
        fn visit(
            index: &Index,
            name: &str,
            asked_by: &str,
            stack: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            let name = name.replace('-', "_");
            if out.contains(&name) || index.builtin.contains(&name) {
                return Ok(());
            }
            if stack.contains(&name) {
                return Err(Error::step(
                    "modules",
                    format!("dependency cycle through {name}"),
                ));
            }
            let Some(m) = index.modules.get(&name) else {
                return Err(Error::step(
                    "modules",
                    format!("{asked_by}: no module {name} in kernel {}", index.version),
                ));
            };
            stack.push(name.clone());
            for d in &m.depends {
                visit(index, d, &format!("{name} (depends)"), stack, out)?;
            }
            stack.pop();
            out.push(name);
            Ok(())
        }
        let mut out = Vec::new();
        for (name, field) in wanted {
            visit(self, name, field, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// `modules.dep` for `names`: each module's full dependency list, the last to load first.
    pub fn modules_dep(&self, names: &[String]) -> Result<String> {
        let mut text = String::new();
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort_by(|a, b| self.modules[*a].rel.cmp(&self.modules[*b].rel));
        for name in sorted {
            let order = self.load_order(&[(name.clone(), String::new())])?;
            let deps: Vec<&str> = order
                .iter()
                .rev()
                .filter(|n| *n != name)
                .map(|n| self.modules[n].rel.as_str())
                .collect();
            text.push_str(&format!("{}:", self.modules[name].rel));
            for d in deps {
                text.push(' ');
                text.push_str(d);
            }
            text.push('\n');
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        let m = |rel: &str, deps: &[&str]| Module {
            rel: rel.to_string(),
            package_path: format!("lib/modules/6.1/{rel}"),
            depends: deps.iter().map(|s| s.to_string()).collect(),
        };
        let mut modules = BTreeMap::new();
        modules.insert(
            "virtio_net".into(),
            m("kernel/drivers/net/virtio_net.ko", &["net_failover"]),
        );
        modules.insert(
            "net_failover".into(),
            m("kernel/drivers/net/net_failover.ko", &["failover"]),
        );
        modules.insert("failover".into(), m("kernel/net/core/failover.ko", &[]));
        modules.insert("nbd".into(), m("kernel/drivers/block/nbd.ko", &[]));
        Index {
            version: "6.1".into(),
            modules,
            builtin: BTreeSet::from(["virtio_pci".to_string()]),
        }
    }

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtin() {
        let wanted: Vec<(String, String)> = ["virtio_pci", "virtio-net", "nbd", "failover"]
            .iter()
            .map(|n| (n.to_string(), "x".to_string()))
            .collect();
        assert_eq!(
            index().load_order(&wanted).unwrap(),
            vec!["failover", "net_failover", "virtio_net", "nbd"]
        );
    }

    #[test]
    fn unknown_module_names_the_field() {
        let e = index()
            .load_order(&[("zfs".into(), "kernel.modules[1]".into())])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "modules: kernel.modules[1]: no module zfs in kernel 6.1"
        );
    }

    #[test]
    fn modules_dep_lists_last_loaded_first() {
        let idx = index();
        let names = idx
            .load_order(&[("virtio_net".into(), String::new())])
            .unwrap();
        let dep = idx.modules_dep(&names).unwrap();
        assert_eq!(
            dep,
            "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n"
        );
    }

    #[test]
    fn names_from_files() {
        assert_eq!(module_name("kernel/net/nf-nat.ko.xz"), "nf_nat");
        assert_eq!(module_name("nbd.ko"), "nbd");
    }

    #[test]
    fn xz_modules_are_decompressed() {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut enc, b"\x7fELF module").unwrap();
        let xz = enc.finish().unwrap();
        assert_eq!(decompress(xz).unwrap(), b"\x7fELF module");
        assert_eq!(decompress(b"plain".to_vec()).unwrap(), b"plain");
    }
}
