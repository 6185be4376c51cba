//! Rebuilding ramdisks: originals made by GNU cpio and the compression tools, results checked
//! with `cpio -t`, `dumpimage -l`, mkimage and labboot's own reader.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dispatcher::artifacts::cpio::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use dispatcher::artifacts::decompress::detect;
use dispatcher::artifacts::ramdisk::{read_ramdisk, rebuild_ramdisk, Member, RamdiskSpec};
use dispatcher::job::model::Compression;
use dispatcher::ErrorKind;

fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn is_root() -> bool {
    String::from_utf8(sh("id -u")).unwrap().trim() == "0"
}

fn tool(c: Compression) -> &'static str {
    match c {
        Compression::Gz => "gzip",
        Compression::Xz => "xz --check=crc32",
        Compression::Zstd => "zstd -q",
        Compression::Bz2 => "bzip2",
    }
}

fn decompressor(c: Option<Compression>) -> &'static str {
    match c {
        None => "cat",
        Some(Compression::Gz) => "gzip -dc",
        Some(Compression::Xz) => "xz -dc",
        Some(Compression::Zstd) => "zstd -dcq",
        Some(Compression::Bz2) => "bzip2 -dc",
    }
}

/// A small initramfs tree: files, directories, `lib -> usr/lib`, and (as root) /dev/console.
fn initramfs_tree(dir: &Path) {
    sh(&format!(
        "cd {} && mkdir -p bin usr/lib etc dev && printf '#!/bin/sh\\nexec sh\\n' > init && \
         chmod 755 init && echo busybox > bin/sh && chmod 755 bin/sh && echo box > etc/hostname && \
         echo libc > usr/lib/libc.so && ln -s usr/lib lib && ln -s /proc/mounts etc/mtab",
        dir.display()
    ));
    if is_root() {
        sh(&format!("mknod {}/dev/console c 5 1", dir.display()));
    }
}

/// `find . | cpio -o -H newc` of `dir`, as mkinitramfs and LAVA build archives.
fn gnu_cpio(dir: &Path) -> Vec<u8> {
    sh(&format!(
        "cd {} && find . | LC_ALL=C sort | cpio -o -H newc --quiet",
        dir.display()
    ))
}

fn compress(data: &[u8], c: Option<Compression>, dir: &Path) -> Vec<u8> {
    let Some(c) = c else { return data.to_vec() };
    let f = dir.join("to-compress");
    std::fs::write(&f, data).unwrap();
    sh(&format!("{} -c < {}", tool(c), f.display()))
}

fn decompress_with_tool(data: &[u8], c: Option<Compression>, dir: &Path) -> Vec<u8> {
    let f = dir.join("to-decompress");
    std::fs::write(&f, data).unwrap();
    sh(&format!("{} < {}", decompressor(c), f.display()))
}

/// `cpio -t` of uncompressed cpio data: every archive of it, one after the other (GNU cpio
/// stops at the first trailer, the kernel goes on to the next archive).
fn cpio_list(data: &[u8], dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        names.extend(cpio_list_one(rest, dir));
        let Some(at) = rest.windows(10).position(|w| w == b"TRAILER!!!") else {
            break;
        };
        let mut end = (at + 11 + 3) & !3;
        while end < rest.len() && rest[end] == 0 {
            end += 1;
        }
        rest = &rest[end.min(rest.len())..];
    }
    names
}

/// `cpio -t` of the first archive of uncompressed cpio data.
fn cpio_list_one(data: &[u8], dir: &Path) -> Vec<String> {
    let f = dir.join("to-list.cpio");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&f)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpio -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "cpio -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The test overlay and an unpacked modules tree, as the deploy hands them over.
fn additions(dir: &Path) -> (PathBuf, PathBuf) {
    let overlay = dir.join("overlay");
    let modules = dir.join("modules");
    sh(&format!(
        "mkdir -p {o}/lava-1234/bin {m}/lib/modules/6.1.0/kernel/drivers && \
         printf 'run\\n' > {o}/lava-1234/bin/lava-test-runner && \
         chmod 750 {o}/lava-1234/bin/lava-test-runner && \
         ln -s bin/lava-test-runner {o}/lava-1234/runner && \
         printf 'ko' > {m}/lib/modules/6.1.0/kernel/drivers/x.ko && \
         chmod 600 {m}/lib/modules/6.1.0/kernel/drivers/x.ko && \
         echo 'kernel/drivers/x.ko:' > {m}/lib/modules/6.1.0/modules.dep",
        o = overlay.display(),
        m = modules.display()
    ));
    (overlay, modules)
}

/// The names the additions must get in a ramdisk whose `lib` is a symlink to `usr/lib`.
const NEW_NAMES: [&str; 10] = [
    "lava-1234",
    "lava-1234/bin",
    "lava-1234/bin/lava-test-runner",
    "lava-1234/runner",
    "usr/lib/modules",
    "usr/lib/modules/6.1.0",
    "usr/lib/modules/6.1.0/kernel",
    "usr/lib/modules/6.1.0/kernel/drivers",
    "usr/lib/modules/6.1.0/kernel/drivers/x.ko",
    "usr/lib/modules/6.1.0/modules.dep",
];

/// Whether `rebuilt` starts with every byte of `original` (the compressed stream is kept).
fn gz_bytes_kept(original: &[u8], rebuilt: &[u8]) -> bool {
    rebuilt.len() > original.len() && &rebuilt[..original.len()] == original
}

/// Offset of the trailer entry of the last archive in uncompressed cpio data.
fn last_trailer(cpio: &[u8]) -> usize {
    let at = cpio
        .windows(10)
        .rposition(|w| w == b"TRAILER!!!")
        .expect("a trailer");
    at - 110
}

fn find<'a>(members: &'a [Member], name: &str) -> &'a Member {
    members
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn check_additions(members: &[Member], original: &[Member]) {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let n = original.len();
    assert_eq!(
        &members[..n],
        original,
        "original entries unchanged and first"
    );
    assert_eq!(&names[n..], &NEW_NAMES, "new entries, in order");
    for m in &members[n..] {
        assert_eq!((m.header.uid, m.header.gid), (0, 0), "{} root:root", m.name);
    }
    let runner = find(members, "lava-1234/bin/lava-test-runner");
    assert_eq!(runner.header.mode, S_IFREG | 0o750);
    assert_eq!(runner.data, b"run\n");
    let link = find(members, "lava-1234/runner");
    assert_eq!(link.header.mode & S_IFMT, S_IFLNK);
    assert_eq!(link.data, b"bin/lava-test-runner");
    let ko = find(members, "usr/lib/modules/6.1.0/kernel/drivers/x.ko");
    assert_eq!(ko.header.mode, S_IFREG | 0o600);
    assert_eq!(ko.data, b"ko");
    assert_eq!(
        find(members, "usr/lib/modules").header.mode & S_IFMT,
        S_IFDIR
    );
    // No new `lib` directory entry that would replace the symlink at boot.
    assert_eq!(
        names
            .iter()
            .filter(|n| n.trim_start_matches("./") == "lib")
            .count(),
        1
    );
    // New inode numbers do not reuse the original ones.
    let max = original.iter().map(|m| m.header.ino).max().unwrap();
    assert!(members[n..].iter().all(|m| m.header.ino > max));
}

#[test]
fn uboot_gz_ramdisk_gets_overlay_and_modules() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    initramfs_tree(&tree);
    let cpio = gnu_cpio(&tree);
    let gz = compress(&cpio, Some(Compression::Gz), t.path());
    let gz_file = t.path().join("ramdisk.cpio.gz");
    std::fs::write(&gz_file, &gz).unwrap();
    let input = t.path().join("ramdisk.cpio.gz.uboot");
    sh(&format!(
        "mkimage -A arm -T ramdisk -C gzip -n 'initramfs' -d {} {} > /dev/null",
        gz_file.display(),
        input.display()
    ));
    let (overlay, modules) = additions(t.path());
    let spec = RamdiskSpec {
        strip_uboot_header: true,
        add_uboot_header: Some("arm64".into()),
        compression: Some(Compression::Gz),
        add: vec![overlay, modules],
    };
    let output = t.path().join("out").join("ramdisk.cpio.gz.uboot");
    std::fs::create_dir(output.parent().unwrap()).unwrap();
    rebuild_ramdisk(&input, &spec, &output).unwrap();
    let result = std::fs::read(&output).unwrap();
    let mode = std::fs::metadata(&output).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);

    // The header is the one mkimage writes for the payload (with its time).
    let listing = String::from_utf8(sh(&format!("dumpimage -l {}", output.display()))).unwrap();
    assert!(
        listing.contains("RAMDisk Image (uncompressed)"),
        "{listing}"
    );
    assert!(listing.contains("AArch64"), "{listing}");
    assert!(listing.contains("Linux"), "{listing}");
    let payload = &result[64..];
    assert_eq!(detect(payload), Some(Compression::Gz));
    let payload_file = t.path().join("payload");
    std::fs::write(&payload_file, payload).unwrap();
    let time = u32::from_be_bytes(result[8..12].try_into().unwrap());
    let theirs = t.path().join("theirs");
    sh(&format!(
        "SOURCE_DATE_EPOCH={time} mkimage -A arm64 -T ramdisk -C none -d {} {} > /dev/null",
        payload_file.display(),
        theirs.display()
    ));
    assert_eq!(&result[..64], &std::fs::read(&theirs).unwrap()[..64]);

    // GNU cpio reads it; the original archive comes first, unchanged, then the additions.
    let new_cpio = decompress_with_tool(payload, Some(Compression::Gz), t.path());
    assert_eq!(&new_cpio[..cpio.len()], &cpio[..]);
    assert!(gz_bytes_kept(&std::fs::read(&gz_file).unwrap(), payload));
    assert_eq!(new_cpio.len() % 512, 0);
    let listed = cpio_list(&new_cpio, t.path());
    let original_listed = cpio_list(&cpio, t.path());
    assert_eq!(&listed[..original_listed.len()], &original_listed[..]);
    assert_eq!(&listed[original_listed.len()..], &NEW_NAMES);
    let added = t.path().join("added.cpio");
    std::fs::write(&added, &new_cpio[cpio.len()..]).unwrap();
    let verbose = String::from_utf8(sh(&format!(
        "cpio -tv --quiet --numeric-uid-gid < {} | grep lava-test-runner",
        added.display()
    )))
    .unwrap();
    assert!(
        verbose.starts_with("-rwxr-x---   1 0        0"),
        "{verbose}"
    );

    // And so does labboot's reader, header and all.
    let original = read_ramdisk(&gz_file, false).unwrap();
    let members = read_ramdisk(&output, true).unwrap();
    check_additions(&members, &original);
    if is_root() {
        let console = find(&members, "dev/console");
        assert_eq!((console.header.rdevmajor, console.header.rdevminor), (5, 1));
    }
}

#[test]
fn every_compression_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    initramfs_tree(&tree);
    let cpio = gnu_cpio(&tree);
    let original_listed = cpio_list(&cpio, t.path());
    let (overlay, modules) = additions(t.path());
    for c in [
        None,
        Some(Compression::Gz),
        Some(Compression::Xz),
        Some(Compression::Zstd),
        Some(Compression::Bz2),
    ] {
        let input = t.path().join("ramdisk");
        std::fs::write(&input, compress(&cpio, c, t.path())).unwrap();
        let output = t.path().join("ramdisk.new");
        let spec = RamdiskSpec {
            compression: c,
            add: vec![overlay.clone(), modules.clone()],
            ..RamdiskSpec::default()
        };
        rebuild_ramdisk(&input, &spec, &output).unwrap();
        let result = std::fs::read(&output).unwrap();
        assert_eq!(detect(&result), c, "{c:?}");
        let new_cpio = decompress_with_tool(&result, c, t.path());
        let listed = cpio_list(&new_cpio, t.path());
        assert_eq!(
            &listed[..original_listed.len()],
            &original_listed[..],
            "{c:?}"
        );
        assert_eq!(&listed[original_listed.len()..], &NEW_NAMES, "{c:?}");
        let original = read_ramdisk(&input, false).unwrap();
        check_additions(&read_ramdisk(&output, false).unwrap(), &original);
        if c == Some(Compression::Xz) {
            // The kernel's xz decoder needs CRC32 (or no) checks.
            let info =
                String::from_utf8(sh(&format!("xz --robot -lv {}", output.display()))).unwrap();
            assert!(info.contains("CRC32"), "{info}");
        }
        if c.is_none() {
            assert_eq!(&result[..last_trailer(&cpio)], &cpio[..last_trailer(&cpio)]);
        }
    }
}

#[test]
fn nothing_to_add_still_gives_a_valid_ramdisk() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    initramfs_tree(&tree);
    let cpio = gnu_cpio(&tree);
    let input = t.path().join("in.cpio");
    std::fs::write(&input, &cpio).unwrap();
    let output = t.path().join("out.cpio");
    rebuild_ramdisk(&input, &RamdiskSpec::default(), &output).unwrap();
    let result = std::fs::read(&output).unwrap();
    assert_eq!(cpio_list(&result, t.path()), cpio_list(&cpio, t.path()));
    assert_eq!(
        read_ramdisk(&output, false).unwrap(),
        read_ramdisk(&input, false).unwrap()
    );
}

#[test]
fn multi_part_initramfs_keeps_its_early_cpio() {
    let t = tempfile::tempdir().unwrap();
    let early_tree = t.path().join("early");
    sh(&format!(
        "mkdir -p {e}/kernel/x86/microcode && echo ucode > {e}/kernel/x86/microcode/GenuineIntel.bin",
        e = early_tree.display()
    ));
    let early = gnu_cpio(&early_tree);
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    initramfs_tree(&tree);
    let main = gnu_cpio(&tree);
    let mut input_bytes = early.clone();
    input_bytes.extend(compress(&main, Some(Compression::Zstd), t.path()));
    let input = t.path().join("initrd.img");
    std::fs::write(&input, &input_bytes).unwrap();
    let (overlay, modules) = additions(t.path());
    let output = t.path().join("initrd.new");
    let spec = RamdiskSpec {
        compression: Some(Compression::Zstd),
        add: vec![overlay, modules],
        ..RamdiskSpec::default()
    };
    rebuild_ramdisk(&input, &spec, &output).unwrap();
    let result = std::fs::read(&output).unwrap();
    assert_eq!(
        &result[..early.len()],
        &early[..],
        "the early cpio is kept byte for byte"
    );
    let rest = &result[early.len()..];
    assert_eq!(detect(rest), Some(Compression::Zstd));
    let new_main = decompress_with_tool(rest, Some(Compression::Zstd), t.path());
    let listed = cpio_list(&new_main, t.path());
    assert_eq!(&listed[listed.len() - NEW_NAMES.len()..], &NEW_NAMES);
    let original = read_ramdisk(&input, false).unwrap();
    let members = read_ramdisk(&output, false).unwrap();
    check_additions(&members, &original);
    assert!(members[0].name.contains("kernel") || members[1].name.contains("kernel"));
}

#[test]
fn absolute_symlinks_of_the_ramdisk_are_followed_inside_it() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    sh(&format!(
        "mkdir -p {d}/usr/lib && ln -s /usr/lib {d}/lib",
        d = tree.display()
    ));
    let input = t.path().join("in.cpio");
    std::fs::write(&input, gnu_cpio(&tree)).unwrap();
    let (_, modules) = additions(t.path());
    let output = t.path().join("out.cpio");
    let spec = RamdiskSpec {
        add: vec![modules],
        ..RamdiskSpec::default()
    };
    rebuild_ramdisk(&input, &spec, &output).unwrap();
    let names: Vec<String> = read_ramdisk(&output, false)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(
        names.contains(&"usr/lib/modules/6.1.0/modules.dep".to_string()),
        "{names:?}"
    );
}

fn expect_job_error(input: &Path, spec: &RamdiskSpec, needle: &str) {
    let output = input.with_extension("out");
    let e = rebuild_ramdisk(input, spec, &output).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError, "{}", e.message);
    assert!(
        e.message.contains(needle),
        "{needle:?} not in {:?}",
        e.message
    );
    assert!(
        e.message.contains(&input.display().to_string()),
        "{}",
        e.message
    );
    assert!(!output.exists());
    let leftovers: Vec<_> = std::fs::read_dir(input.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_ramdisks_are_job_errors() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    initramfs_tree(&tree);
    let cpio = gnu_cpio(&tree);
    let gz = compress(&cpio, Some(Compression::Gz), t.path());
    let dir = t.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    let gz_file = dir.join("r.gz");
    std::fs::write(&gz_file, &gz).unwrap();
    let uboot = dir.join("r.uboot");
    sh(&format!(
        "mkimage -A arm -T ramdisk -C none -d {} {} > /dev/null",
        gz_file.display(),
        uboot.display()
    ));
    let with_header = RamdiskSpec {
        strip_uboot_header: true,
        ..RamdiskSpec::default()
    };

    // A header the job does not mention.
    expect_job_error(&uboot, &RamdiskSpec::default(), "header: u-boot");
    // No header where the job says there is one.
    expect_job_error(&gz_file, &with_header, "magic");
    // A corrupt header, corrupt data (reported as a CRC error, not as bad gzip).
    let mut bytes = std::fs::read(&uboot).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&uboot, &bytes).unwrap();
    expect_job_error(&uboot, &with_header, "header CRC");
    bytes[40] ^= 1;
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&uboot, &bytes).unwrap();
    expect_job_error(&uboot, &with_header, "data CRC");
    // Truncated image.
    bytes[n / 2] ^= 0xff;
    std::fs::write(&uboot, &bytes[..n - 10]).unwrap();
    expect_job_error(&uboot, &with_header, "announces");

    // Corrupt and truncated compressed data.
    let bad = dir.join("r2.gz");
    std::fs::write(&bad, &gz[..gz.len() / 2]).unwrap();
    expect_job_error(&bad, &RamdiskSpec::default(), "corrupt");
    // Not a ramdisk at all, and an lz4 one.
    std::fs::write(&bad, b"just some text, long enough to look at").unwrap();
    expect_job_error(&bad, &RamdiskSpec::default(), "neither a cpio archive nor");
    std::fs::write(&bad, [0x02, 0x21, 0x4c, 0x18, 0, 0, 0, 0]).unwrap();
    expect_job_error(&bad, &RamdiskSpec::default(), "lz4");
    // A cpio archive cut in the middle of an entry.
    std::fs::write(&bad, &cpio[..300]).unwrap();
    expect_job_error(&bad, &RamdiskSpec::default(), "ends inside");

    // An unknown mkimage architecture is the device's fault.
    let spec = RamdiskSpec {
        add_uboot_header: Some("sparc".into()),
        ..RamdiskSpec::default()
    };
    let e = rebuild_ramdisk(&gz_file, &spec, &dir.join("x")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConfigurationError);
}
