//! Streaming (de)compression for the four kinds a job can name: gz, xz, zstd, bz2.
//!
//! Downloads are decompressed once they are checked, rootfs tarballs while they are unpacked,
//! and ramdisks are decompressed, extended and compressed again in the kind they came in, so
//! both directions stream and never hold a whole file in memory.
//!
//! Readers accept what the command-line tools accept: several gzip members, xz streams, bzip2
//! streams or zstd frames (skippable frames included) one after the other. Writers produce what
//! LAVA's tools produce where the kernel cares: xz with a CRC32 check (the kernel's xz decoder
//! knows no CRC64 or SHA-256), gzip and bzip2 at their tools' default levels, and zstd at
//! ruzstd's "fastest" level (about zstd -1), the only level ruzstd 0.8 implements besides
//! storing. ruzstd's encoder pulls its input from a reader and unwraps I/O errors, so the zstd
//! writer spools its input to an unnamed temporary file and compresses it on `finish`, through
//! wrappers that never report an error to ruzstd (they keep it and `finish` returns it).

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::job::model::Compression;

/// The magic bytes that start a gzip member.
const GZ_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The magic bytes that start an xz stream.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// The magic bytes that start a bzip2 stream.
const BZ2_MAGIC: &[u8] = b"BZh";
/// The magic bytes that start a zstd frame.
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The compression whose magic bytes `head` starts with, if any of the four.
pub fn detect(head: &[u8]) -> Option<Compression> {
    if head.starts_with(GZ_MAGIC) {
        Some(Compression::Gz)
    } else if head.starts_with(XZ_MAGIC) {
        Some(Compression::Xz)
    } else if head.starts_with(ZSTD_MAGIC) {
        Some(Compression::Zstd)
    } else if head.starts_with(BZ2_MAGIC) {
        Some(Compression::Bz2)
    } else {
        None
    }
}

/// The file-name suffixes (without the dot) that mean `compression`, the usual one first.
pub fn suffixes(compression: Compression) -> &'static [&'static str] {
    match compression {
        Compression::Gz => &["gz", "gzip", "tgz"],
        Compression::Xz => &["xz", "txz"],
        Compression::Zstd => &["zst", "zstd", "tzst"],
        Compression::Bz2 => &["bz2", "bzip2", "tbz2"],
    }
}

/// A reader giving the decompressed bytes of `r` (`None`: `r` as it is).
pub fn reader<'a>(r: impl Read + 'a, compression: Option<Compression>) -> Box<dyn Read + 'a> {
    match compression {
        None => Box::new(r),
        Some(Compression::Gz) => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Some(Compression::Xz) => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Some(Compression::Bz2) => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Some(Compression::Zstd) => Box::new(ZstdReader::new(r)),
    }
}

/// A compressing writer; `finish` writes the end of the stream and must be called.
pub trait Encoder: Write {
    /// Writes everything still buffered and the end of the stream.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// A writer compressing into `w` (`None`: writing to `w` as it is).
pub fn writer<'a>(
    w: impl Write + 'a,
    compression: Option<Compression>,
) -> io::Result<Box<dyn Encoder + 'a>> {
    Ok(match compression {
        None => Box::new(Plain(w)),
        Some(Compression::Gz) => Box::new(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::default(),
        )),
        Some(Compression::Xz) => {
            let stream =
                liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
            Box::new(liblzma::write::XzEncoder::new_stream(w, stream))
        }
        Some(Compression::Bz2) => {
            Box::new(bzip2::write::BzEncoder::new(w, bzip2::Compression::best()))
        }
        Some(Compression::Zstd) => Box::new(ZstdWriter {
            spool: tempfile::tempfile()?,
            out: w,
        }),
    })
}

/// Copies `r` to `w` through a 256 KiB buffer, returning the bytes copied.
pub fn copy(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// No compression: the writer itself.
struct Plain<W: Write>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Encoder for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Encoder for flate2::write::GzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = flate2::write::GzEncoder::finish(*self)?;
        w.flush()
    }
}

impl<W: Write> Encoder for liblzma::write::XzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = liblzma::write::XzEncoder::finish(*self)?;
        w.flush()
    }
}

impl<W: Write> Encoder for bzip2::write::BzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = bzip2::write::BzEncoder::finish(*self)?;
        w.flush()
    }
}

/// zstd: the input is spooled to a temporary file and compressed by `finish`.
struct ZstdWriter<W: Write> {
    spool: std::fs::File,
    out: W,
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Encoder for ZstdWriter<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let ZstdWriter { mut spool, mut out } = *self;
        spool.seek(SeekFrom::Start(0))?;
        let mut source = Keep::new(BufReader::with_capacity(1 << 20, spool));
        let mut drain = Keep::new(&mut out);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            ruzstd::encoding::compress(
                &mut source,
                &mut drain,
                ruzstd::encoding::CompressionLevel::Fastest,
            )
        }));
        if outcome.is_err() {
            return Err(io::Error::other("the zstd encoder (ruzstd) failed"));
        }
        if let Some(e) = source.error.take().or(drain.error.take()) {
            return Err(e);
        }
        out.flush()
    }
}

/// Wraps a reader or writer so it never returns an error: the first one is kept, reads then
/// end and writes are dropped.
struct Keep<T> {
    inner: T,
    error: Option<io::Error>,
}

impl<T> Keep<T> {
    fn new(inner: T) -> Self {
        Keep { inner, error: None }
    }
}

impl<T: Read> Read for Keep<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    return Ok(0);
                }
            }
        }
    }
}

impl<T: Write> Write for Keep<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            if let Err(e) = self.inner.write_all(buf) {
                self.error = Some(e);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none() {
            if let Err(e) = self.inner.flush() {
                self.error = Some(e);
            }
        }
        Ok(())
    }
}

/// Decodes every zstd frame of a stream in turn, skipping skippable frames.
struct ZstdReader<R: Read> {
    source: BufReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
    failed: bool,
}

impl<R: Read> ZstdReader<R> {
    fn new(r: R) -> Self {
        ZstdReader {
            source: BufReader::with_capacity(1 << 16, r),
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
            failed: false,
        }
    }

    /// Starts the next frame; `false` at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            let (decoder, source) = (&mut self.decoder, &mut self.source);
            let started = catch_unwind(AssertUnwindSafe(|| decoder.reset(&mut *source)))
                .map_err(|_| zstd_error("the decoder failed on a frame header"))?;
            match started {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(want), &mut io::sink())?;
                    if skipped != want {
                        return Err(zstd_error("a skippable frame is cut short"));
                    }
                }
                Err(e) => return Err(zstd_error(e)),
            }
        }
    }

    /// Reads from the current frame; 0 when it is done.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        let (decoder, source) = (&mut self.decoder, &mut self.source);
        catch_unwind(AssertUnwindSafe(|| {
            while decoder.can_collect() < buf.len() && !decoder.is_finished() {
                let wanted = buf.len() - decoder.can_collect();
                decoder
                    .decode_blocks(&mut *source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(zstd_error)?;
            }
            decoder.read(buf)
        }))
        .map_err(|_| zstd_error("the decoder failed inside a frame"))?
    }
}

fn zstd_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.failed {
                return Err(zstd_error("the stream is corrupt"));
            }
            if !self.in_frame {
                match self.next_frame() {
                    Ok(true) => self.in_frame = true,
                    Ok(false) => return Ok(0),
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                }
            }
            match self.read_frame(buf) {
                Ok(0) => self.in_frame = false,
                Ok(n) => return Ok(n),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }
}
