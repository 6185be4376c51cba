//! The shared-library closure of a target binary, found by reading ELF headers.
//!
//! `ldd` would have to run the target's dynamic loader, which an x86 host cannot do without
//! qemu-user. The closure is instead computed from `PT_INTERP` and `DT_NEEDED` of each ELF file
//! in the staged tree, looked up in the multiarch library directories the way the loader's
//! default search path would. Symlinks on the way (the loader link, `libfoo.so.N`) are part of
//! the closure, so the initrd keeps Debian's relative links as they are.

use std::collections::{BTreeSet, VecDeque};

use goblin::elf::Elf;

use crate::error::{Error, Result};
use crate::recipe::Arch;
use crate::tree::Tree;

/// The interpreter and `DT_NEEDED` names of one ELF file, after checking its machine.
pub fn needs(path: &str, bytes: &[u8], arch: Arch) -> Result<(Option<String>, Vec<String>)> {
    let elf = Elf::parse(bytes).map_err(|e| Error::step("elf", format!("/{path}: {e}")))?;
    if elf.header.e_machine != arch.elf_machine() {
        return Err(Error::step(
            "elf",
            format!(
                "/{path} is for ELF machine {}, not {} (wrong architecture)",
                elf.header.e_machine,
                arch.debian()
            ),
        ));
    }
    Ok((
        elf.interpreter.map(str::to_string),
        elf.libraries.iter().map(|s| s.to_string()).collect(),
    ))
}

/// Every tree path the `roots` need at run time: themselves, their loader and libraries, and
/// the symlinks leading to each. A library found nowhere is an error naming who needs it.
pub fn closure(tree: &Tree, roots: &[&str], arch: Arch) -> Result<BTreeSet<String>> {
    let dirs = [
        format!("lib/{}", arch.triplet()),
        format!("usr/lib/{}", arch.triplet()),
        "lib".to_string(),
        "usr/lib".to_string(),
    ];
    let mut out = BTreeSet::new();
    let mut queue: VecDeque<(String, String)> = roots
        .iter()
        .map(|r| (r.to_string(), String::new()))
        .collect();
    let mut done = BTreeSet::new();
    while let Some((path, needed_by)) = queue.pop_front() {
        let (links, real) = tree
            .resolve(&path)
            .map_err(|e| Error::step("elf", format!("{path}: {e}")))?;
        let Some(node) = tree.get(&real) else {
            return Err(Error::step(
                "elf",
                format!("/{path} (needed by {needed_by}) is not in the unpacked packages"),
            ));
        };
        out.extend(links);
        out.insert(real.clone());
        if !done.insert(real.clone()) {
            continue;
        }
        let data = node.data();
        if !data.starts_with(b"\x7fELF") {
            continue;
        }
        let (interp, libs) = needs(&real, data, arch)?;
        if let Some(i) = interp {
            queue.push_back((i, format!("/{real}")));
        }
        for lib in libs {
            let found = dirs
                .iter()
                .map(|d| format!("{d}/{lib}"))
                .find(|p| tree.follow(p).is_some());
            match found {
                Some(p) => queue.push_back((p, format!("/{real}"))),
                None => {
                    return Err(Error::step(
                        "elf",
                        format!("{lib} (needed by /{real}) is in none of the unpacked packages"),
                    ))
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    /// The host's own dynamically linked binaries serve as ELF samples (amd64).
    fn host_file(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn closure_of_a_host_binary_follows_needed_and_interp() {
        // /usr/bin/cat needs only libc, and libc the loader: a closure small enough to stage.
        let mut t = Tree::new();
        t.insert("usr/lib/x86_64-linux-gnu", Node::dir(0o755))
            .unwrap();
        t.insert("lib", Node::symlink("usr/lib")).unwrap();
        t.insert("lib64", Node::symlink("usr/lib64")).unwrap();
        t.insert("usr/bin/cat", Node::file(0o755, host_file("/usr/bin/cat")))
            .unwrap();
        let cat_bytes = host_file("/usr/bin/cat");
        let cat = Elf::parse(&cat_bytes).unwrap();
        assert_eq!(cat.interpreter, Some("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(cat.libraries, vec!["libc.so.6"]);
        let ld = "ld-linux-x86-64.so.2";
        t.insert(
            &format!("lib/x86_64-linux-gnu/{ld}"),
            Node::file(0o755, host_file(&format!("/lib/x86_64-linux-gnu/{ld}"))),
        )
        .unwrap();
        t.insert(
            &format!("lib64/{ld}"),
            Node::symlink(&format!("../lib/x86_64-linux-gnu/{ld}")),
        )
        .unwrap();
        t.insert(
            "lib/x86_64-linux-gnu/libc.so.6",
            Node::file(0o644, host_file("/lib/x86_64-linux-gnu/libc.so.6")),
        )
        .unwrap();
        let got = closure(&t, &["usr/bin/cat"], Arch::Amd64).unwrap();
        let want: BTreeSet<String> = [
            "usr/bin/cat".to_string(),
            format!("usr/lib64/{ld}"),
            format!("usr/lib/x86_64-linux-gnu/{ld}"),
            "usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
        ]
        .into();
        assert_eq!(got, want);
        // Wrong arch is refused, naming the file.
        let e = closure(&t, &["usr/bin/cat"], Arch::Arm64)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "elf: /usr/bin/cat is for ELF machine 62, not arm64 (wrong architecture)"
        );
        // A missing library names who needs it.
        t.remove("usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let e = closure(&t, &["usr/bin/cat"], Arch::Amd64)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "elf: libc.so.6 (needed by /usr/bin/cat) is in none of the unpacked packages"
        );
    }
}
