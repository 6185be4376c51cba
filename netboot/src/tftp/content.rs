//! What a read request serves: a file or bytes in memory, always with a known size.
//!
//! The size must be known up front because the `tsize` option reports it and because the
//! transfer state machine decides from it which block is the last one. File reads happen on the
//! transfer's own thread ([`BlockReader`]), so a slow disk never stalls the runtime, and read
//! ahead in runs of blocks, so a block rarely costs a system call of its own; what a transfer
//! holds in memory is bounded by its window and by [`READ_AHEAD`], not by the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Most file bytes one transfer holds in memory (whole blocks, and at least one block): the
/// longest read ahead. 64 KiB is one UDP GSO send at blksize 1468 (44 blocks), so a window leaves
/// as one `pread` and one `sendmsg` per 44 blocks.
pub const READ_AHEAD: usize = 64 * 1024;

/// The largest content converted to netascii in memory.
pub const NETASCII_LIMIT: u64 = 64 * 1024 * 1024;

/// The body of a file to send: a regular file or bytes generated for this request.
#[derive(Debug, Clone)]
pub struct Content {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    File { file: Arc<File>, len: u64 },
    Bytes(Arc<[u8]>),
}

impl Content {
    /// In-memory content, e.g. a boot script rendered for one board.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Content {
        Content {
            repr: Repr::Bytes(bytes.into()),
        }
    }

    /// An open regular file; its size is taken now.
    pub fn from_file(file: File) -> io::Result<Content> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Content {
            repr: Repr::File {
                file: Arc::new(file),
                len: meta.len(),
            },
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match &self.repr {
            Repr::File { len, .. } => *len,
            Repr::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether the content has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads everything into memory (blocking); used for netascii and tests.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        match &self.repr {
            Repr::Bytes(b) => Ok(b.to_vec()),
            Repr::File { file, len } => {
                let mut buf = vec![0; usize::try_from(*len).map_err(io::Error::other)?];
                file.read_exact_at(&mut buf, 0)?;
                Ok(buf)
            }
        }
    }

    /// The netascii form (LF → CR LF, CR → CR NUL), built in memory (blocking).
    ///
    /// Refused above [`NETASCII_LIMIT`]: netascii is for small text files, and converting on the
    /// fly would make block offsets depend on everything before them.
    pub fn to_netascii(&self) -> io::Result<Content> {
        if self.len() > NETASCII_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("netascii transfers are limited to {NETASCII_LIMIT} bytes"),
            ));
        }
        let raw = self.read_all()?;
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
        for b in raw {
            match b {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                b => out.push(b),
            }
        }
        Ok(Content::from_bytes(out))
    }
}

/// Hands out the payload of block `n` (1-based, absolute) of a content at a fixed block size.
///
/// Synchronous: it runs on the transfer's own thread (see [`super::sender`]), where one blocking
/// `pread` serves a run of blocks, and the sender hands whole runs of cached blocks to one send.
///
/// Memory: the read ahead starts at one window (`window × blksize`) and doubles each time the
/// transfer reads on past it, up to [`READ_AHEAD`] (rounded down to whole blocks, at least one
/// block). A client that stalls after its first window therefore costs one window of buffer,
/// a fast one settles at [`READ_AHEAD`], and [`Self::release`] gives the buffer back while the
/// transfer waits.
#[derive(Debug)]
pub struct BlockReader {
    content: Content,
    blksize: usize,
    cache_start: u64,
    cache: Vec<u8>,
    /// The first read's size: one window, in whole blocks, within `max_ahead`.
    first_ahead: usize,
    /// Bytes the next read from disk asks for (whole blocks).
    ahead: usize,
    /// The ceiling of `ahead`: [`READ_AHEAD`] in whole blocks, at least one block.
    max_ahead: usize,
}

impl BlockReader {
    /// A reader over `content` cut into blocks of `blksize` bytes, for a transfer sending one
    /// block at a time (the read ahead starts at one block).
    pub fn new(content: Content, blksize: u16) -> BlockReader {
        BlockReader::with_window(content, blksize, 1)
    }

    /// A reader over `content` cut into blocks of `blksize` bytes, for a transfer sending
    /// `window` blocks at a time (the read ahead starts at one window).
    pub fn with_window(content: Content, blksize: u16, window: u16) -> BlockReader {
        let blksize = usize::from(blksize.max(1));
        let max_ahead = (READ_AHEAD / blksize).max(1) * blksize;
        let first_ahead = (usize::from(window.max(1)) * blksize).min(max_ahead);
        BlockReader {
            content,
            blksize,
            cache_start: 0,
            cache: Vec::new(),
            first_ahead,
            ahead: first_ahead,
            max_ahead,
        }
    }

    /// The block size.
    pub fn blksize(&self) -> usize {
        self.blksize
    }

    /// Bytes of file data held in memory (the read-ahead buffer's capacity).
    pub fn buffered(&self) -> usize {
        self.cache.capacity()
    }

    /// Frees the read-ahead buffer and starts the read ahead again from one window: for a
    /// transfer whose client went quiet (the next read comes from the page cache).
    pub fn release(&mut self) {
        self.cache = Vec::new();
        self.cache_start = 0;
        self.ahead = self.first_ahead;
    }

    /// The payload of block `n` (may be empty for the final block).
    pub fn block(&mut self, n: u64) -> io::Result<&[u8]> {
        let (bytes, _) = self.run(n, n)?;
        Ok(bytes)
    }

    /// The payloads of blocks `first..=last`, or of as many of them from `first` on as are in
    /// memory (at least one), back to back: returns the bytes and the number of blocks in them.
    /// Block `first + i` is `bytes[i * blksize..]`, cut at `blksize` or at the end.
    pub fn run(&mut self, first: u64, last: u64) -> io::Result<(&[u8], u64)> {
        let len = self.content.len();
        let bs = self.blksize as u64;
        let first = first.max(1);
        // The final block is the short (possibly empty) one.
        let last = last.min(len / bs + 1).max(first);
        let start = (first - 1).saturating_mul(bs);
        if start > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("block {first} is past the end of a {len}-byte file"),
            ));
        }
        let end_wanted = last.saturating_mul(bs).min(len);
        let file = match &self.content.repr {
            Repr::Bytes(b) => {
                return Ok((&b[start as usize..end_wanted as usize], last - first + 1));
            }
            Repr::File { file, .. } => Arc::clone(file),
        };
        // As much of the run as one buffer can hold: served from one buffer, so a window
        // leaves as one send even where it straddles the end of the previous read.
        let want_end = end_wanted.min(start + self.max_ahead as u64);
        let cache_end = self.cache_start + self.cache.len() as u64;
        let cached = start >= self.cache_start && want_end <= cache_end;
        if !cached {
            // Reading on from the last read: the client keeps up, read further ahead.
            if !self.cache.is_empty() && start >= self.cache_start {
                self.ahead = (self.ahead * 2).min(self.max_ahead);
            }
            let to_read =
                (len - start).min(self.ahead.max((want_end - start) as usize) as u64) as usize;
            // Exactly what is read, never the doubling of `Vec`'s growth.
            self.cache.clear();
            self.cache.reserve_exact(to_read);
            self.cache.resize(to_read, 0);
            if let Err(e) = file.read_exact_at(&mut self.cache, start) {
                self.cache.clear();
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "file shrank during the transfer")
                } else {
                    e
                });
            }
            self.cache_start = start;
        }
        let avail_end = self.cache_start + self.cache.len() as u64;
        let (end, count) = if avail_end >= end_wanted {
            (end_wanted, last - first + 1)
        } else {
            // Whole blocks only: the cache starts on a block boundary.
            let upto = avail_end / bs;
            (upto * bs, upto - first + 1)
        };
        let off = (start - self.cache_start) as usize;
        let n = (end - start) as usize;
        Ok((&self.cache[off..off + n], count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn netascii_translates_line_ends() {
        let c = Content::from_bytes(&b"a\nb\rc"[..]);
        let n = c.to_netascii().unwrap();
        assert_eq!(n.read_all().unwrap(), b"a\r\nb\r\0c");
        assert_eq!(n.len(), 7);
    }

    #[test]
    fn blocks_of_a_file_match_its_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let c = Content::from_file(f).unwrap();
        assert_eq!(c.len(), data.len() as u64);
        let mut r = BlockReader::new(c, 1000);
        // Forward, then backwards (a go-back retransmission), then the short last block.
        for n in [1u64, 2, 300, 299, 1, 700] {
            let got = r.block(n).unwrap().to_vec();
            let s = (n as usize - 1) * 1000;
            assert_eq!(got, &data[s..(s + 1000).min(data.len())], "block {n}");
        }
        assert_eq!(r.block(701).unwrap(), b"");
        assert!(r.block(702).is_err());
    }

    #[test]
    fn runs_of_blocks_stop_at_the_cache_end() {
        let mut f = tempfile::tempfile().unwrap();
        // 3.5 read-aheads of 1000-byte blocks: runs must end on whole blocks, then continue.
        let len = READ_AHEAD / 1000 * 1000 * 3 + 500;
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let mut r = BlockReader::with_window(Content::from_file(f).unwrap(), 1000, 4);
        let last = (len / 1000 + 1) as u64;
        let mut next = 1u64;
        let mut got = Vec::new();
        while next <= last {
            let (bytes, count) = r.run(next, last).unwrap();
            assert!(count >= 1);
            got.extend_from_slice(bytes);
            next += count;
        }
        assert_eq!(got, data);
        // A window inside one read ahead is served whole; a window past the end stops at the
        // final (short) block.
        let (bytes, count) = r.run(3, 6).unwrap();
        assert_eq!((bytes, count), (&data[2000..6000], 4));
        let (bytes, count) = r.run(last, last + 3).unwrap();
        assert_eq!((bytes.len(), count), (500, 1));
    }

    #[test]
    fn memory_starts_at_one_window_and_stays_within_the_read_ahead() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        let c = Content::from_file(f).unwrap();
        // Window 1 at 1468: the first read is one block, then it doubles up to 44 blocks.
        let mut r = BlockReader::with_window(c.clone(), 1468, 1);
        assert_eq!(r.buffered(), 0, "nothing is read before the first send");
        r.block(1).unwrap();
        assert_eq!(r.buffered(), 1468);
        let mut sizes = Vec::new();
        for n in 2..=200 {
            r.block(n).unwrap();
            if sizes.last() != Some(&r.buffered()) {
                sizes.push(r.buffered());
            }
        }
        assert_eq!(
            sizes,
            [2, 4, 8, 16, 32, 44].map(|b| b * 1468),
            "doubling, capped at READ_AHEAD in whole blocks"
        );
        // Released while the client is quiet: nothing held, and the next read is a window again.
        r.release();
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.run(201, 201).unwrap().1, 1);
        assert_eq!(r.buffered(), 1468);
        // A window larger than the read ahead is served in runs; memory stays within it.
        let mut r = BlockReader::with_window(c.clone(), 1468, 64);
        let (_, count) = r.run(1, 64).unwrap();
        assert_eq!(count, 44);
        assert_eq!(r.buffered(), 44 * 1468);
        // Windows of 16 are served whole, also where one straddles the end of a read.
        let mut r = BlockReader::with_window(c.clone(), 1468, 16);
        for w in 0..100u64 {
            assert_eq!(r.run(w * 16 + 1, w * 16 + 16).unwrap().1, 16, "window {w}");
            assert!(r.buffered() <= 44 * 1468);
        }
        // The largest block size: one block at a time, never more than one block held.
        let mut r = BlockReader::with_window(c, 65464, 64);
        for n in 1..=10 {
            assert_eq!(r.run(n, n + 63).unwrap().1, 1);
            assert_eq!(r.buffered(), 65464);
        }
    }

    #[test]
    fn blocks_of_bytes_and_empty_final_block() {
        let mut r = BlockReader::new(Content::from_bytes(vec![1u8; 1024]), 512);
        assert_eq!(r.block(1).unwrap().len(), 512);
        assert_eq!(r.block(2).unwrap().len(), 512);
        assert_eq!(r.block(3).unwrap().len(), 0);
        assert_eq!(r.run(1, 3).unwrap().1, 3);
    }

    #[test]
    fn directories_are_not_content() {
        let d = tempfile::tempdir().unwrap();
        let f = File::open(d.path()).unwrap();
        assert!(Content::from_file(f).is_err());
    }
}
