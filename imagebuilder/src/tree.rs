//! The staged root filesystem: an in-memory model of every node with its mode and owner.
//!
//! The build runs unprivileged, so it cannot create device nodes or chown files on disk; and a
//! directory on disk would give every output the host's timestamps and inode order. Staging into
//! a sorted map instead keeps owners exactly as the packages and the recipe say, and makes every
//! writer (cpio, squashfs, tar) walk the same entries in the same order.
//!
//! Paths are relative, `/`-separated, without `.` or `..` (the root is `""`). Inserting below a
//! symlinked directory (e.g. `lib/x` when `lib -> usr/lib`) follows the link, as dpkg would on a
//! merged-/usr system.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file; hard links share the same buffer.
    File(Arc<Vec<u8>>),
    /// A symbolic link with its target, as stored.
    Symlink(String),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One node: its kind, permission bits (including setuid/setgid/sticky) and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits, `0o7777` at most.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Node {
    /// A root-owned directory.
    pub fn dir(mode: u32) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned file.
    pub fn file(mode: u32, data: Vec<u8>) -> Node {
        Node {
            kind: Kind::File(Arc::new(data)),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned symlink (mode 0777, as Linux reports them).
    pub fn symlink(target: &str) -> Node {
        Node {
            kind: Kind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }

    /// The `S_IFMT` bits of this node's type.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
        }
    }

    /// The file's bytes, or the symlink's target, or nothing.
    pub fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(data) => data,
            Kind::Symlink(target) => target.as_bytes(),
            _ => &[],
        }
    }
}

/// Normalises a path to the tree's form: relative, no `.`, no empty components; `..` is refused.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::step("tree", format!("path {path:?} contains '..'"))),
            p if p.contains('\0') => {
                return Err(Error::step("tree", format!("path {path:?} contains NUL")))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Joins a symlink target to the directory holding the link and resolves `..` lexically.
fn join_link(link_dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link_dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// The staged tree. The root directory always exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

const MAX_LINKS: usize = 40;

impl Tree {
    /// A tree holding only a 0755 root directory.
    pub fn new() -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), Node::dir(0o755));
        Tree { nodes }
    }

    /// Follows symlinks in the directory part of `path` (not in its last component).
    pub fn resolve_parent(&self, path: &str) -> Result<String> {
        let path = normalize(path)?;
        let mut hops = 0;
        let mut current = path.clone();
        'restart: loop {
            let comps: Vec<&str> = current.split('/').collect();
            let mut prefix = String::new();
            for (i, comp) in comps.iter().enumerate().take(comps.len().saturating_sub(1)) {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(comp);
                if let Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) = self.nodes.get(&prefix)
                {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return Err(Error::step("tree", format!("too many symlinks in {path}")));
                    }
                    let base = join_link(parent_of(&prefix), target);
                    let rest = comps[i + 1..].join("/");
                    current = if base.is_empty() {
                        rest
                    } else {
                        format!("{base}/{rest}")
                    };
                    continue 'restart;
                }
            }
            return Ok(current);
        }
    }

    /// Resolves every symlink in `path`; returns the symlinks passed (in order) and the final path.
    pub fn resolve(&self, path: &str) -> Result<(Vec<String>, String)> {
        let mut links = Vec::new();
        let mut current = self.resolve_parent(path)?;
        for _ in 0..MAX_LINKS {
            match self.nodes.get(&current) {
                Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) => {
                    links.push(current.clone());
                    let next = join_link(parent_of(&current), target);
                    current = self.resolve_parent(&next)?;
                }
                _ => return Ok((links, current)),
            }
        }
        Err(Error::step("tree", format!("too many symlinks in {path}")))
    }

    /// Creates every missing ancestor of `path` as a root-owned 0755 directory.
    fn make_parents(&mut self, path: &str) -> Result<()> {
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for comp in comps.iter().take(comps.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.nodes.get(&prefix) {
                None => {
                    self.nodes.insert(prefix.clone(), Node::dir(0o755));
                }
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(Error::step(
                        "tree",
                        format!("cannot create /{path}: /{prefix} is not a directory"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Inserts `node` at `path` (following symlinked parent directories), creating missing
    /// parents. A directory inserted over a directory updates its mode and owner, over a symlink
    /// to a directory it changes nothing; anything else replaces what was there, like dpkg
    /// unpacking a later package. Returns the stored path.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<String> {
        let path = self.resolve_parent(path)?;
        if path.is_empty() {
            if node.kind != Kind::Dir {
                return Err(Error::step("tree", "the root must be a directory"));
            }
            self.nodes.insert(path.clone(), node);
            return Ok(path);
        }
        self.make_parents(&path)?;
        if node.kind == Kind::Dir {
            // dpkg keeps a symlink to a directory where a package ships a directory: this is
            // what keeps `bin -> usr/bin` when busybox-static unpacks `./bin/`.
            if let Some(Node {
                kind: Kind::Symlink(_),
                ..
            }) = self.nodes.get(&path)
            {
                if let Some((
                    _,
                    Node {
                        kind: Kind::Dir, ..
                    },
                )) = self.follow(&path)
                {
                    return Ok(path);
                }
            }
        }
        if node.kind != Kind::Dir {
            if let Some(Node {
                kind: Kind::Dir, ..
            }) = self.nodes.get(&path)
            {
                if self.children(&path).next().is_some() {
                    return Err(Error::step(
                        "tree",
                        format!("cannot replace non-empty directory /{path}"),
                    ));
                }
            }
        }
        self.nodes.insert(path.clone(), node);
        Ok(path)
    }

    /// The node at exactly `path` (no symlink following).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalize(path).ok()?)
    }

    /// The node at `path` after following every symlink, with its resolved path.
    pub fn follow(&self, path: &str) -> Option<(String, &Node)> {
        let (_, resolved) = self.resolve(path).ok()?;
        let node = self.nodes.get(&resolved)?;
        Some((resolved, node))
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        let path = normalize(path)?;
        let below: Vec<String> = self.children(&path).map(|(p, _)| p.to_string()).collect();
        for p in below {
            self.nodes.remove(&p);
        }
        if !path.is_empty() {
            self.nodes.remove(&path);
        }
        Ok(())
    }

    /// Every node strictly below `dir`, sorted.
    pub fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, n)| (p.as_str(), n))
    }

    /// Every node, root first, parents before children, in byte order of their paths.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// The root directory's node.
    pub fn root(&self) -> &Node {
        &self.nodes[""]
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Total bytes of regular file data.
    pub fn data_size(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_dotdot_and_strips_dots() {
        assert_eq!(normalize("/./usr//bin/").unwrap(), "usr/bin");
        assert!(normalize("usr/../etc").is_err());
    }

    #[test]
    fn insert_follows_merged_usr_links() {
        let mut t = Tree::new();
        t.insert("usr/lib", Node::dir(0o755)).unwrap();
        t.insert("lib", Node::symlink("usr/lib")).unwrap();
        let stored = t
            .insert(
                "lib/aarch64-linux-gnu/libc.so.6",
                Node::file(0o644, b"x".to_vec()),
            )
            .unwrap();
        assert_eq!(stored, "usr/lib/aarch64-linux-gnu/libc.so.6");
        assert!(t.get("lib/aarch64-linux-gnu").is_none());
        let (path, node) = t.follow("/lib/aarch64-linux-gnu/libc.so.6").unwrap();
        assert_eq!(path, "usr/lib/aarch64-linux-gnu/libc.so.6");
        assert_eq!(node.data(), b"x");
    }

    #[test]
    fn a_packaged_directory_keeps_the_merged_usr_link() {
        let mut t = Tree::new();
        t.insert("usr/bin", Node::dir(0o755)).unwrap();
        t.insert("bin", Node::symlink("usr/bin")).unwrap();
        t.insert("bin", Node::dir(0o755)).unwrap();
        t.insert("bin/busybox", Node::file(0o755, vec![1])).unwrap();
        assert_eq!(t.get("bin").unwrap().kind, Kind::Symlink("usr/bin".into()));
        assert!(t.get("usr/bin/busybox").is_some());
    }

    #[test]
    fn resolve_reports_each_link_passed() {
        let mut t = Tree::new();
        t.insert("usr/lib/ld.so.1", Node::file(0o755, vec![1]))
            .unwrap();
        t.insert("lib", Node::symlink("/usr/lib")).unwrap();
        t.insert("usr/lib/ld.so", Node::symlink("ld.so.1")).unwrap();
        let (links, end) = t.resolve("lib/ld.so").unwrap();
        assert_eq!(links, vec!["usr/lib/ld.so".to_string()]);
        assert_eq!(end, "usr/lib/ld.so.1");
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let mut t = Tree::new();
        t.insert("a", Node::symlink("b")).unwrap();
        t.insert("b", Node::symlink("a")).unwrap();
        assert!(t.resolve("a").is_err());
    }

    #[test]
    fn file_under_a_file_is_refused() {
        let mut t = Tree::new();
        t.insert("etc", Node::file(0o644, vec![])).unwrap();
        let err = t
            .insert("etc/passwd", Node::file(0o644, vec![]))
            .unwrap_err();
        assert!(err.to_string().contains("/etc is not a directory"), "{err}");
    }

    #[test]
    fn children_and_remove() {
        let mut t = Tree::new();
        t.insert("a/b/c", Node::file(0o644, vec![])).unwrap();
        t.insert("a-b", Node::file(0o644, vec![])).unwrap();
        let kids: Vec<&str> = t.children("a").map(|(p, _)| p).collect();
        assert_eq!(kids, vec!["a/b", "a/b/c"]);
        t.remove("a").unwrap();
        assert_eq!(t.len(), 2);
    }
}
