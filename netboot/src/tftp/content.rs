//! What a read request serves: a file or bytes in memory, always with a known size.
//!
//! The size must be known up front because the `tsize` option reports it and because the
//! transfer state machine decides from it which block is the last one. File reads happen in
//! large chunks ([`BlockReader`]) on the transfer's own thread, so a slow disk never stalls the
//! runtime and a block costs no system call of its own.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes read from disk per `pread`.
const CHUNK: usize = 1024 * 1024;

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
/// Synchronous: it runs on the transfer's own thread (see [`super::sender`]), where a blocking
/// `pread` of [`CHUNK`] bytes serves hundreds of blocks, and the sender hands whole runs of
/// cached blocks to one `sendmmsg`.
#[derive(Debug)]
pub struct BlockReader {
    content: Content,
    blksize: usize,
    cache_start: u64,
    cache: Vec<u8>,
}

impl BlockReader {
    /// A reader over `content` cut into blocks of `blksize` bytes.
    pub fn new(content: Content, blksize: u16) -> BlockReader {
        BlockReader {
            content,
            blksize: usize::from(blksize.max(1)),
            cache_start: 0,
            cache: Vec::new(),
        }
    }

    /// The block size.
    pub fn blksize(&self) -> usize {
        self.blksize
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
        let first_end = (start + bs).min(len);
        let cached =
            start >= self.cache_start && first_end <= self.cache_start + self.cache.len() as u64;
        if !cached {
            let chunk = (CHUNK / self.blksize).max(1) * self.blksize;
            let to_read = (len - start).min(chunk as u64) as usize;
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
        // 3.5 chunks of 1000-byte blocks: runs must end on whole blocks, then continue.
        let len = CHUNK / 1000 * 1000 * 3 + 500;
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let mut r = BlockReader::new(Content::from_file(f).unwrap(), 1000);
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
        // A window inside one chunk is served whole; a window past the end stops at the final
        // (short) block.
        let (bytes, count) = r.run(3, 6).unwrap();
        assert_eq!((bytes, count), (&data[2000..6000], 4));
        let (bytes, count) = r.run(last, last + 3).unwrap();
        assert_eq!((bytes.len(), count), (500, 1));
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
