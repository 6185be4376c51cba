//! The master root filesystem: packages unpacked in a merged-/usr layout, then the recipe's
//! configuration on top.
//!
//! Maintainer scripts never run, so whatever they would have written (accounts, hostname,
//! fstab) comes from the recipe instead, generated here from checked fields. The merged-/usr
//! links are created first so that packages still shipping `/lib/…` or `/bin/…` land under
//! `/usr`, as on a Debian 12 system.

use std::path::Path;

use crate::deb;
use crate::error::Result;
use crate::recipe::Recipe;
use crate::tree::{Node, Tree};

/// A tree with `/usr/{bin,sbin,lib}` and the `bin`, `sbin`, `lib` links to them.
pub fn merged_usr() -> Result<Tree> {
    let mut t = Tree::new();
    for d in ["usr", "usr/bin", "usr/sbin", "usr/lib"] {
        t.insert(d, Node::dir(0o755))?;
    }
    for l in ["bin", "sbin", "lib"] {
        t.insert(l, Node::symlink(&format!("usr/{l}")))?;
    }
    Ok(t)
}

/// Unpacks each package, in the order given, into `tree`; returns the number of entries.
pub fn unpack_all(tree: &mut Tree, debs: &[&Path]) -> Result<usize> {
    let mut n = 0;
    for d in debs {
        n += deb::unpack(d, tree, |_| true)?;
    }
    Ok(n)
}

fn passwd(recipe: &Recipe) -> (String, String, String) {
    let mut passwd = String::new();
    let mut shadow = String::new();
    for u in &recipe.users {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.gecos, u.home, u.shell
        ));
        shadow.push_str(&format!("{}:{}:0:0:99999:7:::\n", u.name, u.password));
    }
    let mut group = String::new();
    for g in &recipe.groups {
        group.push_str(&format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")));
    }
    (passwd, group, shadow)
}

/// Applies the recipe's directories, accounts, hostname, fstab, files and symlinks, in that
/// order (a recipe file may thus replace a generated one).
pub fn configure(tree: &mut Tree, recipe: &Recipe) -> Result<()> {
    for d in &recipe.directories {
        tree.insert(
            &d.path,
            Node {
                uid: d.uid,
                gid: d.gid,
                ..Node::dir(d.mode)
            },
        )?;
    }
    if !recipe.users.is_empty() || !recipe.groups.is_empty() {
        let (passwd, group, shadow) = passwd(recipe);
        tree.insert("etc/passwd", Node::file(0o644, passwd.into_bytes()))?;
        tree.insert("etc/group", Node::file(0o644, group.into_bytes()))?;
        let shadow_gid = recipe
            .groups
            .iter()
            .find(|g| g.name == "shadow")
            .map(|g| g.gid);
        let node = match shadow_gid {
            Some(gid) => Node {
                gid,
                ..Node::file(0o640, shadow.into_bytes())
            },
            None => Node::file(0o600, shadow.into_bytes()),
        };
        tree.insert("etc/shadow", node)?;
    }
    if let Some(h) = &recipe.hostname {
        tree.insert(
            "etc/hostname",
            Node::file(0o644, format!("{h}\n").into_bytes()),
        )?;
    }
    if !recipe.fstab.is_empty() {
        let mut text = String::new();
        for line in &recipe.fstab {
            text.push_str(line);
            text.push('\n');
        }
        tree.insert("etc/fstab", Node::file(0o644, text.into_bytes()))?;
    }
    for f in &recipe.files {
        tree.insert(
            &f.path,
            Node {
                uid: f.uid,
                gid: f.gid,
                ..Node::file(f.mode, f.data.clone())
            },
        )?;
    }
    for s in &recipe.symlinks {
        tree.insert(&s.path, Node::symlink(&s.target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Kind;

    #[test]
    fn recipe_configuration_lands_in_the_tree() {
        let text = "arch: arm64\nsuite: bookworm\npackages: [busybox-static]\noutputs: [squashfs]\n\
            hostname: board1\nfstab: [\"proc /proc proc defaults 0 0\"]\n\
            users:\n  - {name: root, uid: 0, gid: 0, home: /root, shell: /bin/sh, password: \"\"}\n\
            groups:\n  - {name: root, gid: 0}\n  - {name: shadow, gid: 42}\n\
            directories:\n  - {path: /tmp, mode: \"1777\"}\n\
            files:\n  - {path: /bin/hello, content: \"#!/bin/sh\\n\", mode: \"0755\", uid: 1, gid: 2}\n\
            symlinks:\n  - {path: /sbin/init, target: ../bin/busybox}\n";
        let r = Recipe::parse("r.yaml", Path::new("."), text.as_bytes()).unwrap();
        let mut t = merged_usr().unwrap();
        configure(&mut t, &r).unwrap();
        assert_eq!(
            t.get("etc/passwd").unwrap().data(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            t.get("etc/group").unwrap().data(),
            b"root:x:0:\nshadow:x:42:\n"
        );
        let shadow = t.get("etc/shadow").unwrap();
        assert_eq!((shadow.mode, shadow.gid), (0o640, 42));
        assert_eq!(shadow.data(), b"root::0:0:99999:7:::\n");
        assert_eq!(t.get("etc/hostname").unwrap().data(), b"board1\n");
        assert_eq!(t.get("tmp").unwrap().mode, 0o1777);
        let hello = t.get("usr/bin/hello").unwrap();
        assert_eq!((hello.mode, hello.uid, hello.gid), (0o755, 1, 2));
        assert_eq!(
            t.get("usr/sbin/init").unwrap().kind,
            Kind::Symlink("../bin/busybox".into())
        );
    }
}
