//! Orchestration: recipe → packages → trees → outputs → manifest, with progress lines.
//!
//! Every output is written under a temporary name in the output directory and renamed when
//! complete, so a failed build leaves no half-written image. The epoch comes from the caller
//! (the CLI reads `--epoch` or SOURCE_DATE_EPOCH) or the recipe; the library reads no
//! environment and no clock, which is what makes two builds byte-identical.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::apt::{Apt, PackageInfo};
use crate::error::{Error, Result};
use crate::manifest::{BaseRef, Input, Manifest, RecipeRef, SourceFile};
use crate::modules::{Index, NFS_ROOT_MODULES, ROOT_MODULES};
use crate::recipe::{hex, Output, Recipe};
use crate::tree::{Node, Tree};
use crate::{base, bootscr, cpio, deb, disk, ext4, initrd, rootfs, squashfs, tarball};

/// Where to write, where to cache packages, and an optional epoch override.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Package cache directory (created if missing).
    pub cache: PathBuf,
    /// Overrides the recipe's `epoch`.
    pub epoch: Option<u32>,
}

impl Options {
    /// Options with no epoch override.
    pub fn new(out: PathBuf, cache: PathBuf) -> Options {
        Options {
            out,
            cache,
            epoch: None,
        }
    }
}

/// Progress reporting: one line per step; on a terminal, the step line shows elapsed time as
/// it completes.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    started: Option<(String, Instant)>,
}

impl Progress {
    /// Plain lines on stderr.
    pub fn plain() -> Progress {
        Progress {
            tty: false,
            quiet: false,
            started: None,
        }
    }

    /// A live display if stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
            started: None,
        }
    }

    /// Nothing printed.
    pub fn quiet() -> Progress {
        Progress {
            tty: false,
            quiet: true,
            started: None,
        }
    }

    /// Starts a step, finishing the previous one.
    pub fn step(&mut self, what: &str) {
        self.finish();
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K  … {what}");
        } else {
            let _ = writeln!(err, "imagebuilder: {what}");
        }
        let _ = err.flush();
        self.started = Some((what.to_string(), Instant::now()));
    }

    /// A detail of the current step (on a terminal it replaces the step line's tail).
    pub fn detail(&mut self, what: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let step = self.started.as_ref().map(|(s, _)| s.as_str()).unwrap_or("");
            let _ = write!(err, "\r\x1b[K  … {step}: {what}");
        } else {
            let _ = writeln!(err, "imagebuilder:   {what}");
        }
        let _ = err.flush();
    }

    /// Ends the current step.
    pub fn finish(&mut self) {
        if let Some((what, t)) = self.started.take() {
            if self.tty && !self.quiet {
                let _ = writeln!(
                    std::io::stderr(),
                    "\r\x1b[K  ✓ {what} ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
fn write_output(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dest = dir.join(name);
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write(&mut f)?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn field_error(recipe: &Recipe, field: String, message: String) -> Error {
    Error::RecipeField {
        file: recipe.name.clone(),
        field,
        message,
    }
}

/// Checks that apt knows every named package, naming the recipe field of the first it doesn't.
fn check_known(apt: &mut Apt, recipe: &Recipe, field: &str, names: &[String]) -> Result<()> {
    if let Some(&i) = apt.missing(names)?.first() {
        return Err(field_error(
            recipe,
            format!("{field}[{i}]"),
            format!(
                "apt has no package {} for {} (or all)",
                names[i],
                recipe.arch.debian()
            ),
        ));
    }
    Ok(())
}

/// Follows a kernel metapackage (`linux-image-arm64`) to the versioned image package.
fn kernel_package(apt: &mut Apt, recipe: &Recipe, name: &str) -> Result<PackageInfo> {
    let mut info = apt.show(name)?.ok_or_else(|| {
        field_error(
            recipe,
            "kernel.package".into(),
            format!("apt has no package {name} for {}", recipe.arch.debian()),
        )
    })?;
    for _ in 0..4 {
        let next = info
            .depends
            .iter()
            .filter_map(|g| g.first())
            .find(|n| n.starts_with("linux-image-") && n.as_str() != info.name)
            .cloned();
        match next {
            Some(n) => match apt.show(&n)? {
                Some(i) => info = i,
                None => break,
            },
            None => break,
        }
    }
    Ok(info)
}

/// Builds every output the recipe asks for into `opts.out`; returns the manifest it wrote.
pub fn build(recipe: &Recipe, opts: &Options, progress: &mut Progress) -> Result<Manifest> {
    let epoch = opts.epoch.or(recipe.epoch).ok_or_else(|| {
        field_error(
            recipe,
            "epoch".into(),
            "missing: set epoch in the recipe, SOURCE_DATE_EPOCH or --epoch".into(),
        )
    })?;
    let wants = |o: Output| recipe.outputs.contains(&o);
    let need_rootfs = wants(Output::Squashfs) || wants(Output::Tar) || wants(Output::Ext4);
    let need_kernel = wants(Output::Initrd) || wants(Output::Kernel) || wants(Output::Dtbs);

    let mut roots: Vec<String> = Vec::new();
    // The recipe's own .debs: their dependencies come from apt like the packages'.
    let mut local_groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut local_inputs: Vec<Input> = Vec::new();
    if need_rootfs {
        roots.extend(recipe.packages.iter().cloned());
        for local in &recipe.local_debs {
            let fields = local_fields(local)?;
            let arch = fields.get("Architecture").map_or("", String::as_str);
            if arch != recipe.arch.debian() && arch != "all" {
                return Err(Error::package(
                    &local.written,
                    format!(
                        "is a package for {arch:?}; the recipe builds {}",
                        recipe.arch.debian()
                    ),
                ));
            }
            for field in ["Pre-Depends", "Depends"] {
                for group in crate::apt::parse_depends(fields.get(field).map_or("", |v| v)) {
                    roots.extend(group.iter().cloned());
                    local_groups.push((local.written.clone(), group));
                }
            }
            let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
            local_inputs.push(Input {
                name: field("Package"),
                version: field("Version"),
                arch: field("Architecture"),
                role: "local".to_string(),
                sha256: crate::apt::file_sha256(&local.path)?,
                size: std::fs::metadata(&local.path)
                    .map_err(|e| Error::io(&local.path, e))?
                    .len(),
            });
        }
    }
    if let (true, Some(d)) = (wants(Output::Disk), &recipe.disk) {
        roots.push(d.loader.clone());
    }
    if let (true, Some(spec)) = (wants(Output::Initrd), &recipe.initrd) {
        roots.extend(spec.packages.iter().cloned());
    }
    if let (true, Some(k)) = (need_kernel, &recipe.kernel) {
        roots.push(k.package.clone());
    }
    roots.sort();
    roots.dedup();
    let mut sets: Vec<(&str, Vec<PackageInfo>)> = Vec::new();
    let mut all: Vec<PackageInfo> = Vec::new();
    let mut all_paths: Vec<PathBuf> = Vec::new();
    // A recipe made only of a base needs no apt at all.
    if !roots.is_empty() {
        progress.step("resolving packages");
        let mut apt = Apt::new(recipe.arch, &opts.cache)?;
        fetch_sets(
            &mut apt,
            recipe,
            &roots,
            &local_groups,
            need_rootfs,
            need_kernel,
            &mut sets,
        )?;
        let mut unique: BTreeMap<String, PackageInfo> = BTreeMap::new();
        for (_, set) in &sets {
            for p in set {
                unique.insert(p.name.clone(), p.clone());
            }
        }
        all = unique.into_values().collect();
        progress.step(&format!("fetching {} packages", all.len()));
        all_paths = apt.fetch(&all, |m| progress.detail(m))?;
    }
    let path_of: BTreeMap<&str, &Path> = all
        .iter()
        .map(|p| p.name.as_str())
        .zip(all_paths.iter().map(PathBuf::as_path))
        .collect();
    // A master shipped inside: built first, into out/master, with the same cache and epoch.
    let master = match (&recipe.master, need_rootfs) {
        (Some(m), true) => {
            progress.step(&format!("building the master image {}", m.recipe.name));
            let nested = Options {
                out: opts.out.join("master"),
                cache: opts.cache.clone(),
                epoch: opts.epoch,
            };
            let manifest = build(&m.recipe, &nested, progress)?;
            Some((m.dir.clone(), nested.out, manifest))
        }
        _ => None,
    };
    let extras = Extras {
        local: local_inputs,
        master,
    };
    build_outputs(recipe, opts, epoch, progress, &sets, &path_of, extras)
}

/// What goes into the rootfs besides apt's packages: the recipe's own .debs (their manifest
/// entries, in the recipe's order) and a master built first (its `dir`, output directory and
/// manifest).
struct Extras {
    local: Vec<Input>,
    master: Option<(String, PathBuf, Manifest)>,
}

/// A local .deb's control fields.
fn local_fields(local: &crate::recipe::LocalDeb) -> Result<BTreeMap<String, String>> {
    let text = deb::control(&local.path)?;
    crate::apt::parse_stanzas(&text)
        .into_iter()
        .next()
        .ok_or_else(|| Error::package(&local.written, "empty control file"))
}

/// Resolves the package sets (`rootfs`, `initrd`, `kernel`) the outputs need.
fn fetch_sets(
    apt: &mut Apt,
    recipe: &Recipe,
    roots: &[String],
    local_groups: &[(String, Vec<String>)],
    need_rootfs: bool,
    need_kernel: bool,
    sets: &mut Vec<(&'static str, Vec<PackageInfo>)>,
) -> Result<()> {
    let wants = |o: Output| recipe.outputs.contains(&o);
    apt.prefetch(roots)?;
    if need_rootfs && !(recipe.packages.is_empty() && local_groups.is_empty()) {
        check_known(apt, recipe, "packages", &recipe.packages)?;
        let mut groups: Vec<(String, Vec<String>)> = recipe
            .packages
            .iter()
            .map(|p| ("the recipe".to_string(), vec![p.clone()]))
            .collect();
        groups.extend(local_groups.iter().cloned());
        sets.push(("rootfs", apt.resolve_groups(groups, &recipe.exclude)?));
    }
    if let (true, Some(d)) = (wants(Output::Disk), &recipe.disk) {
        let info = apt.show(&d.loader)?.ok_or_else(|| {
            field_error(
                recipe,
                "disk.loader".into(),
                format!("apt knows no package {}", d.loader),
            )
        })?;
        sets.push(("loader", vec![info]));
    }
    if wants(Output::Initrd) {
        let spec = recipe.initrd.as_ref().expect("checked by Recipe::parse");
        check_known(apt, recipe, "initrd.packages", &spec.packages)?;
        sets.push(("initrd", apt.resolve(&spec.packages, &spec.exclude)?));
    }
    if need_kernel {
        let k = recipe.kernel.as_ref().expect("checked by Recipe::parse");
        sets.push(("kernel", vec![kernel_package(apt, recipe, &k.package)?]));
    }
    Ok(())
}

/// Unpacks, configures and writes every output, then the manifest.
fn build_outputs(
    recipe: &Recipe,
    opts: &Options,
    epoch: u32,
    progress: &mut Progress,
    sets: &[(&str, Vec<PackageInfo>)],
    path_of: &BTreeMap<&str, &Path>,
    extras: Extras,
) -> Result<Manifest> {
    let wants = |o: Output| recipe.outputs.contains(&o);
    let need_rootfs = wants(Output::Squashfs) || wants(Output::Tar) || wants(Output::Ext4);
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut manifest = Manifest {
        recipe: RecipeRef {
            name: Path::new(&recipe.name)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            sha256: recipe.sha256.clone(),
        },
        arch: recipe.arch.debian().to_string(),
        suite: recipe.suite.clone(),
        epoch,
        base: None,
        kernel_version: None,
        inputs: Vec::new(),
        files: recipe
            .files
            .iter()
            .filter_map(|f| {
                let source = f.source.clone()?;
                use sha2::Digest;
                Some(SourceFile {
                    path: format!("/{}", f.path),
                    source,
                    sha256: hex(&sha2::Sha256::digest(&f.data)),
                })
            })
            .collect(),
        outputs: Vec::new(),
    };
    for (role, set) in sets {
        for p in set {
            manifest.inputs.push(Input {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                role: role.to_string(),
                sha256: p.sha256.clone(),
                size: p.size,
            });
        }
    }
    let debs = |role: &str| -> Vec<&Path> {
        sets.iter()
            .filter(|(r, _)| *r == role)
            .flat_map(|(_, s)| s.iter().map(|p| path_of[p.name.as_str()]))
            .collect()
    };

    if need_rootfs {
        progress.step("unpacking the root filesystem");
        let mut tree = match &recipe.base {
            Some(b) => {
                // A base brings its own layout (merged /usr or not); packages go on top.
                let mut tree = Tree::new();
                let entries = base::unpack(&recipe.name, b, &mut tree)?;
                let sha256 = match b.kind {
                    base::BaseKind::Dir => None,
                    _ => Some(crate::apt::file_sha256(&b.path)?),
                };
                manifest.base = Some(BaseRef {
                    path: b.written.clone(),
                    kind: b.kind.name().to_string(),
                    sha256,
                    entries,
                });
                tree
            }
            None => rootfs::merged_usr()?,
        };
        let mut n = rootfs::unpack_all(&mut tree, &debs("rootfs"))?;
        for (local, input) in recipe.local_debs.iter().zip(&extras.local) {
            n += deb::unpack(&local.path, &mut tree, |_| true)?;
            manifest.inputs.push(input.clone());
        }
        rootfs::configure(&mut tree, recipe)?;
        if let Some((dir, built, nested)) = &extras.master {
            for o in &nested.outputs {
                let from = built.join(&o.name);
                let data = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                tree.insert(&format!("{dir}/{}", o.name), Node::file(0o644, data))?;
            }
            let from = built.join("manifest.json");
            let data = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            tree.insert(&format!("{dir}/manifest.json"), Node::file(0o644, data))?;
        }
        progress.detail(&format!(
            "{n} entries, {:.1} MiB of files",
            tree.data_size() as f64 / 1048576.0
        ));
        if wants(Output::Squashfs) {
            progress.step("writing rootfs.squashfs");
            write_output(&opts.out, "rootfs.squashfs", |f| {
                squashfs::write(&tree, epoch, std::io::BufWriter::new(f)).map(|_| ())
            })?;
            manifest.add_output(&opts.out, "rootfs.squashfs")?;
        }
        if wants(Output::Tar) {
            progress.step("writing rootfs.tar.gz");
            write_output(&opts.out, "rootfs.tar.gz", |f| {
                tarball::write(&tree, epoch, f)
            })?;
            manifest.add_output(&opts.out, "rootfs.tar.gz")?;
        }
        if wants(Output::Ext4) {
            progress.step("writing rootfs.ext4 (mke2fs, debugfs)");
            let pid = std::process::id();
            let tmp = opts.out.join(format!(".rootfs.ext4.tmp{pid}"));
            let scratch = opts.out.join(format!(".rootfs.ext4.stage{pid}"));
            let _ = std::fs::remove_dir_all(&scratch);
            let written = ext4::write(&tree, epoch, &recipe.ext4, &recipe.sha256, &scratch, &tmp)
                .and_then(|()| {
                    let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
                    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
                    let dest = opts.out.join("rootfs.ext4");
                    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
                });
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
            manifest.add_output(&opts.out, "rootfs.ext4")?;
        }
    }

    if wants(Output::Initrd) || wants(Output::Kernel) || wants(Output::Dtbs) {
        let kernel = recipe.kernel.as_ref().expect("checked by Recipe::parse");
        let kdeb = debs("kernel")[0];
        let mut nfs_only: Vec<String> = Vec::new();
        let (index, order) = if wants(Output::Initrd) {
            progress.step("reading kernel modules");
            let index = Index::scan(kdeb)?;
            let mut wanted: Vec<(String, String)> = ROOT_MODULES
                .iter()
                .map(|m| (m.to_string(), "built-in root modules".to_string()))
                .collect();
            for (i, m) in kernel.modules.iter().enumerate() {
                wanted.push((m.clone(), format!("{}: kernel.modules[{i}]", recipe.name)));
            }
            let order = index.load_order(&wanted)?;
            // What an NBD root loads: everything but the NFS client and what only it needs.
            let not_nfs: Vec<(String, String)> = wanted
                .iter()
                .filter(|(m, _)| !NFS_ROOT_MODULES.contains(&m.as_str()))
                .cloned()
                .collect();
            let base_order = index.load_order(&not_nfs)?;
            nfs_only = order
                .iter()
                .filter(|m| !base_order.contains(m))
                .cloned()
                .collect();
            progress.detail(&format!(
                "{} of {} modules for kernel {}",
                order.len(),
                index.modules.len(),
                index.version
            ));
            manifest.kernel_version = Some(index.version.clone());
            (index, order)
        } else {
            (Index::default(), Vec::new())
        };
        progress.step("extracting the kernel");
        let mut wanted_paths: BTreeMap<&str, &str> = BTreeMap::new();
        for name in &order {
            let m = &index.modules[name];
            wanted_paths.insert(m.package_path.as_str(), m.rel.as_str());
        }
        let mut ktree = Tree::new();
        let mut vmlinuz: Option<Vec<u8>> = None;
        // usr/lib/linux-image-<version>/<vendor>/<board>.dtb → "<vendor>/<board>.dtb"
        let mut dtbs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        deb::visit(kdeb, |e| {
            let dtb = e
                .path
                .strip_prefix("usr/lib/linux-image-")
                .and_then(|rest| rest.split_once('/'))
                .map(|(_, rel)| rel.to_string())
                .filter(|rel| rel.ends_with(".dtb"));
            if let (true, deb::Link::File, Some(rel)) = (wants(Output::Dtbs), &e.link, dtb) {
                let mut data = Vec::new();
                std::io::Read::read_to_end(e.reader, &mut data)
                    .map_err(|err| Error::io(kdeb, err))?;
                dtbs.insert(rel, data);
            } else if e.link == deb::Link::File && e.path.starts_with("boot/vmlinuz-") {
                let mut data = Vec::new();
                std::io::Read::read_to_end(e.reader, &mut data)
                    .map_err(|err| Error::io(kdeb, err))?;
                vmlinuz = Some(data);
            } else if let Some(rel) = wanted_paths.get(e.path.as_str()) {
                let mut data = Vec::new();
                std::io::Read::read_to_end(e.reader, &mut data)
                    .map_err(|err| Error::io(kdeb, err))?;
                let data = crate::modules::decompress(data)?;
                ktree.insert(
                    &format!("lib/modules/{}/{rel}", index.version),
                    crate::tree::Node::file(0o644, data),
                )?;
            }
            Ok(())
        })?;
        let kname = sets
            .iter()
            .find(|(r, _)| *r == "kernel")
            .map(|(_, s)| s[0].name.clone())
            .unwrap_or_default();
        let vmlinuz =
            vmlinuz.ok_or_else(|| Error::package(&kname, "no /boot/vmlinuz-* in the package"))?;
        if wants(Output::Kernel) {
            write_output(&opts.out, "vmlinuz", |f| {
                f.write_all(&vmlinuz).map_err(|e| Error::io("vmlinuz", e))
            })?;
            manifest.add_output(&opts.out, "vmlinuz")?;
        }
        if wants(Output::Dtbs) {
            if dtbs.is_empty() {
                return Err(Error::package(
                    &kname,
                    "no usr/lib/linux-image-*/**.dtb in the package (the dtbs output needs them)",
                ));
            }
            progress.step(&format!("writing {} dtbs", dtbs.len()));
            let dir = opts.out.join("dtbs");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            for (rel, data) in &dtbs {
                let name = format!("dtbs/{rel}");
                let parent = opts.out.join(&name);
                let parent = parent.parent().expect("has a parent");
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                write_output(&opts.out, &name, |f| {
                    f.write_all(data).map_err(|e| Error::io(&name, e))
                })?;
                manifest.add_output(&opts.out, &name)?;
            }
        }
        if wants(Output::Initrd) {
            progress.step("unpacking initrd packages");
            let mut pkgs = rootfs::merged_usr()?;
            rootfs::unpack_all(&mut pkgs, &debs("initrd"))?;
            let tree = initrd::build(recipe.arch, &pkgs, &index, &ktree, &order, &nfs_only)?;
            progress.step("writing initrd.cpio.gz");
            let archive = cpio::newc(&tree, epoch);
            let gz = cpio::gzip(&archive).map_err(|e| Error::step("initrd", e.to_string()))?;
            write_output(&opts.out, "initrd.cpio.gz", |f| {
                f.write_all(&gz).map_err(|e| Error::io("initrd.cpio.gz", e))
            })?;
            manifest.add_output(&opts.out, "initrd.cpio.gz")?;
        }
    }

    if wants(Output::Bootscr) {
        let boot = recipe.boot.as_ref().expect("checked by Recipe::parse");
        let img = bootscr::image(recipe.arch, boot, epoch)?;
        write_output(&opts.out, "boot.scr", |f| {
            f.write_all(&img).map_err(|e| Error::io("boot.scr", e))
        })?;
        manifest.add_output(&opts.out, "boot.scr")?;
    }

    if let (true, Some(spec)) = (wants(Output::Disk), &recipe.disk) {
        progress.step("writing disk.img (GPT, EFI system partition, root) and disk.qcow2");
        let loader = debs("loader")[0];
        disk::write(&opts.out, spec, loader, epoch, &recipe.sha256)?;
        manifest.add_output(&opts.out, "disk.img")?;
        manifest.add_output(&opts.out, "disk.qcow2")?;
    }

    progress.step("writing manifest.json");
    let json = manifest.to_json();
    write_output(&opts.out, "manifest.json", |f| {
        f.write_all(json.as_bytes())
            .map_err(|e| Error::io("manifest.json", e))
    })?;
    progress.finish();
    Ok(manifest)
}
