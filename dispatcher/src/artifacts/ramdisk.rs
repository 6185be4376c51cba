//! Adding the test overlay and kernel modules to a ramdisk without unpacking it.
//!
//! LAVA unpacks the ramdisk with `cpio --extract` under fakeroot, untars the overlay and the
//! modules into the tree and packs it again with `cpio --create`. labboot instead copies the
//! original archive byte for byte and appends new newc entries:
//! nothing is created on the host (no device nodes, no owners to fake), the original entries
//! keep their exact metadata, and the work is one streaming pass.
//!
//! A ramdisk may be several archives one after the other (an uncompressed early cpio with CPU
//! microcode or firmware, then the compressed main one, as mkinitramfs writes them); the
//! kernel unpacks them in order into the same root. Every byte of the original is kept as it
//! is: an uncompressed last archive gets the new entries before its trailer, a compressed one
//! is only decompressed to index its entries and is followed by a new archive with the new
//! entries, compressed in the kind the original was found in (its magic bytes decide, as in
//! LAVA; a different `compression` in the job only earns a warning). Nothing is compressed
//! again but the new files, which keeps a repack of a large ramdisk to milliseconds. A legacy U-Boot header (`header: u-boot`) is checked and
//! removed first, and a new one (mkimage's `-T ramdisk -C none`, no name, load and entry 0, as
//! LAVA's `mkimage` call writes) is put on the result when the device asks for it.
//!
//! New entries are owned by root:root, keep the host's modes and modification times, and are
//! placed as the kernel will see the tree: a directory that already exists in the ramdisk is
//! not emitted again (its mode and owner stay), and a path through a symlink of the ramdisk
//! (`lib -> usr/lib` on merged-/usr systems) is written to where the symlink leads, so the
//! kernel never replaces such a symlink by a directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::artifacts::cpio::{self, Header, RawEntry, S_IFDIR, S_IFLNK, S_IFMT};
use crate::artifacts::decompress;
use crate::artifacts::uimage::{self, HeaderSpec, ImageKind};
use crate::error::{Error, Result};
use crate::job::model::Compression;

/// How to rebuild a ramdisk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RamdiskSpec {
    /// The input starts with a legacy U-Boot header (the job's `header: u-boot`): check its
    /// CRCs and drop it.
    pub strip_uboot_header: bool,
    /// Put a legacy U-Boot ramdisk header on the result, for this mkimage architecture
    /// (`arm`, `arm64`, …; the device's `add_header: u-boot` with `mkimage_arch`).
    pub add_uboot_header: Option<String>,
    /// The job's `compression` of the ramdisk (the data's own magic bytes win).
    pub compression: Option<Compression>,
    /// Host directories whose contents are added at the ramdisk's root, in order (the test
    /// overlay, an unpacked modules tree).
    pub add: Vec<PathBuf>,
}

/// One entry of a ramdisk, as [`read_ramdisk`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name as stored.
    pub name: String,
    /// Its newc header.
    pub header: Header,
    /// Its data (a symlink's target, a file's contents).
    pub data: Vec<u8>,
}

/// Rebuilds `input` into `output` as `spec` says (see the module documentation).
pub fn rebuild_ramdisk(input: &Path, spec: &RamdiskSpec, output: &Path) -> Result<()> {
    let what = format!("ramdisk {}", input.display());
    let header_spec = match &spec.add_uboot_header {
        Some(arch) => Some(HeaderSpec {
            kind: ImageKind::Ramdisk,
            arch: uimage::parse_arch(arch)?,
            load: 0,
            entry: 0,
            name: String::new(),
            time: uimage::mkimage_time(),
        }),
        None => None,
    };
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out_err = |e: io::Error| Error::infra(format!("writing {}: {e}", output.display()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".ramdisk-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::infra(format!("creating a file in {}: {e}", dir.display())))?;

    {
        let mut sink = CrcWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file_mut()));
        if header_spec.is_some() {
            sink.inner
                .write_all(&[0u8; uboot_scripts::image::header::HEADER_LEN])
                .map_err(out_err)?;
        }
        with_input(input, spec.strip_uboot_header, &what, |raw| {
            let mut state = Rebuild {
                what: &what,
                index: Index::default(),
                next_ino: 0,
                add: &spec.add,
            };
            let found = state.run(raw, &mut sink, output)?;
            if spec.compression.is_some() && found != spec.compression {
                let name = |c: Option<Compression>| c.map_or("uncompressed", |c| c.as_str());
                tracing::warn!(
                    "{what}: the job says {} but the data is {}; it is written back {}",
                    name(spec.compression),
                    name(found),
                    name(found)
                );
            }
            Ok(())
        })?;
        let (size, crc) = (sink.count, sink.crc.sum());
        let file = sink
            .inner
            .into_inner()
            .map_err(|e| out_err(e.into_error()))?;
        if let Some(h) = header_spec {
            let h = uimage::header(&h, size, crc).map_err(|e| e.context(&what))?;
            file.seek(SeekFrom::Start(0)).map_err(out_err)?;
            file.write_all(&h.to_bytes()).map_err(out_err)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(out_err)?;
    }
    tmp.persist(output).map_err(|e| out_err(e.error))?;
    Ok(())
}

/// Every entry of a ramdisk, in order, across all its archives (for checks and listings).
pub fn read_ramdisk(input: &Path, uboot_header: bool) -> Result<Vec<Member>> {
    let what = format!("ramdisk {}", input.display());
    let mut members = Vec::new();
    with_input(input, uboot_header, &what, |raw| {
        let mut src = Src::new(raw);
        src.keep_data = true;
        let mut seen = |e: &RawEntry, data: &[u8]| {
            members.push(Member {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                header: e.header.clone(),
                data: data.to_vec(),
            });
        };
        if let Stop::End = scan(&mut src, &mut io::sink(), &what, &mut seen)? {
            return Ok(());
        }
        let c = compression_at(&mut src, &what)?;
        let mut inner = Src::new(decompress::reader(&mut src, Some(c)));
        inner.keep_data = true;
        if let Stop::Foreign(_) = scan(&mut inner, &mut io::sink(), &what, &mut seen)? {
            return Err(Error::job(format!(
                "{what}: data that is not cpio inside the {} stream",
                c.as_str()
            )));
        }
        Ok(())
    })?;
    Ok(members)
}

/// Opens `input`, strips and checks a U-Boot header if `uboot_header`, and runs `f` on the
/// data. A data CRC mismatch is reported in preference to whatever `f` made of the data.
fn with_input(
    input: &Path,
    uboot_header: bool,
    what: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut file = File::open(input).map_err(|e| Error::infra(format!("{what}: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| Error::infra(format!("{what}: {e}")))?
        .len();
    if !uboot_header {
        let mut head = [0u8; 4];
        let n = read_full(&mut file, &mut head).map_err(|e| input_error(what, e))?;
        if n == 4 && u32::from_be_bytes(head) == uboot_scripts::image::header::MAGIC {
            return Err(Error::job(format!(
                "{what} starts with a U-Boot image header; the job must say `header: u-boot`"
            )));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::infra(format!("{what}: {e}")))?;
        return f(&mut BufReader::with_capacity(1 << 20, file));
    }
    let mut head = [0u8; uboot_scripts::image::header::HEADER_LEN];
    let n = read_full(&mut file, &mut head).map_err(|e| input_error(what, e))?;
    let h = uimage::parse_header(&head[..n], what)?;
    let size = u64::from(h.data_size);
    let available = len.saturating_sub(head.len() as u64);
    if available < size {
        return Err(Error::job(format!(
            "{what}: the U-Boot header announces {size} bytes of data, the file has {available}"
        )));
    }
    if available > size {
        tracing::debug!(
            "{what}: {} bytes after the image data ignored",
            available - size
        );
    }
    let mut data = CrcReader::new(BufReader::with_capacity(1 << 20, file).take(size));
    let result = f(&mut data);
    io::copy(&mut data, &mut io::sink()).map_err(|e| input_error(what, e))?;
    let crc = data.crc.sum();
    if crc != h.data_crc {
        return Err(Error::job(format!(
            "{what}: U-Boot image data CRC is {crc:#010x}, the header says {:#010x}",
            h.data_crc
        )));
    }
    result
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An error reading the ramdisk: the host's (infrastructure) if the OS reported it, else the
/// data's (a corrupt archive or compressed stream: the job's).
fn input_error(what: &str, e: io::Error) -> Error {
    if e.raw_os_error().is_some() {
        Error::infra(format!("reading {what}: {e}"))
    } else {
        Error::job(format!("{what} is corrupt: {e}"))
    }
}

/// The compression whose magic bytes are next in `src`, or a JobError.
fn compression_at<R: Read>(src: &mut Src<R>, what: &str) -> Result<Compression> {
    let offset = src.pos;
    let head = src.peek(8).map_err(|e| input_error(what, e))?.to_vec();
    decompress::detect(&head).ok_or_else(|| {
        let known = match head.as_slice() {
            [0x5d, 0, 0, ..] => " (lzma, which labboot does not handle)",
            [0x02, 0x21, 0x4c, 0x18, ..] => " (lz4, which labboot does not handle)",
            [0x89, b'L', b'Z', b'O', ..] => " (lzo, which labboot does not handle)",
            _ => "",
        };
        Error::job(format!(
            "{what}: data at offset {offset} is neither a cpio archive nor gz, xz, zstd or \
             bz2 compressed{known} (starts with {})",
            hex(&head)
        ))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The state of one rebuild.
struct Rebuild<'a> {
    what: &'a str,
    index: Index,
    next_ino: u32,
    add: &'a [PathBuf],
}

impl Rebuild<'_> {
    /// Copies the data, appending the new entries to its last archive. Returns the compression
    /// of that archive.
    fn run(
        &mut self,
        raw: &mut dyn Read,
        sink: &mut dyn Write,
        output: &Path,
    ) -> Result<Option<Compression>> {
        let what = self.what;
        let out_err = |e: io::Error| Error::infra(format!("writing {}: {e}", output.display()));
        let mut src = Src::new(raw);
        let mut out = Counter::new(sink);
        let held = match self.scan_into(&mut src, &mut out)? {
            Stop::End => {
                self.append(&mut out)?;
                return Ok(None);
            }
            Stop::Foreign(held) => held,
        };
        out.write_all(&held).map_err(out_err)?;
        let c = compression_at(&mut src, what)?;
        // The last archive's bytes are kept as they are (the tee copies everything its decoder
        // reads) and its entries only indexed; the new entries follow as an archive of their
        // own, compressed the same way. The kernel unpacks concatenated archives in order, so
        // nothing is decompressed into the output or compressed again but the new files.
        {
            let mut tee = Tee {
                src: &mut src,
                out: &mut out,
            };
            let mut inner = Src::new(decompress::reader(&mut tee, Some(c)));
            if let Stop::Foreign(_) = self.scan_into(&mut inner, &mut io::sink())? {
                return Err(Error::job(format!(
                    "{what}: data at offset {} of the {} stream is not cpio",
                    inner.pos,
                    c.as_str()
                )));
            }
        }
        // What the decoder did not read (the end of its stream, padding) stays too.
        loop {
            let chunk = src.peek(1 << 16).map_err(|e| input_error(what, e))?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            out.write_all(chunk).map_err(out_err)?;
            src.consume(n);
        }
        let encoder = decompress::writer(&mut out, Some(c)).map_err(out_err)?;
        let mut enc = Counter::new(encoder);
        self.append(&mut enc)?;
        enc.inner.finish().map_err(out_err)?;
        Ok(Some(c))
    }

    /// [`scan`], recording every entry in the index.
    fn scan_into<R: Read>(&mut self, src: &mut Src<R>, out: &mut dyn Write) -> Result<Stop> {
        let (index, next_ino) = (&mut self.index, &mut self.next_ino);
        scan(src, out, self.what, &mut |e, data| {
            index.record(e, data);
            *next_ino = (*next_ino).max(e.header.ino.saturating_add(1));
        })
    }

    /// Appends the entries of every host directory, then a trailer.
    fn append(&mut self, out: &mut dyn WriteCount) -> Result<()> {
        for dir in self.add {
            self.add_tree(out, dir, &mut Vec::new())?;
        }
        let written = out.count();
        cpio::write_trailer(out, written)
            .map_err(|e| Error::infra(format!("writing the rebuilt {}: {e}", self.what)))?;
        Ok(())
    }

    /// Adds the contents of `root/rel` (recursively, sorted by name).
    fn add_tree(
        &mut self,
        out: &mut dyn WriteCount,
        root: &Path,
        rel: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let here = rel
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(OsStr::from_bytes(c)));
        let host_err = |p: &Path, e: io::Error| Error::infra(format!("{}: {e}", p.display()));
        let mut names: Vec<_> = std::fs::read_dir(&here)
            .map_err(|e| host_err(&here, e))?
            .map(|d| d.map(|d| d.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| host_err(&here, e))?;
        names.sort();
        for name in names {
            let path = here.join(&name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| host_err(&path, e))?;
            let ft = meta.file_type();
            if ft.is_socket() {
                tracing::debug!("{}: a socket, not added to the ramdisk", path.display());
                continue;
            }
            let mut target = self.index.resolve(rel, self.what)?;
            target.push(name.as_bytes().to_vec());
            if ft.is_dir() {
                if let Some(Node::Link(_)) = self.index.get(&target) {
                    target = self.index.resolve(&target, self.what)?;
                }
                if self.index.get(&target) != Some(&Node::Dir) {
                    self.emit(out, &path, &meta, &target, 0, &mut io::empty())?;
                    self.index.insert(&target, Node::Dir);
                }
                rel.push(name.as_bytes().to_vec());
                let r = self.add_tree(out, root, rel);
                rel.pop();
                r?;
            } else if ft.is_symlink() {
                let link = std::fs::read_link(&path).map_err(|e| host_err(&path, e))?;
                let link = link.as_os_str().as_bytes().to_vec();
                let size = link.len() as u64;
                self.emit(out, &path, &meta, &target, size, &mut &link[..])?;
                self.index.insert(&target, Node::Link(link));
            } else if ft.is_file() {
                let mut f = File::open(&path).map_err(|e| host_err(&path, e))?;
                self.emit(out, &path, &meta, &target, meta.len(), &mut f)?;
                self.index.insert(&target, Node::Other);
            } else {
                self.emit(out, &path, &meta, &target, 0, &mut io::empty())?;
                self.index.insert(&target, Node::Other);
            }
        }
        Ok(())
    }

    /// Writes one entry for host file `path` under the archive name `name`, with `size` bytes
    /// of `data`.
    fn emit(
        &mut self,
        out: &mut dyn WriteCount,
        path: &Path,
        meta: &std::fs::Metadata,
        name: &[Vec<u8>],
        size: u64,
        data: &mut dyn Read,
    ) -> Result<()> {
        let filesize = u32::try_from(size).map_err(|_| {
            Error::job(format!(
                "{}: {size} bytes do not fit a cpio newc entry (at most 4 GiB)",
                path.display()
            ))
        })?;
        let rdev = meta.rdev() as libc::dev_t;
        let header = Header {
            ino: self.next_ino,
            mode: meta.mode() & (S_IFMT | 0o7777),
            uid: 0,
            gid: 0,
            nlink: if meta.is_dir() { 2 } else { 1 },
            mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
            filesize,
            devmajor: 0,
            devminor: 0,
            rdevmajor: libc::major(rdev),
            rdevminor: libc::minor(rdev),
            namesize: 0,
            check: 0,
        };
        self.next_ino = self.next_ino.wrapping_add(1).max(1);
        cpio::write_entry(out, &header, &name.join(&b'/'), data)
            .map(|_| ())
            .map_err(|e| {
                Error::infra(format!(
                    "adding {} to the {}: {e}",
                    path.display(),
                    self.what
                ))
            })
    }
}

/// A writer that knows how many bytes it took (for the 512-byte padding of the trailer).
trait WriteCount: Write {
    /// Bytes written so far.
    fn count(&self) -> u64;
}

impl<W: Write> WriteCount for Counter<W> {
    fn count(&self) -> u64 {
        self.count
    }
}

/// What the archive holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    Link(Vec<u8>),
    Other,
}

/// The paths of the archive so far (normalised: no `.`, no empty components), for placing
/// new entries as the kernel will see them.
#[derive(Default)]
struct Index {
    nodes: HashMap<Vec<u8>, Node>,
}

/// The components of an archive name or link target, `.` and empty ones dropped.
fn components(name: &[u8]) -> Vec<Vec<u8>> {
    name.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

impl Index {
    /// Records an entry of the original archive (`data`: a symlink's target).
    fn record(&mut self, e: &RawEntry, data: &[u8]) {
        let node = match e.header.kind() {
            S_IFDIR => Node::Dir,
            S_IFLNK => Node::Link(data.to_vec()),
            _ => Node::Other,
        };
        self.insert(&components(&e.name), node);
    }

    fn insert(&mut self, path: &[Vec<u8>], node: Node) {
        if !path.is_empty() {
            self.nodes.insert(path.join(&b'/'), node);
        }
    }

    fn get(&self, path: &[Vec<u8>]) -> Option<&Node> {
        if path.is_empty() {
            return Some(&Node::Dir);
        }
        self.nodes.get(&path.join(&b'/'))
    }

    /// `path` with every symlink among its components followed inside the archive (absolute
    /// targets from the archive's root, `..` stopping at the root).
    fn resolve(&self, path: &[Vec<u8>], what: &str) -> Result<Vec<Vec<u8>>> {
        let mut todo: Vec<Vec<u8>> = path.iter().rev().cloned().collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            if let Some(Node::Link(target)) = self.get(&cur) {
                hops += 1;
                if hops > 40 {
                    return Err(Error::job(format!(
                        "{what}: too many levels of symbolic links at {}",
                        String::from_utf8_lossy(&cur.join(&b'/'))
                    )));
                }
                let target = target.clone();
                cur.pop();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                todo.extend(components(&target).into_iter().rev());
            }
        }
        Ok(cur)
    }
}

/// Why [`scan`] stopped.
enum Stop {
    /// The end of the data (the held-back trailer and padding of the last archive dropped).
    End,
    /// Data that is not cpio after an archive (a compressed part); the held-back trailer and
    /// padding, to be written before it.
    Foreign(Vec<u8>),
}

/// Copies cpio archives from `src` to `out` verbatim, calling `seen` with each entry and its
/// data (symlink targets and, for listings, all data; for copies only symlinks are read into
/// memory) — except the trailer of the last archive and the zeros after it, which are held
/// back for the caller.
fn scan<R: Read>(
    src: &mut Src<R>,
    out: &mut dyn Write,
    what: &str,
    seen: &mut dyn FnMut(&RawEntry, &[u8]),
) -> Result<Stop> {
    let out_err = |e: io::Error| Error::infra(format!("writing the rebuilt {what}: {e}"));
    let in_err = |e: io::Error| input_error(what, e);
    let mut held: Vec<u8> = Vec::new();
    let mut between = true;
    loop {
        if between {
            loop {
                let buf = src.peek(4096).map_err(in_err)?;
                let zeros = buf.iter().take_while(|&&b| b == 0).count();
                if zeros == 0 {
                    break;
                }
                held.extend_from_slice(&buf[..zeros]);
                src.consume(zeros);
            }
        }
        let pos = src.pos;
        let head = src.peek(6).map_err(in_err)?;
        if head.is_empty() {
            return Ok(Stop::End);
        }
        let is_cpio = head.len() == 6 && (head == cpio::NEWC_MAGIC || head == cpio::CRC_MAGIC);
        if !is_cpio || !pos.is_multiple_of(4) {
            if between {
                return Ok(Stop::Foreign(held));
            }
            return Err(Error::job(format!(
                "{what}: no cpio header at offset {pos} where the next entry should start"
            )));
        }
        if !held.is_empty() {
            out.write_all(&held).map_err(out_err)?;
            held.clear();
        }
        let entry = cpio::read_entry_head(src, pos).map_err(in_err)?;
        let size = u64::from(entry.header.filesize);
        let padding = cpio::pad(size, 4);
        if entry.is_trailer() {
            held.extend_from_slice(&entry.raw);
            let mut rest = Vec::new();
            let n = (&mut *src)
                .take(size + padding as u64)
                .read_to_end(&mut rest)
                .map_err(in_err)?;
            if n as u64 != size + padding as u64 {
                return Err(truncated(what, &entry));
            }
            held.extend_from_slice(&rest);
            between = true;
            continue;
        }
        out.write_all(&entry.raw).map_err(out_err)?;
        let keep = entry.header.kind() == S_IFLNK && size <= cpio::MAX_NAME as u64;
        let mut data = Vec::new();
        if keep || src.keep_data {
            (&mut *src)
                .take(size)
                .read_to_end(&mut data)
                .map_err(in_err)?;
            if data.len() as u64 != size {
                return Err(truncated(what, &entry));
            }
            out.write_all(&data).map_err(out_err)?;
        } else {
            let n =
                io::copy(&mut (&mut *src).take(size), &mut WriteOnly(&mut *out)).map_err(|e| {
                    match e.get_ref().map(|i| i.is::<OutputError>()) {
                        Some(true) => out_err(e),
                        _ => in_err(e),
                    }
                })?;
            if n != size {
                return Err(truncated(what, &entry));
            }
        }
        let mut pad_bytes = [0u8; 4];
        src.read_exact(&mut pad_bytes[..padding])
            .map_err(|_| truncated(what, &entry))?;
        out.write_all(&pad_bytes[..padding]).map_err(out_err)?;
        seen(&entry, &data);
        between = false;
    }
}

fn truncated(what: &str, e: &RawEntry) -> Error {
    Error::job(format!(
        "{what}: the archive ends inside the data of {}",
        String::from_utf8_lossy(&e.name)
    ))
}

/// Marks errors of the output side inside `io::copy`.
#[derive(Debug)]
struct OutputError(io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for OutputError {}

struct WriteOnly<'a>(&'a mut dyn Write);

impl Write for WriteOnly<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| io::Error::new(e.kind(), OutputError(e)))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A reader with look-ahead and a count of the bytes consumed.
struct Src<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    pos: u64,
    keep_data: bool,
}

impl<R: Read> Src<R> {
    fn new(inner: R) -> Self {
        Src {
            inner,
            buf: Vec::new(),
            start: 0,
            pos: 0,
            keep_data: false,
        }
    }

    /// Up to `n` bytes ahead without consuming them (fewer only at the end).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.buf.len() - self.start < n {
            self.buf.drain(..self.start);
            self.start = 0;
            let mut chunk = [0u8; 8192];
            while self.buf.len() < n {
                let got = match self.inner.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.buf.extend_from_slice(&chunk[..got]);
            }
        }
        let end = (self.start + n).min(self.buf.len());
        Ok(&self.buf[self.start..end])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }
}

impl<R: Read> Read for Src<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buffered = self.buf.len() - self.start;
        let n = if buffered > 0 {
            let n = buffered.min(out.len());
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            n
        } else {
            self.inner.read(out)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Counts the bytes written through it.
/// Copies to `out` every byte read from `src`.
struct Tee<'a, R, W> {
    src: &'a mut R,
    out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

struct Counter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Counter<W> {
    fn new(inner: W) -> Self {
        Counter { inner, count: 0 }
    }
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and CRCs the bytes written through it (the data of a U-Boot image).
struct CrcWriter<W> {
    inner: W,
    crc: flate2::Crc,
    count: u64,
}

impl<W> CrcWriter<W> {
    fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: flate2::Crc::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// CRCs the bytes read through it.
struct CrcReader<R> {
    inner: R,
    crc: flate2::Crc,
}

impl<R> CrcReader<R> {
    fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: flate2::Crc::new(),
        }
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}
