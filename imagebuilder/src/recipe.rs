//! The recipe: YAML read with serde, then checked into a [`Recipe`] whose fields are valid.
//!
//! Two steps, so that nothing past this module sees an unchecked value: the `Raw*` structs
//! mirror the YAML (`deny_unknown_fields`, so a typo is an error rather than a silently ignored
//! key), and [`Recipe::parse`] validates each field, reporting the first bad one by its path in
//! the document (`recipe.yaml: packages[2]: …`). Files named by `source` are read here, so a
//! missing file fails before any download starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::base::{detect, BaseKind, BaseSpec};
use crate::error::{Error, Result};
use crate::tree::normalize;

/// A Debian architecture labboot knows how to build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARM, hard float.
    Armhf,
    /// 64-bit x86.
    Amd64,
    /// 64-bit RISC-V.
    Riscv64,
}

impl Arch {
    /// Parses a Debian architecture name.
    pub fn from_debian(name: &str) -> Option<Arch> {
        Some(match name {
            "arm64" => Arch::Arm64,
            "armhf" => Arch::Armhf,
            "amd64" => Arch::Amd64,
            "riscv64" => Arch::Riscv64,
            _ => return None,
        })
    }

    /// The Debian name (`arm64`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::Amd64 => "amd64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The multiarch triplet of library directories (`aarch64-linux-gnu`).
    pub fn triplet(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-linux-gnu",
            Arch::Armhf => "arm-linux-gnueabihf",
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Riscv64 => "riscv64-linux-gnu",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Arm64 => 183,
            Arch::Armhf => 40,
            Arch::Amd64 => 62,
            Arch::Riscv64 => 243,
        }
    }
}

/// An output the recipe asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// `rootfs.squashfs`.
    Squashfs,
    /// `rootfs.tar.gz`.
    Tar,
    /// `initrd.cpio.gz`.
    Initrd,
    /// `vmlinuz`.
    Kernel,
    /// `boot.scr`: a U-Boot script image booting this master over TFTP + NBD.
    Bootscr,
    /// `rootfs.ext4`: the same tree as an ext4 image (`mke2fs -d`, then `debugfs`).
    Ext4,
    /// `dtbs/`: the kernel package's device trees, vendor folders kept.
    Dtbs,
    /// `disk.img` and `disk.qcow2`: a UEFI-bootable disk (GPT, EFI system partition with
    /// systemd-boot, the kernel and initrd, and `rootfs.ext4` as the root partition).
    Disk,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    arch: String,
    suite: String,
    epoch: Option<i64>,
    base: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    hostname: Option<String>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    directories: Vec<RawDir>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    symlinks: Vec<RawSymlink>,
    #[serde(default)]
    fstab: Vec<String>,
    kernel: Option<RawKernel>,
    initrd: Option<RawInitrd>,
    boot: Option<RawBoot>,
    ext4: Option<RawExt4>,
    #[serde(default)]
    local_debs: Vec<String>,
    master: Option<RawMaster>,
    disk: Option<RawDisk>,
    outputs: Vec<Output>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaster {
    recipe: String,
    dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    loader: String,
    cmdline: String,
    esp_size: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseMap {
    path: String,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExt4 {
    size: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    tftp_dir: String,
    root: String,
    #[serde(default)]
    agent: String,
    console: String,
    #[serde(default = "default_window")]
    tftp_window: u16,
}

fn default_window() -> u16 {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    uid: u32,
    gid: u32,
    #[serde(default)]
    gecos: String,
    home: String,
    shell: String,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    gid: u32,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: String,
    mode: Option<String>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    content: Option<String>,
    source: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSymlink {
    path: String,
    target: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    package: String,
    #[serde(default)]
    modules: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitrd {
    packages: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

/// A user: one line each in `/etc/passwd` and `/etc/shadow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Comment field.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Shadow password field (`*` = no password login, `` = empty password).
    pub password: String,
}

/// A group: one line in `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members.
    pub members: Vec<String>,
}

/// A directory to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// Tree path (relative).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A file to add, with its bytes already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Tree path (relative).
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// The `source` path as written in the recipe, if the content came from a file.
    pub source: Option<String>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A symlink to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkSpec {
    /// Tree path (relative).
    pub path: String,
    /// Target, as stored in the link.
    pub target: String,
}

/// The kernel package and the extra modules the initrd must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    /// A Debian `linux-image-*` package (a metapackage is followed to the real one).
    pub package: String,
    /// Module names beyond the built-in NBD/NFS root set.
    pub modules: Vec<String>,
}

/// The packages that give the initrd busybox and nbd-client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdSpec {
    /// Packages, resolved with their dependencies.
    pub packages: Vec<String>,
    /// Dependencies not to fetch.
    pub exclude: BTreeSet<String>,
}

/// How `boot.scr` finds this master: values may use U-Boot variables like `${serverip}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// TFTP directory holding `vmlinuz` and `initrd.cpio.gz`.
    pub tftp_dir: String,
    /// `labboot.root=` value (`nbd:${serverip}:10809/master`).
    pub root: String,
    /// `labboot.agent=` value, if any.
    pub agent: String,
    /// Kernel console device (`ttyAMA0`).
    pub console: String,
    /// `tftpwindowsize` (RFC 7440), 1 to 64.
    pub tftp_window: u16,
}

/// How the ext4 image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ext4Spec {
    /// Image size in bytes (a multiple of 4096); `None`: sized from the tree.
    pub size: Option<u64>,
}

/// A `.deb` file of the recipe's own (`local_debs`), unpacked after the apt packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDeb {
    /// As the recipe writes it (a path relative to the recipe, `*` allowed in the file name).
    pub written: String,
    /// The one file it matched.
    pub path: PathBuf,
}

/// Another recipe built first, its outputs copied into this one's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSpec {
    /// The nested recipe, checked.
    pub recipe: Box<Recipe>,
    /// Where its outputs go in this root filesystem (normalized, no leading `/`).
    pub dir: String,
}

/// How the `disk` output is assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The package whose `systemd-boot<arch>.efi` boots the disk (`systemd-boot-efi`).
    pub loader: String,
    /// The kernel command line of the boot entry.
    pub cmdline: String,
    /// Size of the EFI system partition in bytes.
    pub esp_size: u64,
}

/// Parses a size field (`ext4.size`, `disk.esp_size`): a number or a string with K, M or G.
fn size_field(c: &Checker<'_>, field: &str, v: &serde_yaml_ng::Value, min: u64) -> Result<u64> {
    let text = match v {
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    parse_size(&text)
        .filter(|b| *b >= min && *b % 4096 == 0)
        .ok_or_else(|| {
            c.err(
                field,
                format!(
                    "{text:?} is not a size of at least {}M in whole 4K blocks (bytes, or a number with K, M or G)",
                    min >> 20
                ),
            )
        })
}

/// The one file `pattern` (relative to `dir`; `*` allowed in its file name only) names.
fn match_one(dir: &Path, pattern: &str) -> std::result::Result<PathBuf, String> {
    let full = dir.join(pattern);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or("names no file")?;
    let parent = full.parent().unwrap_or(Path::new("."));
    if parent.to_string_lossy().contains('*') {
        return Err("'*' is allowed in the file name only".into());
    }
    if !name.contains('*') {
        return if full.is_file() {
            Ok(full)
        } else {
            Err(format!("{}: no such file", full.display()))
        };
    }
    let parts: Vec<&str> = name.split('*').collect();
    let fits = |cand: &str| {
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if cand.len() < first.len() + last.len()
            || !cand.starts_with(first)
            || !cand.ends_with(last)
        {
            return false;
        }
        let mut rest = &cand[first.len()..cand.len() - last.len()];
        for mid in &parts[1..parts.len() - 1] {
            match rest.find(mid) {
                Some(i) => rest = &rest[i + mid.len()..],
                None => return false,
            }
        }
        true
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(parent)
        .map_err(|e| {
            format!(
                "{} matches no file ({}: {e})",
                full.display(),
                parent.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| fits(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("{} matches no file", full.display())),
        n => Err(format!(
            "{} matches {n} files ({}); keep one",
            full.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Parses an ext4 size: bytes, or a number with a binary suffix `K`, `M` or `G`.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&text[..i], 1 << 20),
        (i, 'G' | 'g') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// A checked recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The file name, used in messages.
    pub name: String,
    /// sha256 of the recipe's bytes.
    pub sha256: String,
    /// Target architecture.
    pub arch: Arch,
    /// Debian suite (recorded in the manifest; apt's configuration decides what is fetched).
    pub suite: String,
    /// Timestamp for every file, if the recipe fixes one.
    pub epoch: Option<u32>,
    /// A tarball or directory the packages are unpacked over ([`crate::base`]).
    pub base: Option<BaseSpec>,
    /// Root filesystem packages.
    pub packages: Vec<String>,
    /// Dependencies not to fetch.
    pub exclude: BTreeSet<String>,
    /// `/etc/hostname`.
    pub hostname: Option<String>,
    /// Users.
    pub users: Vec<User>,
    /// Groups.
    pub groups: Vec<Group>,
    /// Directories.
    pub directories: Vec<DirSpec>,
    /// Files.
    pub files: Vec<FileSpec>,
    /// Symlinks.
    pub symlinks: Vec<SymlinkSpec>,
    /// `/etc/fstab` lines.
    pub fstab: Vec<String>,
    /// Kernel.
    pub kernel: Option<KernelSpec>,
    /// Initrd contents.
    pub initrd: Option<InitrdSpec>,
    /// Boot script parameters.
    pub boot: Option<BootSpec>,
    /// ext4 image parameters (defaults when the recipe has no `ext4` section).
    pub ext4: Ext4Spec,
    /// `.deb` files of the recipe's own, with their dependencies from apt.
    pub local_debs: Vec<LocalDeb>,
    /// A master image built first and shipped inside this root filesystem.
    pub master: Option<MasterSpec>,
    /// How the `disk` output is assembled.
    pub disk: Option<DiskSpec>,
    /// Outputs wanted.
    pub outputs: BTreeSet<Output>,
}

/// True for a valid Debian package name (policy 5.6.1).
pub fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::RecipeField {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn packages(&self, field: &str, names: &[String]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            if !valid_package_name(name) {
                return Err(self.err(
                    format!("{field}[{i}]"),
                    format!("{name:?} is not a Debian package name"),
                ));
            }
            if !seen.insert(name) {
                return Err(self.err(format!("{field}[{i}]"), format!("{name} is listed twice")));
            }
        }
        Ok(())
    }

    fn path(&self, field: &str, path: &str) -> Result<String> {
        if !path.starts_with('/') {
            return Err(self.err(field, format!("{path:?} must be an absolute path")));
        }
        let norm = normalize(path)
            .map_err(|_| self.err(field, format!("{path:?} may not contain '..' or NUL")))?;
        if norm.is_empty() {
            return Err(self.err(field, "the root itself cannot be replaced"));
        }
        Ok(norm)
    }

    fn mode(&self, field: &str, mode: Option<&str>, default: u32) -> Result<u32> {
        let Some(mode) = mode else { return Ok(default) };
        u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                self.err(
                    field,
                    format!("{mode:?} is not an octal mode like \"0755\""),
                )
            })
    }
}

impl Checker<'_> {
    /// Checks `base`: a path (string form, field `base`) or `{path, uid, gid}` (fields
    /// `base.path`, `base.uid`, `base.gid`); owners only for a directory.
    fn base(&self, dir: &Path, value: serde_yaml_ng::Value) -> Result<BaseSpec> {
        let (written, uid, gid, field) = match value {
            serde_yaml_ng::Value::String(path) => (path, None, None, "base"),
            v @ serde_yaml_ng::Value::Mapping(_) => {
                let m: RawBaseMap =
                    serde_yaml_ng::from_value(v).map_err(|e| self.err("base", e.to_string()))?;
                (m.path, m.uid, m.gid, "base.path")
            }
            _ => {
                return Err(self.err(
                    "base",
                    "must be a path or {path, uid, gid} (a tarball or a directory)",
                ))
            }
        };
        if written.is_empty() {
            return Err(self.err(field, "must not be empty"));
        }
        let path = dir.join(&written);
        let kind = detect(&path).map_err(|m| self.err(field, m))?;
        if kind != BaseKind::Dir {
            for (name, v) in [("base.uid", uid), ("base.gid", gid)] {
                if v.is_some() {
                    return Err(self.err(
                        name,
                        format!(
                            "{} is a {} with its own owners; uid and gid are for a directory base",
                            written,
                            kind.name()
                        ),
                    ));
                }
            }
        }
        Ok(BaseSpec {
            written,
            path,
            kind,
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
        })
    }
}

impl Recipe {
    /// Reads and checks the recipe at `path`; `source` files are relative to its directory.
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path.display().to_string();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Recipe::parse(&name, &dir, &text)
    }

    /// Checks recipe `text`; `name` appears in errors, `dir` anchors relative `source` paths.
    pub fn parse(name: &str, dir: &Path, text: &[u8]) -> Result<Recipe> {
        let raw: RawRecipe = serde_yaml_ng::from_slice(text).map_err(|e| Error::RecipeSyntax {
            file: name.to_string(),
            message: e.to_string(),
        })?;
        let c = Checker { file: name };
        let arch = Arch::from_debian(&raw.arch).ok_or_else(|| {
            c.err(
                "arch",
                format!("{:?} is not one of arm64, armhf, amd64, riscv64", raw.arch),
            )
        })?;
        if raw.suite.is_empty()
            || !raw
                .suite
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(c.err("suite", format!("{:?} is not a suite name", raw.suite)));
        }
        let epoch = match raw.epoch {
            None => None,
            Some(e) => Some(
                u32::try_from(e)
                    .map_err(|_| c.err("epoch", format!("{e} is not between 0 and 4294967295")))?,
            ),
        };
        c.packages("packages", &raw.packages)?;
        c.packages("exclude", &raw.exclude)?;
        let base = match raw.base {
            None => None,
            Some(v) => Some(c.base(dir, v)?),
        };
        if let Some(h) = &raw.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !h.starts_with('-');
            if !ok {
                return Err(c.err(
                    "hostname",
                    format!("{h:?} is not a host name (letters, digits, '-', at most 63)"),
                ));
            }
        }
        let mut users = Vec::new();
        let mut names = BTreeSet::new();
        for (i, u) in raw.users.into_iter().enumerate() {
            let f = format!("users[{i}]");
            if !valid_account_name(&u.name) {
                return Err(c.err(
                    format!("{f}.name"),
                    format!("{:?} is not a user name", u.name),
                ));
            }
            if !names.insert(u.name.clone()) {
                return Err(c.err(format!("{f}.name"), format!("{} is listed twice", u.name)));
            }
            for (field, v) in [("gecos", &u.gecos), ("home", &u.home), ("shell", &u.shell)] {
                if v.contains(':') || v.contains('\n') {
                    return Err(c.err(format!("{f}.{field}"), "may not contain ':' or a newline"));
                }
            }
            let password = u.password.unwrap_or_else(|| "*".to_string());
            if password.contains(':') || password.contains('\n') {
                return Err(c.err(format!("{f}.password"), "may not contain ':' or a newline"));
            }
            users.push(User {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
                gecos: u.gecos,
                home: u.home,
                shell: u.shell,
                password,
            });
        }
        let mut groups = Vec::new();
        let mut gnames = BTreeSet::new();
        for (i, g) in raw.groups.into_iter().enumerate() {
            let f = format!("groups[{i}]");
            if !valid_account_name(&g.name) || !gnames.insert(g.name.clone()) {
                return Err(c.err(
                    format!("{f}.name"),
                    format!("{:?} is not a new group name", g.name),
                ));
            }
            for (j, m) in g.members.iter().enumerate() {
                if !valid_account_name(m) {
                    return Err(c.err(
                        format!("{f}.members[{j}]"),
                        format!("{m:?} is not a user name"),
                    ));
                }
            }
            groups.push(Group {
                name: g.name,
                gid: g.gid,
                members: g.members,
            });
        }
        let mut directories = Vec::new();
        for (i, d) in raw.directories.iter().enumerate() {
            let f = format!("directories[{i}]");
            directories.push(DirSpec {
                path: c.path(&format!("{f}.path"), &d.path)?,
                mode: c.mode(&format!("{f}.mode"), d.mode.as_deref(), 0o755)?,
                uid: d.uid,
                gid: d.gid,
            });
        }
        let mut files = Vec::new();
        for (i, fl) in raw.files.iter().enumerate() {
            let f = format!("files[{i}]");
            let path = c.path(&format!("{f}.path"), &fl.path)?;
            let (data, source) = match (&fl.content, &fl.source) {
                (Some(text), None) => (text.clone().into_bytes(), None),
                (None, Some(src)) => {
                    let full: PathBuf = dir.join(src);
                    let data = std::fs::read(&full).map_err(|e| {
                        c.err(format!("{f}.source"), format!("{}: {e}", full.display()))
                    })?;
                    (data, Some(src.clone()))
                }
                _ => return Err(c.err(&f, "needs exactly one of content or source")),
            };
            files.push(FileSpec {
                path,
                data,
                source,
                mode: c.mode(&format!("{f}.mode"), fl.mode.as_deref(), 0o644)?,
                uid: fl.uid,
                gid: fl.gid,
            });
        }
        let mut symlinks = Vec::new();
        for (i, s) in raw.symlinks.iter().enumerate() {
            let f = format!("symlinks[{i}]");
            if s.target.is_empty() || s.target.contains('\0') {
                return Err(c.err(format!("{f}.target"), "must be a non-empty path"));
            }
            symlinks.push(SymlinkSpec {
                path: c.path(&format!("{f}.path"), &s.path)?,
                target: s.target.clone(),
            });
        }
        for (i, line) in raw.fstab.iter().enumerate() {
            let n = line.split_whitespace().count();
            if !(4..=6).contains(&n) || line.contains('\n') {
                return Err(c.err(
                    format!("fstab[{i}]"),
                    format!(
                        "{line:?} needs 4 to 6 fields: spec file vfstype options [freq passno]"
                    ),
                ));
            }
        }
        let kernel = match raw.kernel {
            None => None,
            Some(k) => {
                if !valid_package_name(&k.package) {
                    return Err(c.err(
                        "kernel.package",
                        format!("{:?} is not a Debian package name", k.package),
                    ));
                }
                for (i, m) in k.modules.iter().enumerate() {
                    if m.is_empty()
                        || !m
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(c.err(
                            format!("kernel.modules[{i}]"),
                            format!("{m:?} is not a module name"),
                        ));
                    }
                }
                Some(KernelSpec {
                    package: k.package,
                    modules: k.modules,
                })
            }
        };
        let initrd = match raw.initrd {
            None => None,
            Some(i) => {
                c.packages("initrd.packages", &i.packages)?;
                c.packages("initrd.exclude", &i.exclude)?;
                Some(InitrdSpec {
                    packages: i.packages,
                    exclude: i.exclude.into_iter().collect(),
                })
            }
        };
        let boot = match raw.boot {
            None => None,
            Some(b) => {
                for (field, v) in [
                    ("boot.tftp_dir", &b.tftp_dir),
                    ("boot.root", &b.root),
                    ("boot.agent", &b.agent),
                    ("boot.console", &b.console),
                ] {
                    if v.contains(['"', '\n', ';', ' ']) {
                        return Err(c.err(
                            field,
                            format!("{v:?} may not contain quotes, ';', spaces or newlines"),
                        ));
                    }
                }
                if b.tftp_dir.is_empty() || b.root.is_empty() || b.console.is_empty() {
                    return Err(c.err("boot", "tftp_dir, root and console must not be empty"));
                }
                if !(b.root.starts_with("nbd:") || b.root.starts_with("nfs:")) {
                    return Err(c.err(
                        "boot.root",
                        format!(
                            "{:?} is neither nbd:HOST:PORT/EXPORT nor nfs:HOST:/PATH",
                            b.root
                        ),
                    ));
                }
                if !(1..=64).contains(&b.tftp_window) {
                    return Err(c.err(
                        "boot.tftp_window",
                        format!("{} is not between 1 and 64", b.tftp_window),
                    ));
                }
                Some(BootSpec {
                    tftp_dir: b.tftp_dir.trim_matches('/').to_string(),
                    root: b.root,
                    agent: b.agent,
                    console: b.console,
                    tftp_window: b.tftp_window,
                })
            }
        };
        let ext4 = match raw.ext4 {
            None => Ext4Spec::default(),
            Some(e) => {
                let size = match &e.size {
                    None => None,
                    Some(v) => Some(size_field(&c, "ext4.size", v, 4 << 20)?),
                };
                Ext4Spec { size }
            }
        };
        let mut local_debs = Vec::new();
        for (i, written) in raw.local_debs.iter().enumerate() {
            let path = match_one(dir, written).map_err(|m| c.err(format!("local_debs[{i}]"), m))?;
            local_debs.push(LocalDeb {
                written: written.clone(),
                path,
            });
        }
        let master = match raw.master {
            None => None,
            Some(m) => {
                let path = dir.join(&m.recipe);
                let nested = Recipe::load(&path)
                    .map_err(|e| c.err("master.recipe", format!("{}: {e}", path.display())))?;
                if nested.master.is_some() {
                    return Err(c.err("master.recipe", "a master recipe may not nest another"));
                }
                Some(MasterSpec {
                    recipe: Box::new(nested),
                    dir: c.path("master.dir", &m.dir)?,
                })
            }
        };
        let disk = match raw.disk {
            None => None,
            Some(d) => {
                if !valid_package_name(&d.loader) {
                    return Err(c.err(
                        "disk.loader",
                        format!("{:?} is not a Debian package name", d.loader),
                    ));
                }
                if d.cmdline.contains('\n') || d.cmdline.trim().is_empty() {
                    return Err(c.err("disk.cmdline", "must be one non-empty line"));
                }
                let esp_size = match &d.esp_size {
                    None => 128 << 20,
                    Some(v) => size_field(&c, "disk.esp_size", v, 32 << 20)?,
                };
                Some(DiskSpec {
                    loader: d.loader,
                    cmdline: d.cmdline.trim().to_string(),
                    esp_size,
                })
            }
        };
        let mut outputs = BTreeSet::new();
        for (i, o) in raw.outputs.iter().enumerate() {
            if !outputs.insert(*o) {
                return Err(c.err(format!("outputs[{i}]"), "listed twice"));
            }
        }
        if outputs.is_empty() {
            return Err(c.err("outputs", "lists nothing to build"));
        }
        let rootfs_outputs = [Output::Squashfs, Output::Tar, Output::Ext4];
        if rootfs_outputs.iter().any(|o| outputs.contains(o))
            && raw.packages.is_empty()
            && base.is_none()
        {
            return Err(c.err(
                "packages",
                "a root filesystem needs a base or at least one package",
            ));
        }
        if outputs.contains(&Output::Dtbs) && kernel.is_none() {
            return Err(c.err("kernel", "the dtbs output needs kernel.package"));
        }
        if outputs.contains(&Output::Initrd) {
            if kernel.is_none() {
                return Err(c.err("kernel", "the initrd output needs a kernel (its modules)"));
            }
            if initrd.is_none() {
                return Err(c.err(
                    "initrd",
                    "the initrd output needs initrd.packages (busybox-static, nbd-client)",
                ));
            }
        }
        if outputs.contains(&Output::Bootscr) && boot.is_none() {
            return Err(c.err("boot", "the bootscr output needs a boot section"));
        }
        if outputs.contains(&Output::Bootscr) && !matches!(arch, Arch::Arm64 | Arch::Armhf) {
            return Err(c.err(
                "outputs",
                format!("bootscr: no U-Boot boot flow for {}", arch.debian()),
            ));
        }
        if outputs.contains(&Output::Kernel) && kernel.is_none() {
            return Err(c.err("kernel", "the kernel output needs kernel.package"));
        }
        if outputs.contains(&Output::Disk) {
            if disk.is_none() {
                return Err(c.err("disk", "the disk output needs a disk section"));
            }
            for (o, name) in [
                (Output::Ext4, "ext4"),
                (Output::Kernel, "kernel"),
                (Output::Initrd, "initrd"),
            ] {
                if !outputs.contains(&o) {
                    return Err(c.err(
                        "outputs",
                        format!("disk is made of ext4, kernel and initrd: add {name}"),
                    ));
                }
            }
            if arch != Arch::Amd64 {
                return Err(c.err(
                    "outputs",
                    format!(
                        "disk: UEFI disks are built for amd64, not {}",
                        arch.debian()
                    ),
                ));
            }
        }
        Ok(Recipe {
            name: name.to_string(),
            sha256: hex(&Sha256::digest(text)),
            arch,
            suite: raw.suite,
            epoch,
            base,
            packages: raw.packages,
            exclude: raw.exclude.into_iter().collect(),
            hostname: raw.hostname,
            users,
            groups,
            directories,
            files,
            symlinks,
            fstab: raw.fstab,
            kernel,
            initrd,
            boot,
            ext4,
            local_debs,
            master,
            disk,
            outputs,
        })
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "arch: arm64\nsuite: bookworm\nepoch: 1700000000\npackages: [busybox-static]\noutputs: [squashfs]\n";

    fn parse(text: &str) -> Result<Recipe> {
        Recipe::parse("recipe.yaml", Path::new("/nonexistent"), text.as_bytes())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_recipe_is_accepted() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.arch, Arch::Arm64);
        assert_eq!(r.epoch, Some(1_700_000_000));
        assert_eq!(r.packages, vec!["busybox-static"]);
        assert_eq!(r.sha256.len(), 64);
    }

    #[test]
    fn bad_package_names_the_index() {
        let text = "arch: arm64\nsuite: bookworm\npackages: [busybox-static, libc6, Bad_Name]\noutputs: [squashfs]\n";
        assert_eq!(
            err(text),
            "recipe.yaml: packages[2]: \"Bad_Name\" is not a Debian package name"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = err(&format!("{GOOD}colour: blue\n"));
        assert!(e.starts_with("recipe.yaml: unknown field `colour`"), "{e}");
    }

    #[test]
    fn bad_yaml_is_one_line_with_position() {
        let e = err("arch: [arm64\n");
        assert!(e.starts_with("recipe.yaml: "), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn wrong_arch_is_named() {
        let e = err("arch: sparc\nsuite: bookworm\npackages: [a1]\noutputs: [squashfs]\n");
        assert_eq!(
            e,
            "recipe.yaml: arch: \"sparc\" is not one of arm64, armhf, amd64, riscv64"
        );
    }

    #[test]
    fn missing_source_file_names_the_field() {
        let e = err(&format!(
            "{GOOD}files:\n  - path: /etc/x\n    source: nope.txt\n"
        ));
        assert!(
            e.starts_with("recipe.yaml: files[0].source: /nonexistent/nope.txt: "),
            "{e}"
        );
    }

    #[test]
    fn modes_are_octal_strings() {
        let r = parse(&format!(
            "{GOOD}files:\n  - {{path: /etc/x, content: hi, mode: \"0600\"}}\n"
        ))
        .unwrap();
        assert_eq!(r.files[0].mode, 0o600);
        assert_eq!(r.files[0].path, "etc/x");
        let e = err(&format!(
            "{GOOD}files:\n  - {{path: /etc/x, content: hi, mode: \"999\"}}\n"
        ));
        assert_eq!(
            e,
            "recipe.yaml: files[0].mode: \"999\" is not an octal mode like \"0755\""
        );
    }

    #[test]
    fn relative_and_dotdot_paths_are_refused() {
        let e = err(&format!(
            "{GOOD}symlinks:\n  - {{path: bin/sh, target: busybox}}\n"
        ));
        assert_eq!(
            e,
            "recipe.yaml: symlinks[0].path: \"bin/sh\" must be an absolute path"
        );
        let e = err(&format!("{GOOD}directories:\n  - {{path: /a/../b}}\n"));
        assert!(e.starts_with("recipe.yaml: directories[0].path:"), "{e}");
    }

    #[test]
    fn initrd_needs_a_kernel() {
        let e = err("arch: arm64\nsuite: bookworm\npackages: [a1]\ninitrd: {packages: [busybox-static]}\noutputs: [initrd]\n");
        assert_eq!(
            e,
            "recipe.yaml: kernel: the initrd output needs a kernel (its modules)"
        );
    }

    #[test]
    fn boot_section_is_checked() {
        let e = err(&GOOD.replace("[squashfs]", "[squashfs, bootscr]"));
        assert_eq!(
            e,
            "recipe.yaml: boot: the bootscr output needs a boot section"
        );
        let boot = "boot: {tftp_dir: m, root: \"iscsi:x\", console: ttyAMA0}\n";
        let e = err(&format!("{GOOD}{boot}"));
        assert_eq!(e, "recipe.yaml: boot.root: \"iscsi:x\" is neither nbd:HOST:PORT/EXPORT nor nfs:HOST:/PATH");
    }

    #[test]
    fn fstab_lines_are_checked() {
        let e = err(&format!("{GOOD}fstab: [\"proc /proc\"]\n"));
        assert!(e.starts_with("recipe.yaml: fstab[0]: "), "{e}");
    }

    #[test]
    fn users_may_not_break_passwd() {
        let e = err(&format!(
            "{GOOD}users:\n  - {{name: root, uid: 0, gid: 0, home: /root, shell: \"/bin/sh:x\"}}\n"
        ));
        assert_eq!(
            e,
            "recipe.yaml: users[0].shell: may not contain ':' or a newline"
        );
    }

    #[test]
    fn base_may_replace_packages_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::fs::write(dir.path().join("junk.tar"), b"junk").unwrap();
        let p = |text: &str| Recipe::parse("recipe.yaml", dir.path(), text.as_bytes());
        let head = "arch: arm64\nsuite: bookworm\noutputs: [squashfs]\n";
        let r = p(&format!("{head}base: tree\n")).unwrap();
        let b = r.base.unwrap();
        assert_eq!((b.kind, b.uid, b.gid), (BaseKind::Dir, 0, 0));
        assert_eq!(b.path, dir.path().join("tree"));
        let r = p(&format!(
            "{head}base: {{path: tree, uid: 1000, gid: 100}}\n"
        ))
        .unwrap();
        assert_eq!(r.base.map(|b| (b.uid, b.gid)), Some((1000, 100)));
        let e = p(&format!("{head}base: junk.tar\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("recipe.yaml: base: ")
                && e.ends_with(
                    "junk.tar is neither a directory nor a tar, tar.gz, tar.xz or tar.zst file"
                ),
            "{e}"
        );
        let e = p(&format!("{head}base: {{path: nope}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("recipe.yaml: base.path: ") && e.contains("nope"),
            "{e}"
        );
        let e = p(&format!("{head}base: {{path: tree, owner: 0}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("recipe.yaml: base: unknown field `owner`"),
            "{e}"
        );
        let e = p(&format!("{head}base: [tree]\n")).unwrap_err().to_string();
        assert!(e.starts_with("recipe.yaml: base: must be a path"), "{e}");
        let e = p(head).unwrap_err().to_string();
        assert_eq!(
            e,
            "recipe.yaml: packages: a root filesystem needs a base or at least one package"
        );
    }

    #[test]
    fn a_tarball_base_refuses_owners() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, "etc/", std::io::empty()).unwrap();
        std::fs::write(dir.path().join("b.tar"), tar.into_inner().unwrap()).unwrap();
        let text = "arch: arm64\nsuite: bookworm\noutputs: [tar]\nbase: {path: b.tar, gid: 5}\n";
        let e = Recipe::parse("recipe.yaml", dir.path(), text.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "recipe.yaml: base.gid: b.tar is a tar with its own owners; uid and gid are for a directory base"
        );
    }

    #[test]
    fn ext4_size_is_checked() {
        let r = parse(&format!("{GOOD}ext4: {{size: 64M}}\n")).unwrap();
        assert_eq!(r.ext4.size, Some(64 << 20));
        let r = parse(&format!("{GOOD}ext4: {{size: 8388608}}\n")).unwrap();
        assert_eq!(r.ext4.size, Some(8 << 20));
        assert_eq!(parse(GOOD).unwrap().ext4.size, None);
        for bad in ["1M", "12345", "lots", "-64M"] {
            let e = err(&format!("{GOOD}ext4: {{size: {bad}}}\n"));
            assert!(e.starts_with("recipe.yaml: ext4.size: "), "{e}");
        }
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("M"), None);
    }

    #[test]
    fn dtbs_need_a_kernel() {
        let e = err(&GOOD.replace("[squashfs]", "[squashfs, dtbs]"));
        assert_eq!(
            e,
            "recipe.yaml: kernel: the dtbs output needs kernel.package"
        );
    }

    const DISK: &str = "arch: amd64\nsuite: bookworm\npackages: [systemd]\nkernel: {package: linux-image-amd64}\ninitrd: {packages: [busybox-static]}\n";

    #[test]
    fn disk_needs_its_section_its_parts_and_amd64() {
        let no_section = format!("{DISK}outputs: [ext4, kernel, initrd, disk]\n");
        assert_eq!(
            err(&no_section),
            "recipe.yaml: disk: the disk output needs a disk section"
        );
        let section = "disk: {loader: systemd-boot-efi, cmdline: \"console=ttyS0\"}\n";
        let no_initrd = format!("{DISK}{section}outputs: [ext4, kernel, disk]\n");
        assert_eq!(
            err(&no_initrd),
            "recipe.yaml: outputs: disk is made of ext4, kernel and initrd: add initrd"
        );
        let arm = format!("{DISK}{section}outputs: [ext4, kernel, initrd, disk]\n")
            .replace("amd64", "arm64");
        assert!(err(&arm).contains("UEFI disks are built for amd64, not arm64"));
        let small = format!(
            "{DISK}disk: {{loader: systemd-boot-efi, cmdline: x, esp_size: 8M}}\noutputs: [ext4, kernel, initrd, disk]\n"
        );
        assert!(err(&small)
            .starts_with("recipe.yaml: disk.esp_size: \"8M\" is not a size of at least 32M"));
        let good = format!("{DISK}{section}outputs: [ext4, kernel, initrd, disk]\n");
        let r = parse(&good).unwrap();
        let d = r.disk.unwrap();
        assert_eq!(
            (d.loader.as_str(), d.esp_size),
            ("systemd-boot-efi", 128 << 20)
        );
    }

    #[test]
    fn local_debs_match_exactly_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = |pattern: &str| {
            format!("arch: amd64\nsuite: bookworm\npackages: [systemd]\nlocal_debs: [{pattern}]\noutputs: [tar]\n")
        };
        let load = |t: String| Recipe::parse("r.yaml", dir.path(), t.as_bytes());
        let e = load(text("debs/labboot_*_amd64.deb"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yaml: local_debs[0]: "), "{e}");
        std::fs::create_dir(dir.path().join("debs")).unwrap();
        let e = load(text("debs/labboot_*_amd64.deb"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("matches no file"), "{e}");
        std::fs::write(dir.path().join("debs/labboot_0.1.0_amd64.deb"), b"x").unwrap();
        std::fs::write(dir.path().join("debs/labboot_0.1.0_arm64.deb"), b"x").unwrap();
        let r = load(text("debs/labboot_*_amd64.deb")).unwrap();
        assert_eq!(
            r.local_debs[0].path,
            dir.path().join("debs/labboot_0.1.0_amd64.deb")
        );
        std::fs::write(dir.path().join("debs/labboot_0.2.0_amd64.deb"), b"x").unwrap();
        let e = load(text("debs/labboot_*_amd64.deb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches 2 files"), "{e}");
        let e = load(text("d*/labboot.deb")).unwrap_err().to_string();
        assert!(e.contains("'*' is allowed in the file name only"), "{e}");
    }
}
