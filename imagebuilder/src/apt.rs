//! Debian packages of the target architecture, through the host's own apt configuration.
//!
//! labboot never names a mirror: `apt-cache show` answers from the lists `apt-get update` already
//! fetched (after `dpkg --add-architecture`), and `apt-get download` fetches from wherever apt is
//! configured to. Each downloaded `.deb` is checked against the SHA256 apt recorded for it, so a
//! corrupt cache or a tampered mirror is an error, not a different image. Downloads are kept in
//! a cache directory named by the package file, and reused when their hash still matches.
//!
//! Dependencies are resolved from the `Depends` and `Pre-Depends` fields of apt's candidate
//! versions: the first alternative apt knows is taken, version constraints are not checked (the
//! candidate is what the mirror has), and names in the recipe's `exclude` list are skipped, which
//! is how a recipe cuts `debconf`-style dependencies that only matter to maintainer scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::recipe::{hex, valid_package_name, Arch};

/// What apt knows of one package's candidate version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Candidate version.
    pub version: String,
    /// `arm64`, … or `all`.
    pub arch: String,
    /// SHA256 of the `.deb`, as recorded in the Packages index.
    pub sha256: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// `Pre-Depends` then `Depends`: each group lists alternatives, first preferred.
    pub depends: Vec<Vec<String>>,
    /// `Priority` rank: 0 required, 1 important, 2 standard, 3 optional, 4 anything else.
    pub priority: u8,
}

/// The rank of a `Priority` value (lower is preferred when choosing a provider).
pub fn priority_rank(value: Option<&str>) -> u8 {
    match value {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        _ => 4,
    }
}

impl PackageInfo {
    /// The file name `apt-get download` gives this package.
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// Parses one `Depends:` value into groups of alternative package names.
pub fn parse_depends(value: &str) -> Vec<Vec<String>> {
    value
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?;
                    let name = name.split('(').next()?;
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Parses `apt-cache show` output into stanzas of `field → value` (continuation lines joined).
pub fn parse_stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = cur.get_mut(&last) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_string();
            cur.insert(last.clone(), v.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses `apt-cache depends --recurse` output: every package name it mentions, and for each
/// virtual package the providers listed under it, in apt's order.
///
/// A dependency on a virtual package reads `Depends: <awk:arm64>`, followed by its providers,
/// one per line, indented by four spaces.
pub fn parse_depends_tree(text: &str) -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let mut names = BTreeSet::new();
    let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut virtual_pkg: Option<String> = None;
    for line in text.lines() {
        let word = line.rsplit(' ').next().unwrap_or("");
        let is_virtual = word.starts_with('<');
        let word = word.trim_start_matches('<').trim_end_matches('>');
        let name = word.split(':').next().unwrap_or("").to_string();
        if !valid_package_name(&name) {
            continue;
        }
        if line.starts_with("    ") {
            if let Some(v) = &virtual_pkg {
                let list = providers.entry(v.clone()).or_default();
                if !list.contains(&name) {
                    list.push(name.clone());
                }
            }
        } else {
            virtual_pkg = is_virtual.then(|| name.clone());
        }
        names.insert(name);
    }
    (names, providers)
}

fn info_from(stanza: &BTreeMap<String, String>) -> Option<PackageInfo> {
    let mut depends = Vec::new();
    for field in ["Pre-Depends", "Depends"] {
        if let Some(v) = stanza.get(field) {
            depends.extend(parse_depends(v));
        }
    }
    Some(PackageInfo {
        name: stanza.get("Package")?.clone(),
        version: stanza.get("Version")?.clone(),
        arch: stanza.get("Architecture")?.clone(),
        sha256: stanza.get("SHA256")?.to_ascii_lowercase(),
        size: stanza.get("Size")?.parse().ok()?,
        depends,
        priority: priority_rank(stanza.get("Priority").map(String::as_str)),
    })
}

/// A package source for one architecture, with a download cache.
#[derive(Debug)]
pub struct Apt {
    arch: Arch,
    cache: PathBuf,
    known: BTreeMap<String, Option<PackageInfo>>,
    /// Virtual package → the real packages apt lists as providing it, in apt's order.
    providers: BTreeMap<String, Vec<String>>,
}

fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .output()
        .map_err(|e| Error::Apt(format!("cannot run {what}: {e}")))?;
    Ok(out)
}

/// The SHA256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

impl Apt {
    /// Checks that dpkg knows `arch` (native or added with `dpkg --add-architecture`).
    pub fn new(arch: Arch, cache: &Path) -> Result<Apt> {
        let native = run(Command::new("dpkg").arg("--print-architecture"), "dpkg")?;
        let foreign = run(
            Command::new("dpkg").arg("--print-foreign-architectures"),
            "dpkg",
        )?;
        let mut archs = String::from_utf8_lossy(&native.stdout).to_string();
        archs.push_str(&String::from_utf8_lossy(&foreign.stdout));
        if !archs.split_whitespace().any(|a| a == arch.debian()) {
            return Err(Error::Apt(format!(
                "architecture {a} is not configured: run `dpkg --add-architecture {a} && apt-get update` (scripts/setup.sh does)",
                a = arch.debian()
            )));
        }
        std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
        Ok(Apt {
            arch,
            cache: cache.to_path_buf(),
            known: BTreeMap::new(),
            providers: BTreeMap::new(),
        })
    }

    /// Looks up every name not yet known with one `apt-cache show` call.
    fn learn(&mut self, names: &BTreeSet<String>) -> Result<()> {
        let wanted: Vec<&String> = names
            .iter()
            .filter(|n| !self.known.contains_key(*n))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut cmd = Command::new("apt-cache");
        cmd.arg("show").arg("--no-all-versions");
        for n in &wanted {
            cmd.arg(format!("{n}:{}", self.arch.debian()));
            cmd.arg(format!("{n}:all"));
        }
        let out = run(&mut cmd, "apt-cache")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = BTreeMap::new();
        for stanza in parse_stanzas(&text) {
            if let Some(info) = info_from(&stanza) {
                if info.arch == self.arch.debian() || info.arch == "all" {
                    found.entry(info.name.clone()).or_insert(info);
                }
            }
        }
        if found.is_empty() && !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .find(|l| l.starts_with("E:"))
                .unwrap_or("apt-cache failed");
            if !line.contains("No packages found") {
                return Err(Error::Apt(line.to_string()));
            }
        }
        for n in wanted {
            let info = found.remove(n.as_str());
            self.known.insert(n.clone(), info);
        }
        Ok(())
    }

    /// Learns `roots` and everything they may depend on with two apt calls (`apt-cache depends
    /// --recurse`, then one `apt-cache show`), so that [`Apt::resolve`] needs none of its own.
    pub fn prefetch(&mut self, roots: &[String]) -> Result<()> {
        let mut cmd = Command::new("apt-cache");
        cmd.args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
        ])
        .args(["--no-breaks", "--no-replaces", "--no-enhances"]);
        for r in roots {
            cmd.arg(format!("{r}:{}", self.arch.debian()));
        }
        let out = run(&mut cmd, "apt-cache")?;
        let (mut names, providers) = parse_depends_tree(&String::from_utf8_lossy(&out.stdout));
        names.extend(roots.iter().cloned());
        for (v, list) in providers {
            self.providers.entry(v).or_insert(list);
        }
        self.learn(&names)
    }

    /// apt's candidate for `name` of the target architecture (or `all`), if it has one.
    pub fn show(&mut self, name: &str) -> Result<Option<PackageInfo>> {
        self.learn(&BTreeSet::from([name.to_string()]))?;
        Ok(self.known[name].clone())
    }

    /// The names in `roots` apt has no candidate for, in their order.
    pub fn missing(&mut self, roots: &[String]) -> Result<Vec<usize>> {
        self.learn(&roots.iter().cloned().collect())?;
        Ok(roots
            .iter()
            .enumerate()
            .filter(|(_, n)| self.known[*n].is_none())
            .map(|(i, _)| i)
            .collect())
    }

    /// `roots` and their dependencies (minus `exclude`), sorted by name.
    ///
    /// A dependency on a virtual package (`awk`) takes its provider of highest `Priority`
    /// (`mawk`, required), the first apt listed in [`Apt::prefetch`] among equals.
    /// Every root must exist (check with [`Apt::missing`] first to name the bad one); a
    /// dependency group none of whose alternatives apt knows is an error naming the package
    /// that needs it.
    pub fn resolve(
        &mut self,
        roots: &[String],
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<PackageInfo>> {
        let groups: Vec<(String, Vec<String>)> = roots
            .iter()
            .map(|r| ("the recipe".to_string(), vec![r.clone()]))
            .collect();
        self.resolve_groups(groups, exclude)
    }

    /// Like [`Apt::resolve`], from dependency groups (alternatives, first preferred), each
    /// with the name of what needs it: a local package's `Depends`, say.
    pub fn resolve_groups(
        &mut self,
        mut pending: Vec<(String, Vec<String>)>,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<PackageInfo>> {
        let mut chosen: BTreeMap<String, PackageInfo> = BTreeMap::new();
        while !pending.is_empty() {
            let names: BTreeSet<String> = pending
                .iter()
                .flat_map(|(_, g)| g.iter().cloned())
                .collect();
            self.learn(&names)?;
            let mut next = Vec::new();
            for (needed_by, group) in pending {
                if group
                    .iter()
                    .any(|n| exclude.contains(n) || chosen.contains_key(n))
                {
                    continue;
                }
                // Like apt: a virtual package goes to its highest-priority provider, then the
                // first apt listed (base-files' awk is mawk, not gawk).
                let provided = || {
                    group
                        .iter()
                        .filter_map(|n| self.providers.get(n))
                        .flatten()
                        .filter_map(|p| self.known.get(p).cloned().flatten())
                        .min_by_key(|i| i.priority)
                };
                let Some(info) = group
                    .iter()
                    .find_map(|n| self.known[n].clone())
                    .or_else(provided)
                else {
                    return Err(Error::Apt(format!(
                        "{needed_by} needs {}, which apt has no {} candidate for (add it to exclude if the image does without)",
                        group.join(" | "),
                        self.arch.debian()
                    )));
                };
                for dep in &info.depends {
                    next.push((info.name.clone(), dep.clone()));
                }
                chosen.insert(info.name.clone(), info);
            }
            pending = next;
        }
        Ok(chosen.into_values().collect())
    }

    /// Makes sure every package is in the cache with apt's SHA256; returns their paths.
    ///
    /// Missing files are fetched with one `apt-get download`; every file, cached or fresh, is
    /// hashed and compared with apt's record.
    pub fn fetch(
        &self,
        packages: &[PackageInfo],
        mut progress: impl FnMut(&str),
    ) -> Result<Vec<PathBuf>> {
        let mut missing = Vec::new();
        let mut verified = BTreeSet::new();
        for p in packages {
            let path = self.cache.join(p.file_name());
            if path.exists() && file_sha256(&path)? == p.sha256 {
                verified.insert(p.name.clone());
            } else {
                missing.push(p);
            }
        }
        if !missing.is_empty() {
            let total: u64 = missing.iter().map(|p| p.size).sum();
            progress(&format!(
                "downloading {} packages ({:.1} MiB)",
                missing.len(),
                total as f64 / 1048576.0
            ));
            let mut cmd = Command::new("apt-get");
            cmd.current_dir(&self.cache)
                .arg("download")
                .arg("-q")
                .arg("-o")
                .arg(format!("APT::Architecture={}", self.arch.debian()));
            for p in &missing {
                cmd.arg(format!("{}:{}={}", p.name, p.arch, p.version));
            }
            let out = run(&mut cmd, "apt-get download")?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let line = err
                    .lines()
                    .find(|l| l.starts_with("E:"))
                    .unwrap_or("apt-get download failed")
                    .to_string();
                return Err(Error::Apt(line));
            }
        }
        let mut paths = Vec::new();
        for p in packages {
            let path = self.cache.join(p.file_name());
            if !path.exists() {
                return Err(Error::package(
                    &p.name,
                    format!("apt-get download left no {}", path.display()),
                ));
            }
            if verified.contains(&p.name) {
                paths.push(path);
                continue;
            }
            let got = file_sha256(&path)?;
            if got != p.sha256 {
                let _ = std::fs::remove_file(&path);
                return Err(Error::package(
                    &p.name,
                    format!(
                        "sha256 mismatch: apt records {}, the download has {got}",
                        p.sha256
                    ),
                ));
            }
            paths.push(path);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_keep_alternatives_and_drop_versions() {
        let d = parse_depends("libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any");
        assert_eq!(
            d,
            vec![
                vec!["libc6".to_string()],
                vec!["debconf".into(), "debconf-2.0".into()],
                vec!["python3".into()]
            ]
        );
    }

    #[test]
    fn depends_tree_keeps_providers_of_virtual_packages() {
        let text = "base-files:arm64\n  PreDepends: <awk:arm64>\n    gawk:arm64\n    gawk\n    mawk:arm64\n\
                    gawk:arm64\n  PreDepends: libc6:arm64\n |Depends: <debconf:arm64>\n    debconf\n";
        let (names, providers) = parse_depends_tree(text);
        let want: BTreeSet<String> = ["base-files", "awk", "gawk", "mawk", "libc6", "debconf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, want);
        assert_eq!(providers["awk"], vec!["gawk".to_string(), "mawk".into()]);
        assert_eq!(providers["debconf"], vec!["debconf".to_string()]);
        assert!(!providers.contains_key("libc6"));
    }

    #[test]
    fn stanzas_split_on_blank_lines() {
        let text = "Package: a\nVersion: 1:2.0-1\nArchitecture: arm64\nSHA256: AB\nSize: 10\nDescription: x\n more\n\nPackage: b\nVersion: 1\nArchitecture: all\nSHA256: cd\nSize: 2\nDepends: a\n";
        let s = parse_stanzas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["Description"], "x\nmore");
        let a = info_from(&s[0]).unwrap();
        assert_eq!(a.sha256, "ab");
        assert_eq!(a.file_name(), "a_1%3a2.0-1_arm64.deb");
        assert_eq!(
            info_from(&s[1]).unwrap().depends,
            vec![vec!["a".to_string()]]
        );
    }
}
